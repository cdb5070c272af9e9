"""The TCP fault proxy delays, drops and cuts links at run time: on a plain TCP echo service, on
a Modbus link to the simulator, and on an MQTT link to a real Mosquitto."""

from __future__ import annotations

import asyncio
import threading
import time

import paho.mqtt.client as paho
import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.framer import FramerType

from sim_hardware.simulator.clock import SimClock
from sim_hardware.simulator.faultproxy import FaultProxy, ProxyThread
from sim_hardware.harness.mosquitto import MosquittoBroker
from sim_hardware.simulator.server import SimConfig, Simulator
from tests.sim.conftest import T0, arun


async def echo_server() -> asyncio.base_events.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes,
                    timeout: float = 1.0) -> bytes:
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.readexactly(len(data)), timeout)
    except asyncio.TimeoutError:
        return b""


def test_delay_drop_cut_refuse_on_a_tcp_link() -> None:
    async def scenario() -> None:
        server = await echo_server()
        port = server.sockets[0].getsockname()[1]
        async with FaultProxy("127.0.0.1", port) as proxy:
            reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
            assert await roundtrip(reader, writer, b"ping") == b"ping"

            proxy.set_delay(0.25, "up")
            began = time.monotonic()
            assert await roundtrip(reader, writer, b"slow") == b"slow"
            assert 0.25 <= time.monotonic() - began < 1.0
            proxy.set_delay(0.0)

            proxy.set_drop(True, "down")
            assert await roundtrip(reader, writer, b"lost", timeout=0.3) == b""
            proxy.set_drop(False)
            assert await roundtrip(reader, writer, b"back") == b"back"  # same connection
            assert proxy.stats.dropped_down == 4

            assert proxy.connections == 1
            proxy.cut()
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await roundtrip(reader, writer, b"gone")
                await asyncio.wait_for(reader.readexactly(1), 1)
            writer.close()

            proxy.refuse(True)
            reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
            try:
                assert await asyncio.wait_for(reader.read(10), 2) == b""  # reset at once
            except ConnectionResetError:
                pass
            writer.close()
            assert proxy.stats.refused == 1
            proxy.heal()
            reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
            assert await roundtrip(reader, writer, b"again") == b"again"
            writer.close()
        server.close()
        await server.wait_closed()

    arun(scenario())


def test_modbus_link_through_the_proxy() -> None:
    async def scenario() -> None:
        sim = Simulator(SimConfig(meters=1), SimClock(T0, speed=1))
        async with sim:
            endpoint = sim.endpoints[0]
            async with FaultProxy(endpoint.host, endpoint.port, name="modbus") as proxy:
                client = AsyncModbusTcpClient(proxy.host, port=proxy.port, framer=FramerType.RTU,
                                              timeout=0.5, retries=0, reconnect_delay=0.1)
                await client.connect()
                rr = await client.read_input_registers(0x48, count=4, device_id=1)
                assert not rr.isError()
                proxy.set_delay(0.8, "down")  # answers arrive after the master's timeout
                with pytest.raises(Exception):
                    await client.read_input_registers(0x48, count=4, device_id=1)
                proxy.set_delay(0.0)
                proxy.cut()
                await asyncio.sleep(0.5)  # pymodbus reconnects by itself
                for _ in range(20):
                    if client.connected:
                        break
                    await asyncio.sleep(0.1)
                rr = await client.read_input_registers(0x48, count=4, device_id=1)
                assert not rr.isError()
                client.close()
                assert proxy.stats.cut == 1

    arun(scenario())


def test_mqtt_link_through_the_proxy(mosquitto: MosquittoBroker) -> None:
    with ProxyThread(mosquitto.host, mosquitto.port, name="mqtt") as proxy:
        connected, disconnected, got = threading.Event(), threading.Event(), threading.Event()
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="proxy-test")
        client.on_connect = lambda c, u, f, rc, p: (connected.set(), c.subscribe("t/#", 1))
        client.on_disconnect = lambda c, u, f, rc, p: disconnected.set()
        client.on_message = lambda c, u, m: got.set()
        client.on_subscribe = lambda c, u, mid, rc, p: c.publish("t/x", b"1", qos=1)
        client.connect(proxy.host, proxy.port, keepalive=5)
        client.loop_start()
        try:
            assert connected.wait(5) and got.wait(5)
            proxy.refuse(True)  # the broker is "down" until healed
            proxy.cut()
            assert disconnected.wait(5)
            assert proxy.stats.cut == 1
        finally:
            client.loop_stop()
            client.disconnect()
