"""Generates protocols/vectors/modbus.json from independent CPython references, and checks the
file is current.

Expected bytes come from a bitwise CRC written here and from ``struct``, not from protocols/, so
the vectors check the implementation rather than restate it; block plans are worked out by hand
from the Eastron register tables. Run ``python3 -m tests.test_modbus_vectors`` after changing the
cases. tests/test_protocol_vectors.py runs the file under CPython and MicroPython.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "protocols" / "vectors" / "modbus.json"


# ------------------------------------------------------------------ independent references


def ref_crc(data: bytes) -> int:
    """CRC-16/MODBUS the slow way: reflected polynomial 0xA001, init 0xFFFF, bit by bit."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def ref_frame(body: bytes) -> bytes:
    return body + struct.pack("<H", ref_crc(body))


def ref_read(unit: int, fc: int, address: int, count: int) -> bytes:
    return ref_frame(struct.pack(">BBHH", unit, fc, address, count))


def ref_read_response(unit: int, fc: int, regs: list[int]) -> bytes:
    return ref_frame(struct.pack(f">BBB{len(regs)}H", unit, fc, 2 * len(regs), *regs))


def ref_write_multiple(unit: int, address: int, values: list[int]) -> bytes:
    n = len(values)
    return ref_frame(struct.pack(f">BBHHB{n}H", unit, 16, address, n, 2 * n, *values))


