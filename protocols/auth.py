# HMAC-SHA256 (RFC 2104) over hashlib.sha256: MicroPython has hashlib but no hmac module.
import hashlib

TAG_LEN = 32
_BLOCK = 64


def _pad(key, byte):
    return bytes([k ^ byte for k in key])


def hmac_sha256(key, msg):
    """The 32-byte HMAC-SHA256 tag of ``msg`` under ``key`` (both bytes-like)."""
    key = bytes(key)
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + bytes(_BLOCK - len(key))
    inner = hashlib.sha256(_pad(key, 0x36))
    inner.update(msg)
    outer = hashlib.sha256(_pad(key, 0x5C))
    outer.update(inner.digest())
    return outer.digest()


def equal(a, b):
    """Constant-time comparison: the time taken does not depend on where a and b differ."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0
