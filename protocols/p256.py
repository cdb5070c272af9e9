# ECDSA over NIST P-256 (secp256r1; FIPS 186-5 §6, SEC 1 v2 §4.1) with SHA-256 and the
# deterministic nonces of RFC 6979 §3.2: the device signature core of issue 15.
#
# Why this scheme: OCMF signs meter values with ECDSA secp256r1/SHA-256, so an export can be
# checked with the tools auditors already have (openssl, the S.A.F.E. Transparenzsoftware); the
# ESP32's hashlib has hardware SHA-256 but no SHA-512 (Ed25519 would need a SHA-512 written in
# Python); RFC 6979 needs only HMAC-SHA256, which protocols/auth.py has for both runtimes, so a
# signature needs no random number at signing time (a weak RNG cannot leak the key).
#
# Pure integers, no floats: runs unchanged on MicroPython and CPython. Keys are ints d in
# [1, n-1]; public keys are 65-byte uncompressed SEC1 points 0x04||X||Y (SEC 1 §2.3.3); hashes
# are 32-byte SHA-256 digests; signatures are 64 bytes r||s (big-endian, as OCMF and JOSE).
#
# s is left as RFC 6979 computes it, high or low: ECDSA (FIPS 186-5 §6.4.2) accepts both and
# the RFC's vectors have a high s. So (r, n-s) also verifies: a signature is not an identifier.
#
# Arithmetic: Jacobian coordinates (X/Z^2, Y/Z^3), one field inversion per signature and one
# mod n, both by Fermat (x^(m-2)) in steps. Scalar multiplication uses a fixed window of 4
# bits: 14 additions for the table of 1G..15G, then 64 windows of 4 doublings and one
# addition, against 256 of each for a ladder (a third less work; the table costs 15 points of
# heap, about 2 KB on a 32-bit board). The operation sequence depends on the scalar
# only where a window is 0 (its addition is skipped), and big-int arithmetic is not constant
# time anyway: a meter's attacker is the gateway or a member on the wire, who sees signatures,
# not timings at the microsecond; the heap matters more here, and the nonce is deterministic, so
# signing one reading twice repeats the same computation. Points are lists updated in place, so
# a step allocates only its big-int temporaries (MicroPython ints are immutable).
#
# Errors: public_key, sign, sign_steps and keypair raise ValueError("p256: ...") for a private
# key out of [1, n-1], a hash that is not 32 bytes, entropy under 32 bytes or one repeated byte.
# verify raises ValueError only for a hash that is not 32 bytes (the caller computed it) and
# answers False for anything wrong in what came over the wire: a key of the wrong length or
# prefix, a point off the curve or with a coordinate >= p, a signature of the wrong length,
# r or s = 0 or >= n.
import hashlib

from protocols import const
from protocols.auth import hmac_sha256 as _hm

# The curve y^2 = x^3 - 3x + b over GF(p), base point G of prime order n (FIPS 186-5 / SP 800-186
# §3.2.1.3; cofactor 1, so every point on the curve but infinity generates the group).
_P = const(0xffffffff00000001000000000000000000000000ffffffffffffffffffffffff)
_N = const(0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551)
_B = const(0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b)
_GX = const(0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296)
_GY = const(0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5)


def _dbl(a):
    # a = 2a in place; dbl-2001-b (Bernstein-Lange EFD, a = -3). The group has odd prime order,
    # so a finite point has y != 0 and its double is finite; infinity (Z = 0) stays infinity.
    p = _P
    x, y, z = a
    d = z * z % p
    g = y * y % p
    b = x * g % p
    t = 3 * (x - d) * (x + d) % p
    x = (t * t - 8 * b) % p
    a[0] = x
    a[1] = (t * (4 * b - x) - 8 * g * g) % p
    a[2] = 2 * y * z % p


def _add(a, c):
    # a = a + c in place; add-1998-cmo-2 (EFD), with the cases it leaves out: either input at
    # infinity, a = c (double), a = -c (infinity).
    p = _P
    x, y, z = a
    u, v, w = c
    if not w:
        return
    if not z:
        a[0], a[1], a[2] = u, v, w
        return
    zz = z * z % p
    ww = w * w % p
    x = x * ww % p
    y = y * ww * w % p
    h = (u * zz - x) % p
    r = (v * zz * z - y) % p
    if not h:
        if r:
            a[2] = 0
        else:
            _dbl(a)
        return
    hh = h * h % p
    hhh = h * hh % p
    x = x * hh
    u = (r * r - hhh - 2 * x) % p
    a[0] = u
    a[1] = (r * (x - u) - y * hhh) % p
    a[2] = z * w * h % p


def _mul(k, x, y):
    # k * (x, y) as a Jacobian list: a generator that yields after every point operation and
    # returns the result (`q = yield from _mul(...)`). k in [0, 2^256).
    t = [None, [x, y, 1]]
    for i in range(14):
        q = list(t[-1])
        _add(q, t[1])
        t.append(q)
        yield
    q = [1, 1, 0]
    for i in range(252, -4, -4):
        if q[2]:
            for j in range(4):
                _dbl(q)
                yield
        i = (k >> i) & 15
        if i:
            _add(q, t[i])
            yield
    return q


