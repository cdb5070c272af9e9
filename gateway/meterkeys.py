"""Meters' own signing keys (issue 15): ECDSA P-256 public keys, as the registry keeps them
(65-byte uncompressed SEC1 points, 0x04 || X || Y) and as third parties take them (PEM
SubjectPublicKeyInfo, what ``openssl dgst -sha256 -verify meter.pem`` reads).

A meter signs SHA-256 of each reading's exact body (protocols/signature.py, device side
protocols/p256.py) as r || s, 32 bytes each; here that signature is checked with
``cryptography`` and converted to the DER form standard tools expect. Every error is a one-line
MeterKeyError: keys and signatures come from files and the network.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

POINT_LEN = 65  # 0x04 || X || Y
SIG_LEN = 64  # r || s
ALGORITHM = "ECDSA-secp256r1-SHA256"  # the name an export (readings.json) gives the scheme
_HALF = SIG_LEN // 2
_ECDSA = ec.ECDSA(hashes.SHA256())


class MeterKeyError(ValueError):
    """A public key, PEM file or signature that is not one."""


def load(pub: bytes) -> ec.EllipticCurvePublicKey:
    """The public key of an uncompressed P-256 point; MeterKeyError unless it is one on the curve."""
    if not isinstance(pub, bytes) or len(pub) != POINT_LEN or pub[:1] != b"\x04":
        raise MeterKeyError(f"a meter's public key is a {POINT_LEN}-byte uncompressed P-256 point (0x04 || X || Y)")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub)
    except ValueError:
        raise MeterKeyError("the meter's public key is not a point on P-256") from None


def point_of(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def pem_of(pub: bytes) -> bytes:
    """PEM SubjectPublicKeyInfo of a meter's public key (point checked first)."""
    return load(pub).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def pub_of_pem(data: bytes) -> bytes:
    """The 65-byte point of a PEM public key file; MeterKeyError unless it is a P-256 public key."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise MeterKeyError("not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    except Exception as exc:  # noqa: BLE001 - cryptography raises its own types for unsupported keys
        raise MeterKeyError(f"not a usable PEM public key: {type(exc).__name__}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise MeterKeyError("the PEM key is not an ECDSA P-256 (secp256r1) public key")
    return point_of(key)


def fingerprint(pub: bytes) -> str:
    """What a person compares: SHA-256 of the point, first 16 hex digits (as ``sha256:...``)."""
    return "sha256:" + hashlib.sha256(pub).hexdigest()[:16]


def der_of(sig: bytes) -> bytes:
    """The DER (X9.62 Ecdsa-Sig-Value) form of an r || s signature, what openssl takes."""
    if len(sig) != SIG_LEN:
        raise MeterKeyError(f"a meter's signature is {SIG_LEN} bytes r || s")
    return utils.encode_dss_signature(int.from_bytes(sig[:_HALF], "big"), int.from_bytes(sig[_HALF:], "big"))


def verify(key: ec.EllipticCurvePublicKey, body: bytes, sig: bytes) -> bool:
    """Whether ``sig`` (r || s) is ``key``'s ECDSA signature over SHA-256(body)."""
    if len(sig) != SIG_LEN:
        return False
    try:
        key.verify(der_of(sig), body, _ECDSA)
    except InvalidSignature:
        return False
    return True
