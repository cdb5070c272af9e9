"""Ingest's stateless ends: authenticate and decode what meters send; tag the acks sent back.

Stateless apart from a key cache, so each runs where its messages pass: decoding in the daemon's
uplink pump, tagging acks in its downlink pump (gateway/ingest/pump_process.py), so that the thread that stores
records does neither; or both in-process (``Ingest.process``, for tests and tools). The tag is
checked before anything is parsed (protocols.messages.decode); every rejection is counted under
its ProtocolError code and logged with the meter id, when the topic names a valid one.

Readings of a meter that enrolled a signing key (issue 15, gateway/registry.py) must carry its
ECDSA signature line (protocols/signature.py), checked after the tag and before the body is
parsed (``decode``): "unsigned" without one, "unknown_key" for a signing key id that is unknown
or retired, "bad_signature" for one that does not verify, "unexpected_signature" on any other
message or a meter with no enrolled key. A meter that never enrolled sends plain v1 readings.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from gateway import meterkeys
from gateway.registry import Registry
from protocols import messages, signature, topics, trailer
from protocols.errors import ProtocolError

log = logging.getLogger("tmeter.gateway.ingest")

KEY_CACHE_S = 10.0  # retired keys stop working within this long in a running daemon

# The meter's signature on a reading: (signing key id, 64 bytes r || s) over SHA-256(body).
Signature = tuple[int, bytes]

# A message on a meter uplink topic (reading, bid, status) whose tag verified under its meter's
# key and whose body is a valid message of the kind its topic names: (topic, community, meter,
# message, the exact body bytes (without a signature line), the meter's signature or None).
# Plain tuples of bytes and ints: they cross the pump's pipe pickled (gateway/ingest/frames.py).
Verified = tuple[str, str, str, dict[str, Any], bytes, Signature | None]

# A meter's valid signing keys by skid, or None if it never enrolled one (gateway/registry.py).
Signers = dict[int, EllipticCurvePublicKey] | None

# What the store decided to tell a meter about one of its readings: (meter, kid, boot, seq, res).
AckOrder = tuple[str, int, int, int, str]


@dataclass(frozen=True)
class Outgoing:
    """A message the gateway publishes."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


def read_only(path: str | Path) -> Registry:
    """The registry of the gateway's database, read-only (another process writes it)."""
    return Registry(conn=sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=30))


class KeyCache:
    """Meter keys by (meter, kid) and signing keys by meter, refreshed from the registry
    every few seconds."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._keys: dict[tuple[str, int], bytes | None] = {}
        self._signers: dict[str, Signers] = {}
        self._loaded = time.monotonic()
        # Per meter, the newest key id whose older keys are known retired (this run).
        self._settled: dict[str, int] = {}

    def retire_superseded(self, batch: list[Verified], counters: Counter[str]) -> None:
        """End a rotation (gateway/registry.py) once it took: the first message a meter's new
        key verified retires that meter's older keys. Needs the writable registry, so the
        database thread calls it; the pumps' caches drop the old keys within KEY_CACHE_S."""
        newest: dict[str, int] = {}
        for _, _, meter, msg, *_ in batch:
            kid = msg["kid"]
            if kid > max(self._settled.get(meter, 0), newest.get(meter, 0)):
                newest[meter] = kid
        if not newest:
            return
        retired = self.registry.retire_superseded(newest)
        self._settled.update(newest)
        for meter, kid in self._keys:
            if kid < newest.get(meter, 0):
                self._keys[(meter, kid)] = None
        if retired:
            counters["keys_retired"] += retired
            log.info("rotation done: retired %d older key(s) of %s", retired, ", ".join(sorted(newest)))

    def __call__(self, meter: str, kid: int) -> bytes | None:
        self._expire()
        k = (meter, kid)
        if k not in self._keys:
            self._keys[k] = self._read(self.registry.key, meter, kid)
        return self._keys[k]

    def signers(self, meter: str) -> Signers:
        """The meter's valid signing keys, loaded as public keys (parsed once per refresh);
        None if it never enrolled one."""
        self._expire()
        if meter not in self._signers:
            pubs = self._read(self.registry.valid_signing_keys, meter)
            self._signers[meter] = None if pubs is None else {s: meterkeys.load(p) for s, p in pubs.items()}
        return self._signers[meter]

    def _expire(self) -> None:
        if time.monotonic() - self._loaded > KEY_CACHE_S:
            self._keys.clear()
            self._signers.clear()
            self._loaded = time.monotonic()

    @staticmethod
    def _read(lookup: Callable[..., Any], *args: Any) -> Any:
        try:
            return lookup(*args)
        except sqlite3.Error as exc:
            # The database is gone or failing: the message cannot be verified now. Refused
            # (never acked, so the meter sends it again) rather than the pump dying on it.
            raise ProtocolError("key_unavailable", f"registry unreadable: {exc}") from None


