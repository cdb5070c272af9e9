"""A test-side stand-in for the gateway: verifies every meter message with
protocols.messages.decode, stores readings once, acknowledges them, and can send awards. A
meter given a public key in ``pubs`` must sign its readings (protocols/signature.py): the
signature is checked with `cryptography` after the tag, before the body is parsed.

Not the product gateway: just enough of its contract (docs/architecture.md §3, ingest) for the
firmware's end-to-end and fault tests.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import paho.mqtt.client as mqtt

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from protocols import messages, signature, topics, trailer
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

    def _unsign(self, topic: str, payload: bytes) -> tuple[bytes, bytes | None]:
        """The payload as an unsigned one (its signature line checked and taken out) and the
        signature; unchanged for a meter without a public key here."""
        meter = topic.split("/")[4] if topic.count("/") >= 5 else ""
        if meter not in self.pubs or not topic.endswith("/reading"):
            return payload, None
        tagged, kid, _tag = trailer.split(payload)
        key = self._key(meter, kid)
        if key is None or not trailer.signed(payload, kid, key):
            raise ProtocolError("bad_tag", "tag does not match the body")
        body, _skid, sig = signature.split(tagged)
        if sig is None:
            raise ProtocolError("unsigned", "reading without the meter's signature")
        pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), self.pubs[meter])
        try:
            pub.verify(encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")),
                       body, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise ProtocolError("bad_signature", "not the meter's signature") from None
        return trailer.encode(body, kid, key), sig

    def _on_message(self, client, _u, m) -> None:
        try:
            payload, sig = self._unsign(m.topic, m.payload)
            _c, meter, msg, body = messages.decode(m.topic, payload, self._key)
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
                        self.signatures[ident] = sig
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
