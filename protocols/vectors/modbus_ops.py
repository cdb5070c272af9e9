# Operations the Modbus vectors exercise (see runner.py). Bytes travel as hex strings.
from binascii import hexlify, unhexlify

from protocols import modbus, registers
from protocols.errors import ProtocolError


def _hex(data):
    return hexlify(data).decode()


def _crc(v):
    crc = modbus.crc16(unhexlify(v["data"]))
    return _hex(bytes((crc & 0xFF, crc >> 8)))  # wire order: low byte first


def _crc_ok(v):
    return modbus.crc_ok(unhexlify(v["frame"]))


def _build_read(v):
    return _hex(modbus.build_read(v["unit"], v["function"], v["address"], v["count"]))


def _build_write_single(v):
    return _hex(modbus.build_write_single(v["unit"], v["address"], v["value"]))


def _build_write_multiple(v):
    return _hex(modbus.build_write_multiple(v["unit"], v["address"], v["values"]))


def _build_exception(v):
    return _hex(modbus.build_exception(v["unit"], v["function"], v["code"]))


def _build_read_response(v):
    return _hex(modbus.build_read_response(v["unit"], v["function"], v["registers"]))


def _parse_response(v):
    result = modbus.parse_response(unhexlify(v["request"]), unhexlify(v["frame"]))
    return list(result)


def _exception_code(v):
    try:
        modbus.parse_response(unhexlify(v["request"]), unhexlify(v["frame"]))
    except ProtocolError as e:
        if e.code == "modbus_exception":
            return e.exception_code
        raise
    return None


def _parse_request(v):
    unit, function, address, count, values = modbus.parse_request(unhexlify(v["frame"]))
    return [unit, function, address, count, values]


def _expected_length(v):
    return modbus.expected_response_length(unhexlify(v["request"]))


def _frame_length(v):
    return modbus.response_frame_length(unhexlify(v["head"]))


def _timing(v):
    baud = v["baud"]
    return [modbus.char_time_us(baud), modbus.char_gap_us(baud), modbus.frame_gap_us(baud)]


def _f32_scaled(v):
    return registers.float32_words_to_scaled_int(v["hi"], v["lo"], v["scale"], v.get("max_abs", 0))


def _plan(v):
    regmap = registers.by_name(v["map"])
    return [list(block) for block in regmap.plan(v["names"], v.get("max_regs", 0))]


def _scaled(v):
    regmap = registers.by_name(v["map"])
    return regmap.scaled(v["name"], tuple(v["block"]), v["registers"], v.get("scale", 1))


def _encode(v):
    return registers.by_name(v["map"]).encode(v["name"], v["value"])


OPS = {
    "crc": _crc,
    "crc_ok": _crc_ok,
    "build_read": _build_read,
    "build_write_single": _build_write_single,
    "build_write_multiple": _build_write_multiple,
    "build_exception": _build_exception,
    "build_read_response": _build_read_response,
    "parse_response": _parse_response,
    "exception_code": _exception_code,
    "parse_request": _parse_request,
    "expected_length": _expected_length,
    "frame_length": _frame_length,
    "timing": _timing,
    "f32_scaled": _f32_scaled,
    "plan": _plan,
    "scaled": _scaled,
    "encode": _encode,
}
