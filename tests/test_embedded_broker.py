"""The demo's embedded amqtt broker does what the firmware and gateway rely on: QoS 1
delivery, retained messages for late subscribers, and the last will on an abrupt drop."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from sim_hardware.harness.embedded_broker import EmbeddedBroker

Message = tuple[str, bytes]


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


def client(broker: EmbeddedBroker, name: str, inbox: "queue.Queue[Message] | None" = None,
           will: Message | None = None) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
    if inbox is not None:
        c.on_message = lambda _c, _u, m: inbox.put((m.topic, m.payload))
    if will is not None:
        c.will_set(will[0], will[1], qos=1, retain=True)
    c.connect(broker.host, broker.port, keepalive=5)
    c.loop_start()
    return c


def subscribe(c: mqtt.Client, topic: str) -> None:
    done: queue.Queue[bool] = queue.Queue()
    c.on_subscribe = lambda *_: done.put(True)
    c.subscribe(topic, qos=1)
    done.get(timeout=10)


def test_retained_status_then_last_will(broker: EmbeddedBroker) -> None:
    meter = client(broker, "meter", will=("t/status", b"offline"))
    meter.publish("t/status", b"online", qos=1, retain=True).wait_for_publish(10)
    inbox: queue.Queue[Message] = queue.Queue()
    watcher = client(broker, "watcher", inbox)
    subscribe(watcher, "t/#")
    assert inbox.get(timeout=10) == ("t/status", b"online")
    meter.loop_stop()
    meter.socket().close()  # an abrupt drop, not a DISCONNECT: the broker sends the will
    assert inbox.get(timeout=15) == ("t/status", b"offline")
    watcher.loop_stop()
    watcher.disconnect()


def test_qos1_messages_all_arrive_in_order(broker: EmbeddedBroker) -> None:
    inbox: queue.Queue[Message] = queue.Queue()
    sub = client(broker, "sub", inbox)
    subscribe(sub, "q/#")
    pub = client(broker, "pub")
    for i in range(500):
        info = pub.publish("q/x", str(i).encode(), qos=1)
    info.wait_for_publish(30)
    got = [inbox.get(timeout=10) for _ in range(500)]
    assert got == [("q/x", str(i).encode()) for i in range(500)]
    for c in (sub, pub):
        c.loop_stop()
        c.disconnect()
