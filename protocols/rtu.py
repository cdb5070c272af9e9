# Modbus RTU framing as a master uses it: CRC-16, request builders, the response parser (and the
# request parser it checks answers against), and the t3.5 / line timing. This is all the meter
# firmware's RTU master loads; protocols/modbus.py is the whole of it (the same names plus the
# server side: responses, exception codes, t1.5), for the simulator and the tests.
#
# Written in the subset both MicroPython and CPython run: no typing at run time, no f-strings,
# no struct floats, bytes and small ints only.
#
# References:
#  [APP]    MODBUS Application Protocol Specification V1.1b3: function codes 03, 04, 06, 16,
#           quantity limits (1..125 registers read, 1..123 written), exception responses
#           (function code | 0x80, one exception-code byte), exception codes 01..0B.
#  [SERIAL] MODBUS over Serial Line Specification and Implementation Guide V1.02: RTU frame
#           (address, PDU, CRC-16 low byte first), 256-byte ADU limit, unit 0 = broadcast (no reply),
#           units 1..247, t1.5 / t3.5 silent intervals, fixed 750 us / 1750 us above 19200 baud.
from protocols import const
from protocols.errors import ProtocolError

READ_HOLDING = 3
READ_INPUT = 4
WRITE_SINGLE = 6
WRITE_MULTIPLE = 16

# [APP] 6.3, 6.4, 6.12: quantities per request.
MAX_READ = 125
MAX_WRITE = 123
# [SERIAL] 2.5.1.1: the RTU ADU is at most 256 bytes.
MAX_ADU = 256
_MAX_UNIT = const(247)

_EXCEPTION_FRAME_LEN = const(5)  # unit, fc | 0x80, code, crc lo, crc hi
WRITE_RESPONSE_LEN = 8  # unit, fc, address (2), value or quantity (2), crc (2)


def _crc_table():
    # 256 entries of the reflected polynomial 0xA001, stored as 512 bytes (low byte first): a list
    # of 256 ints would cost the ESP32 heap several kilobytes.
    table = bytearray(512)
    for i in range(256):
        crc = i
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0xA001
            else:
                crc >>= 1
        table[2 * i] = crc & 0xFF
        table[2 * i + 1] = crc >> 8
    return bytes(table)


_TABLE = _crc_table()


def crc16(data, crc=0xFFFF):
    """CRC-16/MODBUS of ``data`` (init 0xFFFF, reflected poly 0xA001). On the wire the low byte
    goes first ([SERIAL] 6.2.2)."""
    table = _TABLE
    for byte in data:
        i = ((crc ^ byte) & 0xFF) << 1
        crc = (crc >> 8) ^ (table[i] | (table[i + 1] << 8))
    return crc


def with_crc(frame):
    """``frame`` followed by its CRC, low byte first."""
    crc = crc16(frame)
    out = bytearray(frame)
    out.append(crc & 0xFF)
    out.append(crc >> 8)
    return bytes(out)


def crc_ok(frame):
    """True when the last two bytes of ``frame`` are the CRC of the rest."""
    if len(frame) < 3:
        return False
    crc = crc16(memoryview(frame)[:-2])
    return frame[-2] == (crc & 0xFF) and frame[-1] == (crc >> 8)


def _u16(buf, value):
    buf.append((value >> 8) & 0xFF)
    buf.append(value & 0xFF)


def _get16(frame, i):
    return (frame[i] << 8) | frame[i + 1]


def _check_int(value, lo, hi, code):
    # bool is an int in CPython; a register value or unit given as True is a caller bug.
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or value > hi:
        raise ProtocolError(code, str(value))


def _check_unit(unit, broadcast_ok):
    _check_int(unit, 0 if broadcast_ok else 1, _MAX_UNIT, "bad_unit")  # 0: broadcast


# ---------------------------------------------------------------------------------------- requests


def _head(unit, function, address, word):
    # Every request here starts unit, function, address, then a quantity or a value.
    buf = bytearray((unit, function))
    _u16(buf, address)
    _u16(buf, word)
    return buf


def _check_range(address, count, limit):
    _check_int(address, 0, 0xFFFF, "bad_address")
    _check_int(count, 1, limit, "bad_count")
    if address + count > 0x10000:
        raise ProtocolError("bad_address", "range past 0xFFFF")


def build_read(unit, function, address, count):
    """Read holding (03) or input (04) registers: ``count`` registers from ``address``."""
    if function != READ_HOLDING and function != READ_INPUT:
        raise ProtocolError("bad_function", str(function))
    _check_unit(unit, False)  # [SERIAL] 2.1: reads are never broadcast
    _check_range(address, count, MAX_READ)
    return with_crc(_head(unit, function, address, count))


def build_write_single(unit, address, value):
    """Write single register (06)."""
    _check_unit(unit, True)
    _check_int(address, 0, 0xFFFF, "bad_address")
    _check_int(value, 0, 0xFFFF, "bad_value")
    return with_crc(_head(unit, WRITE_SINGLE, address, value))


def build_write_multiple(unit, address, values):
    """Write multiple registers (16)."""
    _check_unit(unit, True)
    _check_range(address, len(values), MAX_WRITE)
    buf = _head(unit, WRITE_MULTIPLE, address, len(values))
    buf.append(2 * len(values))
    for value in values:
        _check_int(value, 0, 0xFFFF, "bad_value")
        _u16(buf, value)
    return with_crc(buf)