def _inv(x, m):
    # x^(m-2) mod m = 1/x (Fermat, m prime) in 16 steps of 16 exponent bits, two C pows each:
    # one pow over the whole exponent was the longest pause of a signature (0.6 ms of 7 on the
    # unix port, 6 times any other step); the steps cost about twice its work, and 16 bits
    # a step cost what 32 do in half the pause.
    e = m - 2
    a = 1
    for i in range(240, -16, -16):
        a = pow(a, 1 << 16, m) * pow(x, (e >> i) & 0xffff, m) % m
        yield
    return a


def _run(g):
    # Runs a step generator to its end and returns its value.
    try:
        while True:
            next(g)
    except StopIteration as e:
        return e.value


def _aff(q):
    # Affine (x, y) of a finite Jacobian point: the one field inversion.
    p = _P
    z = pow(q[2], p - 2, p)
    w = z * z % p
    return q[0] * w % p, q[1] * w * z % p


def _be(i):
    return i.to_bytes(32, "big")


def _int(b):
    return int.from_bytes(b, "big")


def _ck(d, h):
    if not isinstance(d, int) or not 0 < d < _N:
        raise ValueError("p256: private key must be an int in [1, n-1]")
    if h is not None and len(h) != 32:
        raise ValueError("p256: hash must be 32 bytes (SHA-256), got %d" % len(h))


def public_key(d):
    """The 65-byte uncompressed SEC1 public key 0x04||X||Y of private key ``d``."""
    _ck(d, None)
    x, y = _aff(_run(_mul(d, _GX, _GY)))
    return b"\x04" + _be(x) + _be(y)


def sign_steps(d, h):
    """ECDSA signature of the 32-byte hash ``h`` under ``d``, in steps: an iterator that yields
    None after every point operation, HMAC pair or 32 bits of an inversion (about ten field
    multiplications) and, last,
    the 64-byte signature r||s. A caller in asyncio awaits asyncio.sleep(0) after each None.
    Raises ValueError at the call, before any step, for a bad ``d`` or ``h``."""
    _ck(d, h)
    return _steps(d, h)


def _steps(d, h):
    # RFC 6979 §3.2 with qlen = hlen = 256: bits2int(h) = int(h), and one HMAC output per
    # candidate nonce (step h: T = V); bits2octets(h) = int2octets(int(h) mod n).
    n = _N
    e = _int(h)
    x = _be(d) + _be(e % n)
    v = b"\x01" * 32
    k = _hm(b"\x00" * 32, v + b"\x00" + x)
    v = _hm(k, v)
    yield
    k = _hm(k, v + b"\x01" + x)
    v = _hm(k, v)
    yield
    while True:
        v = _hm(k, v)
        c = _int(v)
        if 0 < c < n:
            q = yield from _mul(c, _GX, _GY)
            z = yield from _inv(q[2], _P)
            r = q[0] * z * z % _P % n
            s = yield from _inv(c, n)
            s = s * (e + r * d) % n
            if r and s:
                yield _be(r) + _be(s)
                return
        # RFC 6979 §3.2 h.3 (and §3.4 for r or s = 0): next candidate.
        k = _hm(k, v + b"\x00")
        v = _hm(k, v)
        yield


def sign(d, h):
    """The 64-byte ECDSA signature r||s of the 32-byte hash ``h`` under ``d`` (RFC 6979)."""
    for s in sign_steps(d, h):
        if s:
            return s


def _pt(q):
    # The affine point of a 65-byte uncompressed key, or None if it is not one on the curve
    # (SEC 1 §3.2.2.1: coordinates in [0, p-1], the curve equation; cofactor 1 does the rest).
    if len(q) != 65 or q[0] != 4:
        return None
    p = _P
    x = _int(q[1:33])
    y = _int(q[33:])
    if x >= p or y >= p or (y * y - (x * x - 3) * x - _B) % p:
        return None
    return x, y


def verify(q, h, sig):
    """True if ``sig`` (64 bytes r||s) is a valid ECDSA signature of the 32-byte hash ``h``
    under the 65-byte public key ``q`` (FIPS 186-5 §6.4.2); False for anything malformed."""
    _ck(1, h)
    n = _N
    q = _pt(q)
    if q is None or len(sig) != 64:
        return False
    r = _int(sig[:32])
    s = _int(sig[32:])
    if not (0 < r < n and 0 < s < n):
        return False
    w = pow(s, n - 2, n)
    a = _run(_mul(_int(h) * w % n, _GX, _GY))
    _add(a, _run(_mul(r * w % n, q[0], q[1])))
    return bool(a[2]) and _aff(a)[0] % n == r


def keypair(e):
    """A private key and its public key (d, 65 bytes) from >= 32 bytes of entropy ``e``.

    FIPS 186-5 A.2.1 (extra random bits): c is N + 64 or more bits, d = (c mod (n-1)) + 1, so d
    is never 0 and its bias is below 2^-64. The entropy (os.urandom on the device) is expanded
    to 512 bits with HMAC-SHA256 keyed by it, as the HMAC_DRBG of SP 800-90A does; entropy that
    is one repeated byte (a dead RNG) is refused."""
    if len(e) < 32:
        raise ValueError("p256: entropy must be at least 32 bytes, got %d" % len(e))
    e = bytes(e)
    if e == e[:1] * len(e):
        raise ValueError("p256: entropy is one repeated byte")
    d = _int(_hm(e, b"\x01") + _hm(e, b"\x02")) % (_N - 1) + 1
    return d, public_key(d)


def sha256(m):
    """SHA-256 digest of ``m``: the hash these functions take."""
    return hashlib.sha256(m).digest()
