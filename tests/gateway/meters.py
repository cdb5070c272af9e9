"""Simulated meters for gateway tests and the bench: protocol-encoded messages from CPython over
paho-mqtt (the firmware is tested on its own), with store-and-forward resends like the device."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from protocols import messages, topics


@dataclass
class MeterSpec:
    meter: str
    kid: int
    key: bytes
    boot: int = 1
    seq: int = 0
    counter_imp: int = 10_000
    counter_exp: int = 5_000


def reading(spec: MeterSpec, community: str, iv: int, interval_s: int, imp_wh: int = 100, exp_wh: int = 20,
            flags: int = 0) -> tuple[str, bytes, tuple[str, int, int]]:
    """The next reading of ``spec`` (advances its sequence and counters)."""
    spec.seq += 1
    spec.counter_imp += imp_wh
    spec.counter_exp += exp_wh
    msg = messages.reading(spec.meter, spec.kid, spec.boot, spec.seq, iv, iv * interval_s, (iv + 1) * interval_s,
                           imp_wh, exp_wh, spec.counter_imp, spec.counter_exp, flags)
    return topics.meter_topic(community, spec.meter, "reading"), messages.encode(msg, spec.key), (spec.meter, spec.boot, spec.seq)


def bid(spec: MeterSpec, community: str, iv: int, n: int, curve: list[list[int]], ts: int) -> tuple[str, bytes]:
    msg = messages.bid(spec.meter, spec.kid, spec.boot, n, iv, ts, curve)
    return topics.meter_topic(community, spec.meter, "bid"), messages.encode(msg, spec.key)


class AckCollector:
    """Subscribes to every meter's ack topic and records (meter, boot, seq) -> res."""

    def __init__(self, host: str, port: int, community: str, keys: dict[str, bytes],
                 username: str | None = None, password: str | None = None) -> None:
        self.keys = keys
        self.acks: dict[tuple[str, int, int], str] = {}
        self.count = 0
        self.last = 0.0
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"acks-{time.monotonic_ns()}")
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(host, port)
        self.client.subscribe(topics.meter_filter(community, "ack"), qos=1)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("ack collector did not subscribe")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        _, meter, body, _ = messages.decode(msg.topic, msg.payload, lambda m, k: self.keys.get(m))
        with self.lock:
            self.acks[(body["meter"], body["boot"], body["seq"])] = body["res"]
            self.count += 1
            self.last = time.monotonic()

    def wait_for(self, keys: set[tuple[str, int, int]], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if keys <= self.acks.keys():
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def publisher(host: str, port: int, client_id: str = "", username: str | None = None,
              password: str | None = None, protocol: int = mqtt.MQTTv311) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"pub-{time.monotonic_ns()}",
                    protocol=protocol)
    if username:
        c.username_pw_set(username, password)
    c.max_inflight_messages_set(1000)
    c.connect(host, port)
    c.loop_start()
    return c


@dataclass
class Fleet:
    """Meters that keep every unacknowledged reading and resend it, like the firmware does."""
    community: str
    interval_s: int
    specs: list[MeterSpec]
    unacked: dict[tuple[str, int, int], tuple[str, bytes]] = field(default_factory=dict)

    def produce(self, iv: int) -> None:
        for spec in self.specs:
            topic, payload, k = reading(spec, self.community, iv, self.interval_s)
            self.unacked[k] = (topic, payload)

    def forget_acked(self, acks: dict[tuple[str, int, int], str]) -> None:
        for k in [k for k in self.unacked if k in acks]:
            del self.unacked[k]

    def send(self, client: mqtt.Client) -> None:
        for topic, payload in list(self.unacked.values()):
            client.publish(topic, payload, qos=1)