def response_frame_length(head):
    """Total length of the response frame that starts with ``head``, from as few bytes as
    possible, or 0 when more bytes are needed to tell. A master reads until this many bytes have
    arrived instead of waiting for the t3.5 silence, which a USB adapter or TCP link hides."""
    n = len(head)
    if n < 2:
        return 0
    function = head[1]
    if function & 0x80:
        return _EXCEPTION_FRAME_LEN
    if function == READ_HOLDING or function == READ_INPUT:
        return 5 + head[2] if n >= 3 else 0
    if function == WRITE_SINGLE or function == WRITE_MULTIPLE:
        return WRITE_RESPONSE_LEN
    raise ProtocolError("bad_function", str(function))


# -------------------------------------------------------------------------------- response parser


def _check_frame(frame, min_len):
    n = len(frame)
    if n < min_len:
        raise ProtocolError("short_frame", str(n))
    if n > MAX_ADU:
        raise ProtocolError("bad_length", str(n))
    if not crc_ok(frame):
        raise ProtocolError("bad_crc")


def exception_error(function, code):
    """The ProtocolError for an exception response; ``exception_code`` carries the device's code."""
    err = ProtocolError("modbus_exception", "function " + str(function) + " exception " + str(code))
    err.exception_code = code
    err.function = function
    return err


def parse_response(request, frame):
    """Check ``frame`` as the answer to ``request`` and return its content.

    Reads (03/04) give a list of register values; write single (06) gives (address, value);
    write multiple (16) gives (address, count). An exception response raises ProtocolError
    "modbus_exception" whose ``exception_code`` attribute is the device's code.
    """
    unit, function, address, count, values = parse_request(request)
    _check_frame(frame, _EXCEPTION_FRAME_LEN)
    if frame[0] != unit:
        raise ProtocolError("bad_unit", str(frame[0]))
    got = frame[1]
    if got == (function | 0x80):
        if len(frame) != _EXCEPTION_FRAME_LEN:
            raise ProtocolError("bad_length", str(len(frame)))
        raise exception_error(function, frame[2])
    if got != function:
        raise ProtocolError("bad_function", str(got))
    if function == READ_HOLDING or function == READ_INPUT:
        return _read_values(frame, count)
    if len(frame) != WRITE_RESPONSE_LEN:
        raise ProtocolError("bad_length", str(len(frame)))
    echo_address = _get16(frame, 2)
    echo = _get16(frame, 4)
    # [APP] 6.6 / 6.12: a write is confirmed by echoing address and value or quantity.
    want = values[0] if function == WRITE_SINGLE else count
    if echo_address != address or echo != want:
        raise ProtocolError("bad_echo", str(echo_address) + "/" + str(echo))
    return (echo_address, echo)


def _read_values(frame, count):
    byte_count = frame[2]
    if byte_count != 2 * count or len(frame) != 5 + byte_count:
        raise ProtocolError("bad_length", str(byte_count))
    values = [0] * count  # one allocation of the final size, not a list grown item by item
    for i in range(count):
        values[i] = _get16(frame, 3 + 2 * i)
    return values


# --------------------------------------------------------------------------------- request parser


def parse_request(frame):
    """Split a request frame into (unit, function, address, count, values).

    ``count`` is the register quantity (1 for 06); ``values`` is the list written by 06/16 and
    empty for reads. Used by the simulator's fault layer and by the master to check its own
    requests. Functions other than 03/04/06/16 raise "bad_function".
    """
    _check_frame(frame, 4)
    unit = frame[0]
    function = frame[1]
    if function == READ_HOLDING or function == READ_INPUT:
        _need_len(frame, 8)
        count = _get16(frame, 4)
        _check_range(_get16(frame, 2), count, MAX_READ)
        return (unit, function, _get16(frame, 2), count, [])
    if function == WRITE_SINGLE:
        _need_len(frame, 8)
        return (unit, function, _get16(frame, 2), 1, [_get16(frame, 4)])
    if function == WRITE_MULTIPLE:
        return _parse_write_multiple(frame)
    raise ProtocolError("bad_function", str(function))


def _need_len(frame, n):
    if len(frame) != n:
        raise ProtocolError("bad_length", str(len(frame)))


def _parse_write_multiple(frame):
    if len(frame) < 9:
        raise ProtocolError("short_frame", str(len(frame)))
    address = _get16(frame, 2)
    count = _get16(frame, 4)
    _check_range(address, count, MAX_WRITE)
    if frame[6] != 2 * count or len(frame) != 9 + 2 * count:
        raise ProtocolError("bad_length", str(frame[6]))
    values = [_get16(frame, 7 + 2 * i) for i in range(count)]
    return (frame[0], WRITE_MULTIPLE, address, count, values)


# ---------------------------------------------------------------------------------------- timing


def char_time_us(baud, bits_per_char=11):
    """Microseconds one character takes on the line, rounded up. RTU characters are 11 bits:
    start, 8 data, parity (or a second stop bit), stop ([SERIAL] 2.5.1)."""
    _check_int(baud, 1, 10000000, "bad_value")
    return (bits_per_char * 1000000 + baud - 1) // baud


def frame_gap_us(baud, bits_per_char=11):
    """t3.5, the silence that ends a frame: 3.5 character times, fixed at 1750 us above 19200
    baud ([SERIAL] 2.5.1.1)."""
    if baud > 19200:
        return 1750
    return (35 * bits_per_char * 1000000 + 10 * baud - 1) // (10 * baud)


def frame_time_us(baud, nbytes, bits_per_char=11):
    """Time ``nbytes`` take on the line plus the t3.5 gap that ends them: what a master adds to
    the device's processing time when it sets its response timeout."""
    return nbytes * char_time_us(baud, bits_per_char) + frame_gap_us(baud, bits_per_char)
