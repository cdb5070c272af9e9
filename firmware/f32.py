# IEEE 754 binary32 to a scaled integer, using integers only.
#
# ESP32 MicroPython floats are themselves 32-bit, so multiplying a float kWh register by 1000
# would round twice; here the sign, exponent and 24-bit significand are taken from the bits
# and round(value * scale) is computed exactly, ties to even (as Python's round()).
# Same contract as protocols.registers.float32_bits_to_scaled_int, which the tests compare it
# with; a copy lives here because the firmware unloads the map module after boot (regmap.py).


def scaled(bits, scale=1):
    """round(x * scale) for the float32 x with bit pattern ``bits``; ValueError on NaN/inf."""
    exp = (bits >> 23) & 0xFF
    frac = bits & 0x7FFFFF
    if exp == 0xFF:
        raise ValueError("not a finite float32")
    if exp == 0:
        exp = 1             # subnormal: no implicit leading one
    else:
        frac |= 0x800000
    num = frac * scale      # x * scale = num * 2 ** (exp - 150)
    e = exp - 150
    if e >= 0:
        out = num << e
    else:
        q, r = divmod(num, 1 << -e)
        twice = r << 1
        den = 1 << -e
        if twice > den or (twice == den and q & 1):
            q += 1
        out = q
    return -out if bits & 0x80000000 else out
