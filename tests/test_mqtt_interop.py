"""A reading encoded by protocols/ under MicroPython crosses a real Mosquitto and decodes in
CPython byte-exact, tag verified."""

from __future__ import annotations

import queue
from collections.abc import Callable
from subprocess import CompletedProcess

import paho.mqtt.client as mqtt
import pytest

from protocols import messages, topics
from sim_hardware.harness.mosquitto import MosquittoBroker
from tests import vectorgen

# The MicroPython side sends the packets the firmware's MQTT client builds (CONNECT, PUBLISH
# QoS 0, DISCONNECT) over a plain socket: this test is about the bytes of the message.
UPY_PUBLISH = r"""
import socket
from binascii import hexlify
from firmware import mqtt
from protocols import messages, topics

key = bytes(range(32))
msg = messages.reading("m01", 1, 3, 7, 1900000, 1710000000, 1710000900, 120, 0, 51234, 20345, 0)
payload = messages.encode(msg, key)
topic = topics.meter_topic("c1", "m01", "reading")
sock = socket.socket()
sock.connect(socket.getaddrinfo("127.0.0.1", PORT)[0][-1])
sock.write(mqtt.connect_packet("upy-interop", 30, True, None, None, None))
assert sock.read(4) == b"\x20\x02\x00\x00"
sock.write(mqtt.publish_packet(topic, payload, 0, False, 0, False))
sock.write(b"\xe0\x00")
sock.close()
print(hexlify(payload).decode())
"""


@pytest.mark.micropython
@pytest.mark.mosquitto
def test_reading_from_micropython_decodes_in_cpython(
    mosquitto: MosquittoBroker, micropython: Callable[..., CompletedProcess[str]]
) -> None:
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="cpython-interop")
    client.on_connect = lambda c, *_: c.subscribe(topics.meter_filter("c1", "reading"), qos=1)
    client.on_subscribe = lambda *_: subscribed.put(True)
    client.on_message = lambda _c, _u, m: received.put(m)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        assert subscribed.get(timeout=10)
        result = micropython(UPY_PUBLISH.replace("PORT", str(mosquitto.port)))
        sent = bytes.fromhex(result.stdout.strip())
        got = received.get(timeout=10)
    finally:
        client.loop_stop()
        client.disconnect()
    assert got.topic == "tm/v1/c1/meters/m01/reading"
    assert got.payload == sent == vectorgen.payload_of(vectorgen.READING)
    _c, meter, msg, body = messages.decode(got.topic, got.payload, lambda m, k: vectorgen.KEY)
    assert meter == "m01" and msg == vectorgen.READING and body == vectorgen.body(vectorgen.READING)
