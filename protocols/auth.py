# HMAC-SHA256 (RFC 2104) over hashlib.sha256: MicroPython has hashlib but no hmac module.
#
# On CPython the module's hmac_sha256 and equal are the C implementations (protocols/accel.py,
# never loaded on MicroPython); the pure versions stay here as hmac_sha256_py and equal_py,
# which the tests cross-check against the standard library and the vectors run on MicroPython.
import hashlib
import sys

TAG_LEN = 32
_BLOCK = 64


def hmac_sha256_py(key, msg):
    """The 32-byte HMAC-SHA256 tag of ``msg`` under ``key`` (both bytes-like)."""
    key = bytes(key)
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    pad = bytearray(_BLOCK)  # one small buffer for both pads: the key xor ipad, then xor opad
    pad[:len(key)] = key
    for i in range(_BLOCK):
        pad[i] ^= 0x36
    inner = hashlib.sha256(pad)
    inner.update(msg)
    for i in range(_BLOCK):
        pad[i] ^= 0x36 ^ 0x5C
    outer = hashlib.sha256(pad)
    outer.update(inner.digest())
    return outer.digest()


def equal_py(a, b):
    """Constant-time comparison: the time taken does not depend on where a and b differ."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


hmac_sha256 = hmac_sha256_py
equal = equal_py
if sys.implementation.name != "micropython":
    from protocols.accel import equal, hmac_sha256  # noqa: F401, F811 - same results, in C