def decode(topic: str, payload: bytes, keys: Callable[[str, int], bytes | None],
           signers: Callable[[str], Signers]) -> tuple[str, str, dict[str, Any], bytes, Signature | None]:
    """protocols.messages.decode, and the meter's signature on readings (see the module's
    docstring): (community, subject, message, body, signature or None). The order is the
    protocol's: topic, tag, signature, then the body is parsed. Raises ProtocolError only."""
    kind = topics.parse(topic)[1]
    try:
        community, subject, msg, body = messages.decode(topic, payload, keys)
    except ProtocolError as exc:
        # meterlink.decode parses a tagged kind's body only once its tag verified, so bad_json
        # here is an authentic body that is not canonical JSON: a signed one, or a broken one.
        if exc.code != "bad_json" or kind not in messages.TAGGED:
            raise
        return _signed(topic, bytes(payload), keys, signers, exc)
    if kind == "reading" and signers(subject) is not None:
        raise ProtocolError("unsigned", "this meter enrolled a signing key: its readings must be signed")
    return community, subject, msg, body, None


def _signed(topic: str, payload: bytes, keys: Callable[[str, int], bytes | None],
            signers: Callable[[str], Signers], not_json: ProtocolError
            ) -> tuple[str, str, dict[str, Any], bytes, Signature | None]:
    """A payload whose tag verified and whose tagged body is not canonical JSON."""
    tagged, kid, _tag = trailer.split(payload)
    body, skid, sig = signature.split(tagged)
    if skid is None or sig is None:
        raise not_json
    _, kind, meter = topics.parse(topic)
    enrolled = signers(meter) if kind == "reading" else None
    if enrolled is None:
        raise ProtocolError("unexpected_signature", "only readings of a meter with an enrolled signing key are signed")
    key = enrolled.get(skid)
    if key is None:
        raise ProtocolError("unknown_key", f"no valid signing key {skid} for this meter")
    if not meterkeys.verify(key, body, sig):
        raise ProtocolError("bad_signature", "the meter's signature does not match the body")
    # The body then passes every check an unsigned one does (canonical JSON, schema, meter and
    # key id against topic and trailer): the meter link's own decoder, given the body tagged
    # again with the key that just verified the whole.
    hmac_key = keys(meter, kid)
    if hmac_key is None:  # retired between the two look-ups (the cache refreshed)
        raise ProtocolError("unknown_key", f"no key {kid} for this meter")
    community, subject, msg, body = messages.decode(topic, trailer.encode(body, kid, hmac_key), keys)
    return community, subject, msg, body, (skid, sig)


class MeterDecoder:
    def __init__(self, keys: KeyCache, counts: Counter[str]) -> None:
        self.keys = keys
        self.counts = counts

    def __call__(self, topic: str, payload: bytes) -> Verified | None:
        try:
            if topics.parse(topic)[1] not in topics.METER_UP:
                # Only what meters publish: a broker that delivers anything else to the uplink
                # (amqtt sent the gateway's own checkpoint) or a client publishing acks at us.
                raise ProtocolError("topic_mismatch", "not a topic meters publish on")
            community, meter, msg, body, sig = decode(topic, payload, self.keys, self.keys.signers)
        except ProtocolError as exc:
            self.counts[exc.code] += 1
            log.info("rejected %s: %s", _meter_hint(topic), exc)
            return None
        return topic, community, meter, msg, body, sig

    def decode_all(self, batch: list[tuple[str, bytes]]) -> list[Verified]:
        return [v for v in (self(topic, payload) for topic, payload in batch) if v is not None]


class AckTagger:
    """Acks as the meters receive them: on the meter's ack topic, tagged with its key."""

    def __init__(self, keys: KeyCache, community: str, qos: int) -> None:
        self.keys = keys
        self.community = community
        self.qos = qos

    def __call__(self, orders: list[AckOrder]) -> list[Outgoing]:
        out = []
        for meter, kid, boot, seq, res in orders:
            key = self.keys(meter, kid)
            if key is None:  # retired since its reading was decoded: the meter's next try is refused
                continue
            payload = messages.encode(messages.ack(meter, kid, boot, seq, res), key)
            out.append(Outgoing(topics.meter_topic(self.community, meter, "ack"), payload, self.qos))
        return out


def _meter_hint(topic: str) -> str:
    """A log-safe meter id from an unverified topic (the message failed to decode)."""
    parts = topic.split("/")
    hint = parts[4] if len(parts) > 4 else "?"
    return hint if topics.valid_id(hint) else "?"
