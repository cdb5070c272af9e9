"""Signed readings for the gateway suite (issue 15): a meter whose private key the test holds
(standing for the device) signs with protocols/p256.py, exactly as the firmware does."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.registry import Registry
from protocols import p256, signature, trailer
from tests.gateway.meters import MeterSpec, reading


@dataclass
class Signer:
    """The meter's key pair and the signing key id the registry gave its public half."""

    d: int
    skid: int

    @property
    def pub(self) -> bytes:
        return p256.public_key(self.d)

    def sign(self, body: bytes) -> bytes:
        return p256.sign(self.d, signature.digest(body))


def enrol(reg: Registry, meter: str, d: int) -> Signer:
    return Signer(d, reg.enrol(meter, p256.public_key(d)))


def resign(payload: bytes, key: bytes, line: bytes | None) -> bytes:
    """``payload``'s body (its signature line dropped) with ``line`` (a signature line, or
    None) after it, tagged again with the meter's HMAC key: what anyone holding the gateway's
    database can make."""
    tagged, kid, _ = trailer.split(payload)
    body = signature.split(tagged)[0]
    return trailer.encode(body if line is None else body + b"\n" + line, kid, key)


def line(skid: int, sig: bytes) -> bytes:
    return signature.attach(b"", skid, sig)[1:]


def signed_reading(spec: MeterSpec, signer: Signer, iv: int, interval_s: int,
                   **kw: int) -> tuple[str, bytes, bytes]:
    """The meter's next reading, signed: (topic, payload, body)."""
    topic, payload, _ = reading(spec, "c1", iv, interval_s, **kw)
    body = trailer.split(payload)[0]
    return topic, trailer.encode(signature.attach(body, signer.skid, signer.sign(body)), spec.kid, spec.key), body
