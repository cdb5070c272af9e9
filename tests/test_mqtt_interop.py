"""A reading encoded by protocols/ under MicroPython crosses a real Mosquitto and decodes in
CPython byte-exact, tag verified."""

from __future__ import annotations

import queue
from collections.abc import Callable
from subprocess import CompletedProcess

import paho.mqtt.client as mqtt
import pytest

from protocols import messages, topics
from sim_hardware.mosquitto import MosquittoBroker
from tests import vectorgen

# The MicroPython side speaks just enough MQTT 3.1.1 (CONNECT, PUBLISH QoS 0, DISCONNECT)
# over a plain socket: this test is about the bytes of the message, not the firmware client.
UPY_PUBLISH = r"""
import socket
from binascii import hexlify
from protocols import messages, topics

def remaining(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)

def utf8(s):
    s = s.encode()
    return bytes([len(s) >> 8, len(s) & 0xFF]) + s

key = bytes(range(32))
msg = messages.reading("m01", 1, 3, 7, 1900000, 1710000000, 1710000900, 120, 0, 51234, 20345, 0)
payload = messages.encode(msg, key)
topic = topics.meter_topic("c1", "m01", "reading")
sock = socket.socket()
sock.connect(socket.getaddrinfo("127.0.0.1", PORT)[0][-1])
var = utf8("MQTT") + bytes([4, 2, 0, 30]) + utf8("upy-interop")
sock.write(bytes([0x10]) + remaining(len(var)) + var)
assert sock.read(4) == b"\x20\x02\x00\x00"
body = utf8(topic) + payload
sock.write(bytes([0x30]) + remaining(len(body)) + body)
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
