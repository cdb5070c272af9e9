"""Ingest's first stage: authenticate and decode what meters send.

Stateless apart from a key cache, so it runs wherever the messages arrive: in the daemon's uplink
pump (gateway/pump.py), beside the MQTT session, so that the thread that stores records does
none of this work; or in-process (``Ingest.process``, for tests and tools). The tag is checked
before anything is parsed (protocols.messages.decode); every rejection is counted under its
ProtocolError code and logged with the meter id, when the topic names a valid one.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

from gateway.registry import Registry
from protocols import messages, topics
from protocols.errors import ProtocolError

log = logging.getLogger("tmeter.gateway.ingest")

KEY_CACHE_S = 10.0  # retired keys stop working within this long in a running daemon

# A message whose tag verified under its meter's key and whose body is a valid message of the
# kind its topic names: (topic, community, meter, message, body bytes the tag covers).
Verified = tuple[str, str, str, dict[str, Any], bytes]


class KeyCache:
    """Meter keys by (meter, kid), refreshed from the registry every few seconds."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._keys: dict[tuple[str, int], bytes | None] = {}
        self._loaded = time.monotonic()

    def __call__(self, meter: str, kid: int) -> bytes | None:
        if time.monotonic() - self._loaded > KEY_CACHE_S:
            self._keys.clear()
            self._loaded = time.monotonic()
        k = (meter, kid)
        if k not in self._keys:
            self._keys[k] = self.registry.key(meter, kid)
        return self._keys[k]


class MeterDecoder:
    def __init__(self, keys: KeyCache, counts: Counter[str]) -> None:
        self.keys = keys
        self.counts = counts

    @classmethod
    def for_database(cls, path: str | Path, counts: Counter[str]) -> MeterDecoder:
        """Keys read from the gateway's database, read-only (another process writes it)."""
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        return cls(KeyCache(Registry(conn=conn)), counts)

    def __call__(self, topic: str, payload: bytes) -> Verified | None:
        try:
            community, meter, msg, body = messages.decode(topic, payload, self.keys)
        except ProtocolError as exc:
            self.counts[exc.code] += 1
            log.info("rejected %s: %s", _meter_hint(topic), exc)
            return None
        return topic, community, meter, msg, body

    def decode_all(self, batch: list[tuple[str, bytes]]) -> list[Verified]:
        return [v for v in (self(topic, payload) for topic, payload in batch) if v is not None]


def _meter_hint(topic: str) -> str:
    """A log-safe meter id from an unverified topic (the message failed to decode)."""
    parts = topic.split("/")
    hint = parts[4] if len(parts) > 4 else "?"
    return hint if topics.valid_id(hint) else "?"
