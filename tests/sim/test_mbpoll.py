"""mbpoll (the Debian command-line Modbus master) reads and writes the simulated devices over
Modbus TCP and over RTU on a socat pty pair."""

from __future__ import annotations

import asyncio
import re
import shutil

import pytest

from sim_hardware.simulator.clock import SimClock
from sim_hardware.simulator.server import SimConfig, Simulator
from tests.sim.conftest import T0, arun

MBPOLL = shutil.which("mbpoll")
pytestmark = pytest.mark.skipif(MBPOLL is None, reason="mbpoll is not installed (.ci/run does)")


async def mbpoll(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        MBPOLL or "mbpoll", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    return text


def values(text: str) -> dict[int, float]:
    """mbpoll prints one "[reference]: value" line per value."""
    return {int(ref): float(val) for ref, val in re.findall(r"\[(\d+)\]:\s+(-?[\d.eE+-]+)", text)}


async def check(sim: Simulator, link: list[str]) -> None:
    # Import and export energy: two float32 input registers from 0x48, high word first (-B).
    text = await mbpoll(*link, "-a", "1", "-0", "-r", "72", "-c", "2", "-t", "3:float", "-B",
                        "-1", "-o", "2")
    got = values(text)
    meter = sim.devices["hh000-meter"]
    want = sim.neighbourhood.meter_values("hh000-meter", meter.last_t)
    assert got[72] == pytest.approx(want["import_energy"], rel=1e-6)
    assert got[74] == pytest.approx(want["export_energy"], rel=1e-6)
    # A battery setpoint of -1500 W (charge) as a signed 32-bit holding register at 0x10.
    await mbpoll(*link, "-a", "2", "-0", "-r", "16", "-t", "4:int", "-B", "-1", "-o", "2",
                 "--", "-1500")
    assert sim.battery_state(0)["setpoint"] == -1500
    text = await mbpoll(*link, "-a", "2", "-0", "-r", "24", "-c", "1", "-t", "4", "-1", "-o", "2")
    assert values(text)[24] == sim.battery_state(0)["soc"]


def test_mbpoll_modbus_tcp() -> None:
    async def scenario() -> None:
        sim = Simulator(SimConfig(meters=1, transport="tcp"), SimClock(T0 + 43200, speed=10))
        async with sim:
            endpoint = sim.endpoints[0]
            await check(sim, ["-m", "tcp", "-p", str(endpoint.port), endpoint.host])

    arun(scenario())


def test_mbpoll_rtu_over_pty(pty_pair: tuple[str, str]) -> None:
    server_tty, client_tty = pty_pair

    async def scenario() -> None:
        config = SimConfig(meters=1, transport="serial", serial_ports=[server_tty])
        sim = Simulator(config, SimClock(T0 + 43200, speed=10))
        async with sim:
            # mbpoll's options come after the device for RTU; 9600 8N1 as the meter default.
            await check(sim, ["-m", "rtu", "-b", "9600", "-P", "none", "-s", "1", client_tty])

    arun(scenario())