def ref_f32_words(x: float) -> tuple[int, int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return hi, lo


def ref_f32_value(hi: int, lo: int) -> float:
    return float(struct.unpack(">f", struct.pack(">HH", hi, lo))[0])


def ref_scaled(hi: int, lo: int, scale: int) -> int:
    # A float32 times a scale below 2**29 is exact in a double, so round() sees the exact product.
    return round(ref_f32_value(hi, lo) * scale)


def ref_timing(baud: int) -> list[int]:
    char = math.ceil(11e6 / baud)
    if baud > 19200:
        return [char, 750, 1750]
    return [char, math.ceil(1.5 * 11e6 / baud), math.ceil(3.5 * 11e6 / baud)]


# ----------------------------------------------------------------------------------- vectors


def vec(name: str, op: str, inp: dict[str, Any], out: Any = None, error: str | None = None) -> dict:
    v: dict[str, Any] = {"name": name, "op": op, "in": inp}
    if error is None:
        v["out"] = out
    else:
        v["error"] = error
    return v


def crc_vectors() -> list[dict]:
    out = [
        # The example of the Modbus serial-line guide family: read 10 holding registers.
        vec("crc-read-10", "crc", {"data": "01030000000a"}, "c5cd"),
        # CRC catalogue check value of CRC-16/MODBUS over "123456789" is 0x4B37.
        vec("crc-check-123456789", "crc", {"data": b"123456789".hex()}, "374b"),
        vec("crc-empty", "crc", {"data": ""}, "ffff"),
    ]
    for i, data in enumerate([bytes(range(256)), b"\x00" * 17, b"\xff" * 9, b"tmeter"]):
        out.append(vec(f"crc-ref-{i}", "crc", {"data": data.hex()},
                       struct.pack("<H", ref_crc(data)).hex()))
    good = ref_read(1, 4, 0x48, 4).hex()
    out.append(vec("crc-ok", "crc_ok", {"frame": good}, True))
    out.append(vec("crc-bad", "crc_ok", {"frame": good[:-2] + "00"}, False))
    out.append(vec("crc-too-short", "crc_ok", {"frame": "01"}, False))
    return out


def build_vectors() -> list[dict]:
    return [
        vec("read-holding-10", "build_read", {"unit": 1, "function": 3, "address": 0, "count": 10},
            ref_read(1, 3, 0, 10).hex()),
        vec("read-energy", "build_read", {"unit": 1, "function": 4, "address": 0x48, "count": 4},
            ref_read(1, 4, 0x48, 4).hex()),
        vec("read-unit-247", "build_read", {"unit": 247, "function": 4, "address": 0x156,
                                            "count": 2}, ref_read(247, 4, 0x156, 2).hex()),
        vec("read-max-125", "build_read", {"unit": 2, "function": 3, "address": 0xFF83,
                                           "count": 125}, ref_read(2, 3, 0xFF83, 125).hex()),
        vec("read-broadcast", "build_read", {"unit": 0, "function": 4, "address": 0, "count": 1},
            error="bad_unit"),
        vec("read-unit-248", "build_read", {"unit": 248, "function": 4, "address": 0, "count": 1},
            error="bad_unit"),
        vec("read-count-0", "build_read", {"unit": 1, "function": 4, "address": 0, "count": 0},
            error="bad_count"),
        vec("read-count-126", "build_read", {"unit": 1, "function": 4, "address": 0,
                                             "count": 126}, error="bad_count"),
        vec("read-fc5", "build_read", {"unit": 1, "function": 5, "address": 0, "count": 1},
            error="bad_function"),
        vec("read-past-ffff", "build_read", {"unit": 1, "function": 3, "address": 0xFFFF,
                                             "count": 2}, error="bad_address"),
        vec("read-address-neg", "build_read", {"unit": 1, "function": 3, "address": -1,
                                               "count": 2}, error="bad_address"),
        vec("write-single", "build_write_single", {"unit": 2, "address": 2, "value": 1},
            ref_frame(struct.pack(">BBHH", 2, 6, 2, 1)).hex()),
        vec("write-single-broadcast", "build_write_single", {"unit": 0, "address": 2,
                                                             "value": 0xFFFF},
            ref_frame(struct.pack(">BBHH", 0, 6, 2, 0xFFFF)).hex()),
        vec("write-single-too-big", "build_write_single", {"unit": 2, "address": 2,
                                                           "value": 0x10000}, error="bad_value"),
        # Battery setpoint -1000 W as s32, high word first.
        vec("write-setpoint", "build_write_multiple", {"unit": 2, "address": 0x10,
                                                       "values": [0xFFFF, 0xFC18]},
            ref_write_multiple(2, 0x10, [0xFFFF, 0xFC18]).hex()),
        vec("write-multiple-123", "build_write_multiple", {"unit": 2, "address": 0,
                                                           "values": list(range(123))},
            ref_write_multiple(2, 0, list(range(123))).hex()),
        vec("write-multiple-124", "build_write_multiple", {"unit": 2, "address": 0,
                                                           "values": list(range(124))},
            error="bad_count"),
        vec("write-multiple-empty", "build_write_multiple", {"unit": 2, "address": 0,
                                                             "values": []}, error="bad_count"),
        vec("write-multiple-neg", "build_write_multiple", {"unit": 2, "address": 0,
                                                           "values": [-1]}, error="bad_value"),
        vec("exception-02", "build_exception", {"unit": 1, "function": 4, "code": 2},
            ref_frame(bytes((1, 0x84, 2))).hex()),
        vec("read-response", "build_read_response", {"unit": 1, "function": 4,
                                                     "registers": [0x4479, 0xC000]},
            ref_read_response(1, 4, [0x4479, 0xC000]).hex()),
    ]


def parse_response_vectors() -> list[dict]:
    req = ref_read(1, 4, 0x48, 4).hex()
    regs = [*ref_f32_words(1234.5), *ref_f32_words(17.25)]
    good = ref_read_response(1, 4, regs).hex()
    exc = ref_frame(bytes((1, 0x84, 2))).hex()
    setp = ref_write_multiple(2, 0x10, [0xFFFF, 0xFC18]).hex()
    setp_ok = ref_frame(struct.pack(">BBHH", 2, 16, 0x10, 2)).hex()
    single = ref_frame(struct.pack(">BBHH", 2, 6, 2, 1)).hex()
    return [
        vec("resp-read", "parse_response", {"request": req, "frame": good}, regs),
        vec("resp-exception", "parse_response", {"request": req, "frame": exc},
            error="modbus_exception"),
        vec("resp-exception-code", "exception_code", {"request": req, "frame": exc}, 2),
        vec("resp-exception-06", "exception_code",
            {"request": req, "frame": ref_frame(bytes((1, 0x84, 6))).hex()}, 6),
        vec("resp-bad-crc", "parse_response", {"request": req, "frame": good[:-4] + "0000"},
            error="bad_crc"),
        vec("resp-short", "parse_response", {"request": req, "frame": "0104"},
            error="short_frame"),
        vec("resp-empty", "parse_response", {"request": req, "frame": ""}, error="short_frame"),
        vec("resp-other-unit", "parse_response",
            {"request": req, "frame": ref_read_response(2, 4, regs).hex()}, error="bad_unit"),
        vec("resp-other-function", "parse_response",
            {"request": req, "frame": ref_read_response(1, 3, regs).hex()}, error="bad_function"),
        vec("resp-short-count", "parse_response",
            {"request": req, "frame": ref_read_response(1, 4, regs[:2]).hex()},
            error="bad_length"),
        vec("resp-exception-long", "parse_response",
            {"request": req, "frame": ref_frame(bytes((1, 0x84, 2, 0))).hex()},
            error="bad_length"),
        vec("resp-oversized", "parse_response",
            {"request": req, "frame": ref_frame(bytes(300)).hex()}, error="bad_length"),
        vec("resp-write-multiple", "parse_response", {"request": setp, "frame": setp_ok},
            [0x10, 2]),
        vec("resp-write-bad-echo", "parse_response",
            {"request": setp, "frame": ref_frame(struct.pack(">BBHH", 2, 16, 0x11, 2)).hex()},
            error="bad_echo"),
        vec("resp-write-single", "parse_response", {"request": single, "frame": single}, [2, 1]),
        vec("resp-write-single-other", "parse_response",
            {"request": single, "frame": ref_frame(struct.pack(">BBHH", 2, 6, 2, 0)).hex()},
            error="bad_echo"),
        vec("resp-bad-request", "parse_response", {"request": "0104", "frame": good},
            error="short_frame"),
    ]


def parse_request_vectors() -> list[dict]:
    setp = ref_write_multiple(2, 0x10, [0xFFFF, 0xFC18])
    return [
        vec("req-read", "parse_request", {"frame": ref_read(1, 4, 0x48, 4).hex()},
            [1, 4, 0x48, 4, []]),
        vec("req-write-single", "parse_request",
            {"frame": ref_frame(struct.pack(">BBHH", 2, 6, 2, 1)).hex()}, [2, 6, 2, 1, [1]]),
        vec("req-write-multiple", "parse_request", {"frame": setp.hex()},
            [2, 16, 0x10, 2, [0xFFFF, 0xFC18]]),
        vec("req-bad-crc", "parse_request", {"frame": setp[:-1].hex() + "00"}, error="bad_crc"),
        vec("req-fc43", "parse_request", {"frame": ref_frame(bytes((1, 0x2B, 0x0E, 1, 0))).hex()},
            error="bad_function"),
        vec("req-count-0", "parse_request", {"frame": ref_read(1, 3, 0, 0).hex()},
            error="bad_count"),
        vec("req-count-126", "parse_request", {"frame": ref_read(1, 3, 0, 126).hex()},
            error="bad_count"),
        vec("req-read-long", "parse_request",
            {"frame": ref_frame(struct.pack(">BBHHB", 1, 3, 0, 1, 0)).hex()}, error="bad_length"),
        vec("req-write-bytecount", "parse_request",
            {"frame": ref_frame(struct.pack(">BBHHBH", 2, 16, 0, 2, 2, 7)).hex()},
            error="bad_length"),
        vec("req-short", "parse_request", {"frame": "0103"}, error="short_frame"),
        vec("expect-read", "expected_length", {"request": ref_read(1, 4, 0, 80).hex()}, 165),
        vec("expect-write", "expected_length", {"request": setp.hex()}, 8),
        vec("expect-broadcast", "expected_length",
            {"request": ref_write_multiple(0, 0x10, [0, 0]).hex()}, 0),
        vec("head-1", "frame_length", {"head": "01"}, 0),
        vec("head-read-2", "frame_length", {"head": "0104"}, 0),
        vec("head-read-3", "frame_length", {"head": "0104a0"}, 165),
        vec("head-exception", "frame_length", {"head": "0184"}, 5),
        vec("head-write", "frame_length", {"head": "0210"}, 8),
        vec("head-unknown", "frame_length", {"head": "0107"}, error="bad_function"),
    ]


def timing_vectors() -> list[dict]:
    return [vec(f"timing-{baud}", "timing", {"baud": baud}, ref_timing(baud))
            for baud in (1200, 2400, 9600, 19200, 38400, 115200)]


def float_vectors() -> list[dict]:
    out = []
    cases = [("999kwh", 999.0, 1000), ("tenth", 0.1, 1000), ("typical", 5123.456, 1000),
             ("half-even-down", 2.5, 1), ("half-even-up", 3.5, 1), ("neg-half", -250.5, 1),
             ("neg-power", -3456.78, 1), ("tiny", 1e-30, 1000), ("big", 3.0e9, 1000),
             ("voltage", 230.1, 10), ("zero", 0.0, 1000), ("neg-zero", -0.0, 1000),
             ("one-ulp-above-1", 1.0000001, 1000000)]
    for name, value, scale in cases:
        hi, lo = ref_f32_words(value)
        out.append(vec("f32-" + name, "f32_scaled", {"hi": hi, "lo": lo, "scale": scale},
                       ref_scaled(hi, lo, scale)))
    for name, bits in (("subnormal-min", 0x00000001), ("max", 0x7F7FFFFF),
                       ("neg-max", 0xFF7FFFFF), ("subnormal-max", 0x007FFFFF)):
        hi, lo = bits >> 16, bits & 0xFFFF
        out.append(vec("f32-" + name, "f32_scaled", {"hi": hi, "lo": lo, "scale": 1},
                       ref_scaled(hi, lo, 1)))
    for name, bits in (("nan", 0x7FC00000), ("inf", 0x7F800000), ("neg-inf", 0xFF800000),
                       ("nan-payload", 0xFF800001)):
        out.append(vec("f32-" + name, "f32_scaled", {"hi": bits >> 16, "lo": bits & 0xFFFF,
                                                      "scale": 1000}, error="bad_float"))
    hi, lo = ref_f32_words(3.0e9)
    out.append(vec("f32-over-limit", "f32_scaled",
                   {"hi": hi, "lo": lo, "scale": 1, "max_abs": 2**31 - 1}, error="out_of_range"))
    out.append(vec("f32-bad-scale", "f32_scaled", {"hi": 0, "lo": 0, "scale": 0},
                   error="bad_scale"))
    return out


def map_vectors() -> list[dict]:
    energy = [*ref_f32_words(1234.5), *ref_f32_words(17.25)]
    return [
        # Phase voltages, powers, total power, frequency and both energies are one 76-register
        # read inside the 0x0000..0x006B window; total energy at 0x0156 is a second read.
        vec("plan-sdm630-firmware", "plan",
            {"map": "sdm630", "names": ["import_energy", "export_energy", "total_power",
                                        "l1_voltage", "total_energy", "frequency"]},
            [[4, 0, 76], [4, 0x156, 2]]),
        # The Eastron 80-register limit splits 0x0000..0x004B from the demand maxima.
        vec("plan-sdm630-limit", "plan",
            {"map": "sdm630", "names": ["l1_voltage", "export_energy", "max_neutral_current_demand"]},
            [[4, 0, 0x4C], [4, 0x6A, 2]]),
        vec("plan-max-regs", "plan",
            {"map": "sdm630", "names": ["l1_voltage", "l2_voltage", "import_energy"],
             "max_regs": 10}, [[4, 0, 4], [4, 0x48, 2]]),
        # 0x00CE and 0x00E0 lie in different windows: no bridging across the undocumented gap.
        vec("plan-sdm630-windows", "plan",
            {"map": "sdm630", "names": ["avg_voltage_ll", "neutral_current", "l1_voltage_thd"]},
            [[4, 0xCE, 2], [4, 0xE0, 12]]),
        vec("plan-holding-and-input", "plan",
            {"map": "sdm120", "names": ["modbus_address", "import_energy", "baud_rate"]},
            [[3, 0x14, 10], [4, 0x48, 2]]),
        vec("plan-battery", "plan",
            {"map": "battery", "names": ["soc", "power", "setpoint", "status"]},
            [[3, 1, 0x21]]),
        vec("plan-unknown", "plan", {"map": "sdm630", "names": ["no_such"]},
            error="unknown_register"),
        vec("scaled-import-wh", "scaled",
            {"map": "sdm630", "name": "import_energy", "block": [4, 0x48, 4],
             "registers": energy, "scale": 1000}, 1234500),
        vec("scaled-export-wh", "scaled",
            {"map": "sdm630", "name": "export_energy", "block": [4, 0x48, 4],
             "registers": energy, "scale": 1000}, 17250),
        vec("scaled-not-in-block", "scaled",
            {"map": "sdm630", "name": "frequency", "block": [4, 0x48, 4], "registers": energy},
            error="not_in_block"),
        vec("scaled-setpoint-high-first", "scaled",
            {"map": "battery", "name": "setpoint", "block": [3, 0x10, 2],
             "registers": [0xFFFF, 0xFC18]}, -1000),
        vec("scaled-setpoint-low-first", "scaled",
            {"map": "battery_lowfirst", "name": "setpoint", "block": [3, 0x10, 2],
             "registers": [0xFC18, 0xFFFF]}, -1000),
        vec("scaled-soc", "scaled",
            {"map": "battery", "name": "soc", "block": [3, 0x18, 1], "registers": [5050]}, 5050),
        vec("encode-setpoint", "encode", {"map": "battery", "name": "setpoint", "value": -1000},
            [0xFFFF, 0xFC18]),
        vec("encode-setpoint-low-first", "encode",
            {"map": "battery_lowfirst", "name": "setpoint", "value": -1000}, [0xFC18, 0xFFFF]),
        vec("encode-setpoint-range", "encode",
            {"map": "battery", "name": "setpoint", "value": 2**31}, error="out_of_range"),
        vec("encode-energy", "encode", {"map": "sdm630", "name": "import_energy",
                                        "value": 1234.5}, list(ref_f32_words(1234.5))),
        vec("unknown-map", "plan", {"map": "sdm999", "names": []}, error="unknown_map"),
    ]


def build() -> dict[str, Any]:
    vectors = (crc_vectors() + build_vectors() + parse_response_vectors()
               + parse_request_vectors() + timing_vectors() + float_vectors() + map_vectors())
    return {"ops": "modbus_ops", "vectors": vectors}


def render() -> str:
    return json.dumps(build(), indent=1, sort_keys=True) + "\n"


def test_vector_file_is_current() -> None:
    assert OUT.read_text() == render(), "run: python3 -m tests.test_modbus_vectors"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT} ({len(build()['vectors'])} vectors)")
