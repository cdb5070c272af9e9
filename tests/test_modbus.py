"""protocols.modbus and protocols.registers against independent references and arbitrary input."""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable
from itertools import combinations
from subprocess import CompletedProcess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.framer.rtu import FramerRTU

from protocols import modbus, registers
from protocols.errors import ProtocolError
from tests.test_modbus_vectors import ref_crc, ref_f32_value, ref_read, ref_scaled

units = st.integers(1, 247)
addresses = st.integers(0, 0xFFFF)
words = st.integers(0, 0xFFFF)


def test_known_crc_values() -> None:
    assert modbus.crc16(bytes.fromhex("01030000000a")) == 0xCDC5  # on the wire: C5 CD
    assert modbus.crc16(b"123456789") == 0x4B37  # CRC-16/MODBUS catalogue check value
    assert modbus.build_read(1, 3, 0, 10).hex() == "01030000000ac5cd"


def test_crc_table_is_512_bytes() -> None:
    # The firmware keeps the table as bytes: 512 bytes, not 256 boxed ints.
    assert isinstance(modbus._TABLE, bytes) and len(modbus._TABLE) == 512


def test_crc_matches_references_on_random_input() -> None:
    rng = random.Random(1)
    for _ in range(2000):
        data = rng.randbytes(rng.randrange(0, 300))
        crc = modbus.crc16(data)
        assert crc == ref_crc(data)
        # pymodbus returns the CRC byte-swapped (wire order as a big-endian number).
        assert FramerRTU.compute_CRC(data) == ((crc & 0xFF) << 8) | (crc >> 8)


@given(st.binary(min_size=1, max_size=300))
def test_crc_ok_accepts_exactly_framed_data(data: bytes) -> None:
    framed = modbus.with_crc(data)
    assert modbus.crc_ok(framed)
    assert framed[:-2] == data
    broken = bytearray(framed)
    broken[-1] ^= 0x01
    assert not modbus.crc_ok(bytes(broken))


@given(units, st.sampled_from([3, 4]), st.integers(0, 0xFF00), st.integers(1, 125))
def test_read_round_trip(unit: int, fc: int, address: int, count: int) -> None:
    request = modbus.build_read(unit, fc, address, count)
    assert request == ref_read(unit, fc, address, count)
    assert modbus.parse_request(request) == (unit, fc, address, count, [])
    regs = [(address + i) & 0xFFFF for i in range(count)]
    response = modbus.build_read_response(unit, fc, regs)
    assert len(response) == modbus.expected_response_length(request)
    assert modbus.response_frame_length(response[:3]) == len(response)
    assert modbus.parse_response(request, response) == regs


@given(units, st.integers(0, 0xFF00), st.lists(words, min_size=1, max_size=123))
def test_write_multiple_round_trip(unit: int, address: int, values: list[int]) -> None:
    request = modbus.build_write_multiple(unit, address, values)
    assert modbus.parse_request(request) == (unit, 16, address, len(values), values)
    response = modbus.build_write_response(unit, 16, address, len(values))
    assert modbus.parse_response(request, response) == (address, len(values))


@given(units, addresses, words)
def test_write_single_round_trip(unit: int, address: int, value: int) -> None:
    request = modbus.build_write_single(unit, address, value)
    assert modbus.parse_request(request) == (unit, 6, address, 1, [value])
    assert modbus.parse_response(request, request) == (address, value)  # 06 echoes the request


@given(units, st.sampled_from([3, 4, 6, 16]), st.integers(1, 255))
def test_exception_response_carries_code(unit: int, fc: int, code: int) -> None:
    request = (modbus.build_read(unit, fc, 0, 2) if fc in (3, 4)
               else modbus.build_write_multiple(unit, 0, [1]) if fc == 16
               else modbus.build_write_single(unit, 0, 1))
    frame = modbus.build_exception(unit, fc, code)
    assert modbus.response_frame_length(frame[:2]) == len(frame) == 5
    with pytest.raises(ProtocolError) as info:
        modbus.parse_response(request, frame)
    assert info.value.code == "modbus_exception"
    assert info.value.exception_code == code


