"""Ingest's stateless ends: authenticate and decode what meters send; tag the acks sent back.

Stateless apart from a key cache, so each runs where its messages pass: decoding in the daemon's
uplink pump, tagging acks in its downlink pump (gateway/ingest/pump_process.py), so that the thread that stores
records does neither; or both in-process (``Ingest.process``, for tests and tools). The tag is
checked before anything is parsed (protocols.messages.decode); every rejection is counted under
its ProtocolError code and logged with the meter id, when the topic names a valid one.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.registry import Registry
from protocols import messages, topics
from protocols.errors import ProtocolError

log = logging.getLogger("tmeter.gateway.ingest")

KEY_CACHE_S = 10.0  # retired keys stop working within this long in a running daemon

# A message on a meter uplink topic (reading, bid, status) whose tag verified under its meter's
# key and whose body is a valid message of the kind its topic names: (topic, community, meter, message, body bytes the tag covers).
Verified = tuple[str, str, str, dict[str, Any], bytes]

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
    """Meter keys by (meter, kid), refreshed from the registry every few seconds."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._keys: dict[tuple[str, int], bytes | None] = {}
        self._loaded = time.monotonic()
        # Per meter, the newest key id whose older keys are known retired (this run).
        self._settled: dict[str, int] = {}

    def retire_superseded(self, batch: list[Verified], counters: Counter[str]) -> None:
        """End a rotation (gateway/registry.py) once it took: the first message a meter's new
        key verified retires that meter's older keys. Needs the writable registry, so the
        database thread calls it; the pumps' caches drop the old keys within KEY_CACHE_S."""
        newest: dict[str, int] = {}
        for _, _, meter, msg, _ in batch:
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
        if time.monotonic() - self._loaded > KEY_CACHE_S:
            self._keys.clear()
            self._loaded = time.monotonic()
        k = (meter, kid)
        if k not in self._keys:
            try:
                self._keys[k] = self.registry.key(meter, kid)
            except sqlite3.Error as exc:
                # The database is gone or failing: the message cannot be verified now. Refused
                # (never acked, so the meter sends it again) rather than the pump dying on it.
                raise ProtocolError("key_unavailable", f"registry unreadable: {exc}") from None
        return self._keys[k]


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
            community, meter, msg, body = messages.decode(topic, payload, self.keys)
        except ProtocolError as exc:
            self.counts[exc.code] += 1
            log.info("rejected %s: %s", _meter_hint(topic), exc)
            return None
        return topic, community, meter, msg, body

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
