# The small core of the register maps: value types, word order, integer conversion of register
# values, and the battery map's mode values.
#
# This is all a meter needs at run time (a few values per device, cut out of block reads), so
# the firmware imports this module only; protocols/registers.py adds the tables of every
# quantity and the block planner, which a board loads at most once, at boot. Runs on MicroPython
# and CPython. The integer paths never touch a float: ESP32 MicroPython floats are 32-bit and
# must not enter energy accounting, so float32 registers are converted on their IEEE-754 bits.
from protocols.errors import ProtocolError

# Value types. 32-bit types take two registers; word order is a property of the device.
F32 = "f32"
U16 = "u16"
S16 = "s16"
U32 = "u32"
S32 = "s32"

HIGH_FIRST = "high_first"  # register n holds bits 31..16 (Eastron, and our battery map)
LOW_FIRST = "low_first"  # register n holds bits 15..0 (many inverters and PLCs)

# tmeter battery inverter map v1, register "mode".
BATTERY_MODE_SETPOINT = 0  # follow the setpoint register
BATTERY_MODE_SELF_CONSUMPTION = 1  # hold the household's grid exchange at zero within limits
BATTERY_MODE_GRID_TARGET = 2  # hold it at register "grid_setpoint" within limits


def width(dtype):
    """Registers a value of ``dtype`` occupies."""
    if dtype == U16 or dtype == S16:
        return 1
    if dtype == F32 or dtype == U32 or dtype == S32:
        return 2
    raise ProtocolError("bad_type", str(dtype))


def float32_bits_to_scaled_int(bits, scale=1, max_abs=0):
    """round(value * scale) of the IEEE-754 single with bit pattern ``bits``, in integers only.

    Ties round to even, like Python's round(). NaN and infinities raise "bad_float"; with
    ``max_abs`` > 0 a result whose magnitude exceeds it raises "out_of_range".
    """
    if not isinstance(scale, int) or scale < 1:
        raise ProtocolError("bad_scale", str(scale))
    bits &= 0xFFFFFFFF
    exponent = (bits >> 23) & 0xFF
    mantissa = bits & 0x7FFFFF
    if exponent == 0xFF:
        raise ProtocolError("bad_float", "nan" if mantissa else "inf")
    if exponent:
        mantissa |= 0x800000
        shift = exponent - 150  # value = mantissa * 2**(exponent - 127 - 23)
    else:
        shift = -149  # subnormal: mantissa * 2**-149
    num = mantissa * scale
    if shift >= 0:
        result = num << shift
    else:  # num / 2**-shift, rounded half to even
        result = num >> -shift
        rest = num - (result << -shift)
        half = 1 << (-shift - 1)
        if rest > half or (rest == half and (result & 1)):
            result += 1
    if bits >> 31:
        result = -result
    if max_abs and (result > max_abs or result < -max_abs):
        raise ProtocolError("out_of_range", str(result))
    return result


def float32_words_to_scaled_int(hi, lo, scale=1, max_abs=0):
    """round(value * scale) of the float32 whose high word is ``hi`` and low word ``lo``;
    e.g. scale 1000 turns an Eastron kWh register pair into integer Wh."""
    return float32_bits_to_scaled_int(((hi & 0xFFFF) << 16) | (lo & 0xFFFF), scale, max_abs)


def words_to_int(hi, lo, signed):
    """The 32-bit integer whose high word is ``hi`` and low word ``lo``."""
    value = ((hi & 0xFFFF) << 16) | (lo & 0xFFFF)
    if signed and value & 0x80000000:
        value -= 0x100000000
    return value


def word_to_int(word, signed):
    word &= 0xFFFF
    if signed and word & 0x8000:
        word -= 0x10000
    return word


def int_to_words(value, dtype):
    """Registers (high word first) holding ``value`` as ``dtype``; range-checked."""
    lo_limit, hi_limit = _int_range(dtype)
    if not isinstance(value, int) or value < lo_limit or value > hi_limit:
        raise ProtocolError("out_of_range", str(value))
    if width(dtype) == 1:
        return [value & 0xFFFF]
    value &= 0xFFFFFFFF
    return [value >> 16, value & 0xFFFF]


def _int_range(dtype):
    if dtype == U16:
        return 0, 0xFFFF
    if dtype == S16:
        return -0x8000, 0x7FFF
    if dtype == U32:
        return 0, 0xFFFFFFFF
    if dtype == S32:
        return -0x80000000, 0x7FFFFFFF
    raise ProtocolError("bad_type", str(dtype))


def ordered(words, word_order):
    """A value's registers given high word first, as a device with ``word_order`` stores them
    (the same swap turns a device's pair back into high word first)."""
    if len(words) == 2 and word_order == LOW_FIRST:
        return [words[1], words[0]]
    return words


def _scaled(dtype, hi, lo, scale, max_abs):
    # hi, lo: the value's words, high first (lo unused by 16-bit types).
    if dtype == F32:
        return float32_words_to_scaled_int(hi, lo, scale, max_abs)
    if not isinstance(scale, int) or scale < 1:
        raise ProtocolError("bad_scale", str(scale))
    if width(dtype) == 1:
        value = word_to_int(hi, dtype == S16)
    else:
        value = words_to_int(hi, lo, dtype == S32)
    value *= scale
    if max_abs and (value > max_abs or value < -max_abs):
        raise ProtocolError("out_of_range", str(value))
    return value


def value_at(registers, offset, dtype, word_order=HIGH_FIRST, scale=1, max_abs=0):
    """Integer round(value * scale) of the ``dtype`` value whose first register is
    ``registers[offset]``, stored in ``word_order``: how a block read's result is decoded."""
    if width(dtype) == 1:
        return _scaled(dtype, registers[offset], 0, scale, max_abs)
    first = registers[offset]
    second = registers[offset + 1]
    if word_order == LOW_FIRST:
        return _scaled(dtype, second, first, scale, max_abs)
    return _scaled(dtype, first, second, scale, max_abs)