def _only_protocol_errors(fn: Callable[[], object]) -> None:
    try:
        fn()
    except ProtocolError as e:
        assert isinstance(e.code, str) and e.code


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_parsers_raise_only_protocol_error(data: bytes) -> None:
    request = modbus.build_read(1, 4, 0, 4)
    _only_protocol_errors(lambda: modbus.parse_request(data))
    _only_protocol_errors(lambda: modbus.parse_response(request, data))
    _only_protocol_errors(lambda: modbus.parse_response(data, data))
    _only_protocol_errors(lambda: modbus.response_frame_length(data))
    _only_protocol_errors(lambda: modbus.expected_response_length(data))


@settings(max_examples=300)
@given(st.binary(min_size=3, max_size=40), st.data())
def test_parsers_on_mutated_valid_frames(payload: bytes, data: st.DataObject) -> None:
    # Valid CRC, arbitrary content: exercises the checks behind the CRC.
    frame = modbus.with_crc(payload)
    request = modbus.build_read(min(max(payload[0], 1), 247), 3, 0, 2)
    _only_protocol_errors(lambda: modbus.parse_request(frame))
    _only_protocol_errors(lambda: modbus.parse_response(request, frame))
    cut = data.draw(st.integers(0, len(frame)))
    _only_protocol_errors(lambda: modbus.parse_response(request, frame[:cut]))


@given(st.floats(width=32, allow_nan=False, allow_infinity=False),
       st.sampled_from([1, 10, 100, 1000, 3600, 1000000]))
def test_float32_to_scaled_int_matches_struct(value: float, scale: int) -> None:
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    assert registers.float32_words_to_scaled_int(hi, lo, scale) == round(value * scale)


@given(st.integers(0, 0xFFFFFFFF))
def test_float32_bits_cover_every_pattern(bits: int) -> None:
    hi, lo = bits >> 16, bits & 0xFFFF
    value = ref_f32_value(hi, lo)
    if value != value or value in (float("inf"), float("-inf")):
        with pytest.raises(ProtocolError) as info:
            registers.float32_bits_to_scaled_int(bits, 1000)
        assert info.value.code == "bad_float"
    else:
        assert registers.float32_bits_to_scaled_int(bits, 1000) == ref_scaled(hi, lo, 1000)


@given(st.sampled_from([registers.U16, registers.S16, registers.U32, registers.S32]), st.data())
def test_int_encode_decode_round_trip(dtype: str, data: st.DataObject) -> None:
    lo, hi = registers._int_range(dtype)
    value = data.draw(st.integers(lo, hi))
    for order in (registers.HIGH_FIRST, registers.LOW_FIRST):
        regs = registers.encode_value(dtype, value, order)
        high_first = regs if order == registers.HIGH_FIRST or len(regs) == 1 else regs[::-1]
        assert registers.scaled_value(dtype, high_first) == value


def _min_blocks(regmap: registers.RegisterMap, fc: int, spans: list[tuple[int, int]],
                limit: int) -> int:
    """Reference: fewest blocks covering ``spans`` in order, by dynamic programming."""
    spans = sorted(set(spans))
    best = [0] + [10**9] * len(spans)
    for j in range(1, len(spans) + 1):
        for i in range(j):
            start, end = spans[i][0], max(b for _, b in spans[i:j])
            contiguous = all(spans[k + 1][0] <= max(b for _, b in spans[i:k + 1])
                             for k in range(i, j - 1))
            ok = end - start <= limit and (contiguous or regmap.readable(fc, start, end - start))
            if ok:
                best[j] = min(best[j], best[i] + 1)
    return best[-1]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["sdm630", "sdm120", "battery"]), st.data(),
       st.sampled_from([0, 4, 10, 40]))
