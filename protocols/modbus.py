# Modbus RTU framing: CRC-16, request builders, response and request parsers, responses and
# exception codes of the server side, RTU timing.
#
# Shared by the meter firmware's RTU master (ESP32 MicroPython), the simulator and the tests, so it
# is written in the subset both MicroPython and CPython run: no typing at run time, no f-strings,
# no struct floats, bytes and small ints only. What a master needs is protocols/rtu.py (all the
# firmware loads); this module re-exports it and adds the server side.
#
# References:
#  [APP]    MODBUS Application Protocol Specification V1.1b3: function codes 03, 04, 06, 16,
#           quantity limits (1..125 registers read, 1..123 written), exception responses
#           (function code | 0x80, one exception-code byte), exception codes 01..0B.
#  [SERIAL] MODBUS over Serial Line Specification and Implementation Guide V1.02: RTU frame
#           (address, PDU, CRC-16 low byte first), 256-byte ADU limit, unit 0 = broadcast (no reply),
#           units 1..247, t1.5 / t3.5 silent intervals, fixed 750 us / 1750 us above 19200 baud.
from protocols.rtu import (  # noqa: F401 - re-exported: this module is the whole of it
    _TABLE, MAX_ADU, MAX_READ, MAX_WRITE, READ_HOLDING, READ_INPUT, WRITE_MULTIPLE,
    WRITE_RESPONSE_LEN, WRITE_SINGLE, _check_int, _check_unit, _head, _u16,
    build_read, build_write_multiple, build_write_single, char_time_us, crc16, crc_ok,
    exception_error, frame_gap_us, frame_time_us, parse_request, parse_response,
    response_frame_length, with_crc)

BROADCAST = 0

# [APP] 7: exception codes.
ILLEGAL_FUNCTION = 0x01
ILLEGAL_ADDRESS = 0x02
ILLEGAL_VALUE = 0x03
DEVICE_FAILURE = 0x04
ACKNOWLEDGE = 0x05
DEVICE_BUSY = 0x06
GATEWAY_PATH_UNAVAILABLE = 0x0A
GATEWAY_NO_RESPONSE = 0x0B


def expected_response_length(request):
    """Length of the normal response to ``request`` (an exception response is 5 bytes), or 0 for
    a broadcast, which is never answered ([SERIAL] 2.1)."""
    unit, function, _address, count, _values = parse_request(request)
    if unit == BROADCAST:
        return 0
    if function == READ_HOLDING or function == READ_INPUT:
        return 5 + 2 * count
    return WRITE_RESPONSE_LEN


# ----------------------------------------------------------------- responses (simulator and tests)


def build_read_response(unit, function, registers):
    """Normal response to a 03/04 read."""
    _check_unit(unit, False)
    _check_int(len(registers), 1, MAX_READ, "bad_count")
    buf = bytearray((unit, function, 2 * len(registers)))
    for value in registers:
        _check_int(value, 0, 0xFFFF, "bad_value")
        _u16(buf, value)
    return with_crc(buf)


def build_write_response(unit, function, address, value_or_count):
    """Normal response to 06 (echoes the value) or 16 (echoes the quantity)."""
    _check_unit(unit, False)
    return with_crc(_head(unit, function, address, value_or_count))


def build_exception(unit, function, code):
    """Exception response: function | 0x80 and the exception code ([APP] 7)."""
    _check_unit(unit, False)
    _check_int(code, 1, 0xFF, "bad_value")
    return with_crc(bytearray((unit, (function | 0x80) & 0xFF, code)))


def char_gap_us(baud, bits_per_char=11):
    """t1.5, the longest silence allowed inside a frame: 750 us above 19200 baud."""
    if baud > 19200:
        return 750
    return (15 * bits_per_char * 1000000 + 10 * baud - 1) // (10 * baud)
