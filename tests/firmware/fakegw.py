"""A test-side stand-in for the gateway: verifies every meter message with
the gateway's decoder (gateway/ingest/codec.py: tag first), stores readings once, acknowledges
them, and can send awards. A meter given a public key (signing key id 1) in ``pubs`` must
sign its readings (protocols/signature.py), as an enrolled meter must.

Not the product gateway: just enough of its contract (docs/architecture.md §3, ingest) for the
firmware's end-to-end and fault tests.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import paho.mqtt.client as mqtt

from gateway import meterkeys
from gateway.ingest import codec
from protocols import messages, topics
from protocols.errors import ProtocolError


class FakeGateway:
    def __init__(self, host: str, port: int, community: str, keys: dict[str, bytes], kid: int = 1,
                 ack: bool = True, pubs: dict[str, bytes] | None = None) -> None:
        self.community = community
        self.pubs = dict(pubs or {})
        self.signatures: dict[tuple[str, int, int], bytes] = {}  # (meter, boot, seq) -> r||s
        self.keys = keys
        self.kid = kid
        self.ack_enabled = ack
        self.lock = threading.RLock()
        self.readings: dict[tuple[str, int, int], dict] = {}   # (meter, boot, seq) -> msg
        self.reading_bodies: dict[tuple[str, int, int], bytes] = {}
        self.deliveries: Counter[tuple[str, int, int]] = Counter()
        self.acks_sent: Counter[tuple[str, int, int]] = Counter()
        self.bids: list[tuple[float, dict]] = []
        self.statuses: list[dict] = []
        self.rejected: Counter[str] = Counter()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fake-gw-" + community,
                                  clean_session=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.reconnect_delay_set(0.1, 1)
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("fake gateway could not subscribe")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def _on_connect(self, client, _u, _f, _rc, _p=None) -> None:
        for kind in ("reading", "bid", "status"):
            client.subscribe(topics.meter_filter(self.community, kind), qos=1)

    def _key(self, meter: str, kid: int) -> bytes | None:
        return self.keys.get(meter) if kid == self.kid else None

    def verified(self, meter: str, msg: dict) -> None:
        """Called for every message that verified (the registry-backed gateway of
        tests/firmware/test_remote.py retires superseded keys here)."""

    def _signers(self, meter: str) -> dict | None:
        pub = self.pubs.get(meter)
        return None if pub is None else {1: meterkeys.load(pub)}

    def _on_message(self, client, _u, m) -> None:
        try:
            _c, meter, msg, body, sig = codec.decode(m.topic, m.payload, self._key, self._signers)
        except ProtocolError as e:
            with self.lock:
                self.rejected[e.code] += 1
            return
        kind = msg["type"]
        self.verified(meter, msg)
        with self.lock:
            if kind == "bid":
                self.bids.append((time.time(), msg))
            elif kind == "status":
                self.statuses.append(msg)
            elif kind == "reading":
                ident = (meter, msg["boot"], msg["seq"])
                self.deliveries[ident] += 1
                res = messages.ACK_DUPLICATE if ident in self.readings else messages.ACK_STORED
                if res == messages.ACK_STORED:
                    self.readings[ident] = msg
                    self.reading_bodies[ident] = body
                    if sig is not None:
                        self.signatures[ident] = sig[1]
                elif self.reading_bodies[ident] != body:
                    self.rejected["conflict"] += 1  # same (meter, boot, seq), other content
                if not self.ack_enabled:
                    return
                self.acks_sent[ident] += 1
        if kind == "reading":
            # Under the key the reading came with (a meter may be rotating its key).
            ack = messages.ack(meter, msg["kid"], msg["boot"], msg["seq"], res)
            client.publish(topics.meter_topic(self.community, meter, "ack"),
                           messages.encode(ack, self._key(meter, msg["kid"])), qos=1)

    def send_award(self, meter: str, iv: int, q_wh: int, price: int = 100000) -> None:
        msg = messages.award(meter, self.kid, iv, int(time.time()), "uniform", q_wh, price, [])
        self.client.publish(topics.meter_topic(self.community, meter, "award"),
                            messages.encode(msg, self.keys[meter]), qos=1)

    def snapshot(self, meter: str | None = None) -> list[dict]:
        with self.lock:
            return sorted((m for k, m in self.readings.items() if meter is None or k[0] == meter),
                          key=lambda r: (r["meter"], r["seq"]))

    def wait_for(self, predicate, timeout: float, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(self):
                    return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")