def test_plan_is_minimal_and_covers(map_name: str, data: st.DataObject, max_regs: int) -> None:
    regmap = registers.by_name(map_name)
    names = [e[0] for e in regmap.inputs + regmap.holdings if "r" in e[registers.ACCESS]]
    wanted = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=12, unique=True))
    blocks = regmap.plan(wanted, max_regs)
    limit = min(max_regs or regmap.max_read, regmap.max_read)
    for fc, start, count in blocks:
        assert count <= limit
        assert regmap.readable(fc, start, count) or all(
            any(e[1] <= a < e[1] + registers.width(e[2]) for e in regmap.table(fc))
            for a in range(start, start + count))
    for name in wanted:
        fc, entry = regmap.find(name)
        n = registers.width(entry[registers.TYPE])
        assert sum(1 for b in blocks if b[0] == fc and b[1] <= entry[1]
                   and entry[1] + n <= b[1] + b[2]) == 1
    for fc in (3, 4):
        spans = [(regmap.find(n)[1][1], regmap.find(n)[1][1] + registers.width(regmap.find(n)[1][2]))
                 for n in wanted if regmap.find(n)[0] == fc]
        if spans:
            assert sum(1 for b in blocks if b[0] == fc) == _min_blocks(regmap, fc, spans, limit)


def test_maps_have_no_overlapping_registers() -> None:
    for name in ("sdm630", "sdm120", "battery"):
        regmap = registers.by_name(name)
        for table in (regmap.inputs, regmap.holdings):
            for a, b in combinations(table, 2):
                assert a[0] != b[0]
                assert (a[1] + registers.width(a[2]) <= b[1]
                        or b[1] + registers.width(b[2]) <= a[1]), (name, a, b)
            for entry in table:
                fc = 4 if table is regmap.inputs else 3
                assert regmap.readable(fc, entry[1], registers.width(entry[2])), (name, entry)


def test_eastron_addresses_from_the_vendor_tables() -> None:
    m = registers.sdm630()
    expected = {"l1_voltage": 0x0000, "l1_current": 0x0006, "l1_power": 0x000C,
                "total_power": 0x0034, "frequency": 0x0046, "import_energy": 0x0048,
                "export_energy": 0x004A, "total_energy": 0x0156}
    for name, address in expected.items():
        assert m.find(name) == (4, m.find(name)[1]) and m.find(name)[1][1] == address
    assert m.find("modbus_address")[1][1] == 0x0014 and m.find("baud_rate")[1][1] == 0x001C
    assert registers.sdm120().find("total_power")[1][1] == 0x000C


def test_word_order_is_per_map() -> None:
    hi_first = registers.battery()
    lo_first = registers.battery(registers.LOW_FIRST)
    assert hi_first.encode("setpoint", -2) == [0xFFFF, 0xFFFE]
    assert lo_first.encode("setpoint", -2) == [0xFFFE, 0xFFFF]
    block = (3, 0x10, 2)
    assert lo_first.scaled("setpoint", block, [0xFFFE, 0xFFFF]) == -2
    assert hi_first.scaled("setpoint", block, [0xFFFF, 0xFFFE]) == -2


@pytest.mark.micropython
def test_float_conversion_agrees_in_micropython(
        micropython: Callable[..., CompletedProcess[str]]) -> None:
    rng = random.Random(7)
    cases = [(rng.getrandbits(32), rng.choice([1, 1000, 3600])) for _ in range(400)]
    cases = [(b, s) for b, s in cases if (b >> 23) & 0xFF != 0xFF]
    code = ("import json\nfrom protocols import registers as r\n"
            f"cases = {cases!r}\n"
            "print(json.dumps([r.float32_bits_to_scaled_int(b, s) for b, s in cases]))\n")
    got = json.loads(micropython(code).stdout.strip().splitlines()[-1])
    assert got == [ref_scaled(b >> 16, b & 0xFFFF, s) for b, s in cases]
