"""Generates protocols/vectors/p256.json from references that are not protocols/p256.py.

The RFC 6979 A.2.5 P-256/SHA-256 vectors are copied from the RFC; every other expected
signature is `cryptography`'s deterministic ECDSA (RFC 6979, OpenSSL), every public key its
``derive_private_key``, the key pairs the FIPS 186-5 A.2.1 formula over the standard library's
``hmac``. Run ``python3 -m tests.p256_vectorgen`` after changing the cases; a test checks the
file is current.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

OUT = Path(__file__).resolve().parent.parent / "protocols" / "vectors" / "p256.json"
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF

# RFC 6979 A.2.5: the private key, its public key, and (k, r, s) for SHA-256.
RFC_D = "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721"
RFC_PUB = ("04" "60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6"
           "7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299")
RFC_SIGS = {
    "sample": ("a6e3c57dd01abe90086538398355dd4c3b17aa873382b0f24d6129493d8aad60",
               "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716",
               "f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8"),
    "test": ("d16b6ae827f17175e040871a1c7ec3500192c4c92677336ec2537acaee0008e0",
             "f1abb023518351cd71d881567b1ea663ed3efcf6c5132b354f28d3b0b7d38367",
             "019f4113742a2b14bd25926b49c649155f267e60d3814b4c0cc84250e46f0083"),
}
# A reading as the meter's canonical encoder writes it (protocols/README.md).
READING = (b'{"boot":3,"cnt_exp_wh":20345,"cnt_imp_wh":51234,"exp_wh":0,"flags":0,"imp_wh":120,'
           b'"iv":1900000,"kid":1,"meter":"m01","seq":7,"t0":1710000000,"t1":1710000900,'
           b'"type":"reading","v":1}')
MODULES = ("protocols/__init__.py", "protocols/auth.py", "protocols/p256.py")  # what p256 loads
ENTROPY = [bytes(range(32)), bytes(range(7, 71)), hashlib.sha256(b"tmeter m01").digest()]
KEY_ERR = "p256: private key must be an int in [1, n-1]"


def pub_of(d: int) -> str:
    key = ec.derive_private_key(d, ec.SECP256R1()).public_key()
    nums = key.public_numbers()
    return "04" + nums.x.to_bytes(32, "big").hex() + nums.y.to_bytes(32, "big").hex()


def sig_of(d: int, msg: bytes) -> str:
    """`cryptography`'s RFC 6979 signature of SHA-256(msg), as 64 bytes r||s in hex."""
    der = ec.derive_private_key(d, ec.SECP256R1()).sign(
        msg, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big").hex() + s.to_bytes(32, "big").hex()


def key_of(entropy: bytes) -> int:
    """FIPS 186-5 A.2.1 over 512 bits expanded from the entropy with HMAC-SHA256."""
    c = hmac.new(entropy, b"\x01", hashlib.sha256).digest()
    c += hmac.new(entropy, b"\x02", hashlib.sha256).digest()
    return int.from_bytes(c, "big") % (N - 1) + 1


def vec(name: str, op: str, given: dict[str, Any], out: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "op": op, "in": given, "out": out, **extra}


def signing() -> list[dict[str, Any]]:
    d = int(RFC_D, 16)
    out = [vec("rfc6979-public-key", "public_key", {"d": RFC_D}, RFC_PUB)]
    for msg, (k, r, s) in RFC_SIGS.items():
        assert sig_of(d, msg.encode()) == r + s  # the RFC and OpenSSL agree
        out.append(vec(f"rfc6979-{msg}", "sign", {"d": RFC_D, "msg": msg}, r + s, k=k))
        out.append(vec(f"rfc6979-{msg}-steps", "sign_steps", {"d": RFC_D, "msg": msg}, r + s))
        out.append(vec(f"rfc6979-{msg}-verify", "verify",
                       {"pub": RFC_PUB, "msg": msg, "sig": r + s}, True))
    for name, d in (("one", 1), ("n-1", N - 1), ("two", 2), ("p-range", P - N + 5)):
        dh = "%064x" % d
        out.append(vec(f"own-{name}-public-key", "public_key", {"d": dh}, pub_of(d)))
        out.append(vec(f"own-{name}-reading", "sign", {"d": dh, "msg_hex": READING.hex()},
                       sig_of(d, READING)))
    for i, e in enumerate(ENTROPY):
        d = key_of(e)
        dh = "%064x" % d
        out.append(vec(f"keypair-{i}", "keypair", {"entropy": e.hex()},
                       {"d": dh, "pub": pub_of(d)}))
        for msg in (b"", READING, bytes(range(256)) * 4):
            out.append(vec(f"keypair-{i}-sign-{len(msg)}", "sign", {"d": dh, "msg_hex": msg.hex()},
                           sig_of(d, msg)))
    return out


def refused() -> list[dict[str, Any]]:
    _k, r, s = RFC_SIGS["sample"]
    ok = {"pub": RFC_PUB, "msg": "sample"}
    x, y = int(RFC_PUB[2:66], 16), int(RFC_PUB[66:], 16)
    off = "04%064x%064x" % (x, (y + 1) % P)
    big_x = "04%064x%064x" % (x + P, y)  # x >= p: the same point mod p, not a valid encoding
    high = int(s, 16)
    cases = [
        ("verify-low-s-twin", {"sig": r + "%064x" % (N - high)}, True),  # ECDSA accepts both
        ("verify-other-message", {"msg": "test", "sig": r + s}, False),
        ("verify-bit-flipped", {"sig": r[:-1] + "7" + s}, False),
        ("verify-other-key", {"pub": pub_of(2), "sig": r + s}, False),
        ("verify-r-zero", {"sig": "00" * 32 + s}, False),
        ("verify-s-zero", {"sig": r + "00" * 32}, False),
        ("verify-r-n", {"sig": "%064x" % N + s}, False),
        ("verify-s-n", {"sig": r + "%064x" % N}, False),
        ("verify-sig-63", {"sig": (r + s)[:-2]}, False),
        ("verify-sig-65", {"sig": r + s + "00"}, False),
        ("verify-sig-empty", {"sig": ""}, False),
        ("verify-pub-off-curve", {"pub": off, "sig": r + s}, False),
        ("verify-pub-x-ge-p", {"pub": big_x[:130], "sig": r + s}, False),
        ("verify-pub-compressed", {"pub": "03" + RFC_PUB[2:66], "sig": r + s}, False),
        ("verify-pub-prefix", {"pub": "05" + RFC_PUB[2:], "sig": r + s}, False),
        ("verify-pub-infinity", {"pub": "00", "sig": r + s}, False),
        ("verify-pub-zero-point", {"pub": "04" + "00" * 64, "sig": r + s}, False),
        ("verify-pub-64", {"pub": RFC_PUB[2:], "sig": r + s}, False),
    ]
    out = [vec(name, "verify", {**ok, **change}, want) for name, change, want in cases]
    bad_hash = {"value_error": "p256: hash must be 32 bytes (SHA-256), got 31"}
    out += [
        vec("verify-hash-31", "verify", {"pub": RFC_PUB, "hash_hex": "00" * 31, "sig": r + s},
            bad_hash),
        vec("sign-hash-31", "sign", {"d": RFC_D, "hash_hex": "00" * 31}, bad_hash),
        vec("sign-hash-33", "sign", {"d": RFC_D, "hash_hex": "00" * 33},
            {"value_error": "p256: hash must be 32 bytes (SHA-256), got 33"}),
        vec("steps-hash-0", "sign_steps", {"d": RFC_D, "hash_hex": ""},
            {"value_error": "p256: hash must be 32 bytes (SHA-256), got 0"}),
        vec("sign-d-zero", "sign", {"d": "00", "msg": "sample"}, {"value_error": KEY_ERR}),
        vec("sign-d-n", "sign", {"d": "%064x" % N, "msg": "sample"}, {"value_error": KEY_ERR}),
        vec("public-key-d-n+1", "public_key", {"d": "%064x" % (N + 1)}, {"value_error": KEY_ERR}),
        vec("public-key-d-2^256", "public_key", {"d": "1" + "0" * 64}, {"value_error": KEY_ERR}),
        vec("keypair-entropy-31", "keypair", {"entropy": "5a" * 31},
            {"value_error": "p256: entropy must be at least 32 bytes, got 31"}),
        vec("keypair-entropy-zeros", "keypair", {"entropy": "00" * 32},
            {"value_error": "p256: entropy is one repeated byte"}),
        vec("keypair-entropy-ff", "keypair", {"entropy": "ff" * 48},
            {"value_error": "p256: entropy is one repeated byte"}),
    ]
    return out


def generate() -> str:
    doc = {"ops": "p256_ops", "vectors": signing() + refused()}
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(generate())
