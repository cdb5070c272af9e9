"""Simulated meters as an attacker or a test holds them: protocol-encoded messages from CPython
over paho-mqtt (the firmware is tested on its own), store-and-forward resends like the device,
a meter's own authenticated MQTT link, and an intruder connecting under someone else's client id.

Shared by the gateway tests (tests/gateway/) and the red-team replay (sim_hardware/harness/redteam.py,
bench/redteam.py), which must not import from tests/."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import paho.mqtt.client as mqtt

from gateway.config import GatewayConfig
from gateway.registry import gateway_logins
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


class Broker(Protocol):
    """Where a meter connects: a MosquittoBroker, or anything with its address."""
    host: str
    port: int


class HasInterval(Protocol):
    interval_s: int


class MeterLink:
    """One meter's MQTT connection as the firmware holds it: its own login, a persistent
    session, its ack topic subscribed; records its acks and every time the broker dropped it."""

    def __init__(self, broker: Broker, spec: MeterSpec, password: str, client_id: str | None = None,
                 clean: bool = False, community: str = "c1") -> None:
        self.spec = spec
        self.community = community
        self.acks: dict[tuple[str, int, int], str] = {}
        self.drops = 0
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or spec.meter, clean_session=clean)
        self.c.username_pw_set(spec.meter, password)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_message = self._on_message
        self.c.connect(broker.host, broker.port, keepalive=30)
        self.c.loop_start()
        assert self.connected.wait(10), f"{spec.meter} did not connect"

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object) -> None:
        if not rc.is_failure:  # type: ignore[attr-defined]
            self.connected.set()

    def _on_disconnect(self, *args: object) -> None:
        self.drops += 1

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        _, _, body, _ = messages.decode(msg.topic, msg.payload, lambda m, k: self.spec.key)
        self.acks[(body["meter"], body["boot"], body["seq"])] = body["res"]

    def subscribe_acks(self) -> None:
        self.c.subscribe(topics.meter_topic(self.community, self.spec.meter, "ack"), 1)
        assert self.subscribed.wait(10)

    def publish(self, topic: str, payload: bytes) -> None:
        """One message at QoS 1, confirmed by the broker (PUBACK)."""
        self.c.publish(topic, payload, qos=1).wait_for_publish(10)

    def send(self, cfg: HasInterval, n: int) -> set[tuple[str, int, int]]:
        """``n`` readings, each confirmed by the broker (PUBACK)."""
        iv = messages.interval_index(time.time(), cfg.interval_s)
        sent, keys = [], set()
        for _ in range(n):
            topic, payload, key = reading(self.spec, self.community, iv, cfg.interval_s)
            sent.append(self.c.publish(topic, payload, qos=1))
            keys.add(key)
        for info in sent:
            info.wait_for_publish(10)
        return keys

    def close(self) -> None:
        self.c.on_disconnect = None
        self.c.disconnect()
        self.c.loop_stop()


def intrude(broker: Broker, user: str, password: str, client_id: str) -> int:
    """Connect with ``user``'s credentials under ``client_id`` and a clean session (what wipes
    a session held under that id), then leave; returns the CONNACK reason code."""
    got: queue.Queue[int] = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    c.username_pw_set(user, password)
    c.on_connect = lambda cl, u, f, rc, p: got.put(rc.value)
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        rc = got.get(timeout=10)
        time.sleep(0.3)  # long enough for the broker to act on the takeover
        return rc
    finally:
        c.disconnect()
        c.loop_stop()


def gateway_client_ids(cfg: GatewayConfig) -> list[str]:
    """Every client id the gateway's connections use or used: its logins and `<client_id>[-pump]`."""
    ids = {*gateway_logins(cfg.mqtt.user or ""), cfg.mqtt.client_id}
    ids |= {f"{cfg.mqtt.client_id}-{pump}" for pump in ("up", "down")}
    return sorted(ids)
