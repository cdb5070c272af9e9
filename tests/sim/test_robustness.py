"""The simulator never dies on a client's malformed frame or abrupt disconnect: after every kind
of abuse, on every TCP transport, a well-formed request is still answered."""

from __future__ import annotations

import asyncio
import random
import socket
import struct

from protocols import modbus
from sim_hardware.simulator.clock import SimClock
from sim_hardware.simulator.server import SimConfig, Simulator
from tests.sim.conftest import T0, arun, read_rtu_frame, rtu_transact

ENERGY = modbus.build_read(1, 4, 0x48, 4)


def mbap(tid: int, pdu: bytes, unit: int = 1, pid: int = 0) -> bytes:
    return struct.pack(">HHHB", tid, pid, len(pdu) + 1, unit) + pdu


async def send_and_reset(host: str, port: int, data: bytes) -> None:
    """Write ``data`` and close with a TCP reset, without reading."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    await writer.drain()
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def tcp_energy(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(mbap(7, ENERGY[1:-2]))
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(9 + 8), 2)
    finally:
        writer.close()


def garbage(rng: random.Random) -> list[bytes]:
    valid = bytearray(ENERGY)
    out = [rng.randbytes(n) for n in (1, 3, 7, 64, 255, 300, 2000)]
    out += [ENERGY[:5], ENERGY[:-1] + b"\x00", b"\x00" * 40, b"\xff" * 40]
    out.append(modbus.with_crc(bytes((1, 0x2B, 0x0E, 1, 0))))  # read device id: not supported
    out.append(modbus.with_crc(bytes((1, 4, 0, 0, 0, 0))))  # quantity 0
    out.append(modbus.with_crc(bytes((1, 4, 0, 0, 0x07, 0xD0))))  # quantity 2000
    out.append(modbus.with_crc(bytes((1, 16, 0, 0x10, 0, 2, 9, 1, 2))))  # byte count lies
    out.append(modbus.with_crc(bytes((0, 16, 0, 0x10, 0, 2, 4, 0, 0, 0, 0))))  # broadcast
    for i in range(40):
        mutated = bytearray(valid)
        mutated[rng.randrange(len(mutated))] ^= 1 + rng.randrange(255)
        out.append(bytes(mutated))
        out.append(modbus.with_crc(rng.randbytes(rng.randrange(2, 30))))
    return out


def test_rtu_over_tcp_survives_abuse() -> None:
    async def scenario() -> None:
        sim = Simulator(SimConfig(meters=1), SimClock(T0, speed=1))
        async with sim:
            host, port = sim.endpoints[0].host, sim.endpoints[0].port
            rng = random.Random(3)
            for data in garbage(rng):
                await rtu_transact(host, port, data, timeout=0.02)
                await send_and_reset(host, port, data)
            # Many clients connect and vanish mid-frame at once.
            await asyncio.gather(*(send_and_reset(host, port, ENERGY[:4]) for _ in range(50)))
            assert modbus.parse_response(ENERGY, await rtu_transact(host, port, ENERGY))
            # On one connection: garbage, then silence, then a valid request is answered.
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"\x13\x37\x00\x01")
            await writer.drain()
            await asyncio.sleep(0.05)
            answered = False
            for _ in range(3):
                writer.write(ENERGY)
                await writer.drain()
                frame = await read_rtu_frame(reader, 0.3)
                if frame:
                    assert modbus.parse_response(ENERGY, frame)
                    answered = True
                    break
            writer.close()
            assert answered

    arun(scenario())


def test_modbus_tcp_survives_abuse() -> None:
    async def scenario() -> None:
        sim = Simulator(SimConfig(meters=1, transport="tcp"), SimClock(T0, speed=1))
        async with sim:
            host, port = sim.endpoints[0].host, sim.endpoints[0].port
            rng = random.Random(4)
            abuse = [mbap(1, ENERGY[1:-2], pid=7), mbap(2, b"\x04"), mbap(3, b"\x63\x00"),
                     struct.pack(">HHHB", 4, 0, 0, 1), struct.pack(">HHHB", 5, 0, 0xFFFF, 1),
                     mbap(6, ENERGY[1:-2], unit=0), mbap(7, ENERGY[1:-2], unit=255)]
            abuse += [rng.randbytes(rng.randrange(1, 600)) for _ in range(40)]
            for data in abuse:
                await send_and_reset(host, port, data)
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(data)
                await writer.drain()
                try:
                    await asyncio.wait_for(reader.read(300), 0.02)
                except asyncio.TimeoutError:
                    pass
                writer.close()
            answer = await tcp_energy(host, port)
            assert answer[7] == 4 and answer[8] == 8  # fc 04, 8 data bytes

    arun(scenario())


def test_disconnect_while_a_delayed_answer_is_pending() -> None:
    async def scenario() -> None:
        sim = Simulator(SimConfig(meters=1), SimClock(T0, speed=1))
        async with sim:
            host, port = sim.endpoints[0].host, sim.endpoints[0].port
            fault = sim.faults.add("delay", "hh000-meter", delay_s=0.3)
            for _ in range(5):
                await send_and_reset(host, port, ENERGY)
            await asyncio.sleep(0.5)
            sim.faults.remove(fault)
            assert modbus.parse_response(ENERGY, await rtu_transact(host, port, ENERGY))

    arun(scenario())
