"""Every fault type is observable by a client exactly as configured, from the programmatic API
(changed while the simulator runs) and from a faults file."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerType

from protocols import modbus
from protocols.errors import ProtocolError
from sim_hardware.simulator.clock import SimClock
from sim_hardware.simulator.faults import FaultSchedule, load_faults
from sim_hardware.simulator.server import SimConfig, Simulator
from tests.sim.conftest import T0, arun, rtu_transact

NOON = T0 + 12 * 3600
ENERGY = modbus.build_read(1, 4, 0x48, 4)
BATTERY = modbus.build_read(2, 3, 0x10, 2)


def simulator(meters: int = 1, speed: float = 60.0) -> Simulator:
    return Simulator(SimConfig(meters=meters), SimClock(NOON, speed=speed))


async def ask(sim: Simulator, frame: bytes, bus: int = 0, timeout: float = 0.3) -> bytes:
    endpoint = sim.endpoints[bus]
    return await rtu_transact(endpoint.host, endpoint.port, frame, timeout)


def test_timeout_only_on_the_configured_device_and_rate() -> None:
    async def scenario() -> None:
        async with simulator() as sim:
            fault = sim.faults.add("timeout", "hh000-meter")
            assert await ask(sim, ENERGY) == b""  # no answer at all
            assert modbus.parse_response(BATTERY, await ask(sim, BATTERY))  # unit 2 answers
            sim.faults.remove(fault)
            assert modbus.parse_response(ENERGY, await ask(sim, ENERGY))
            # rate 0.5: exactly every second request goes unanswered.
            sim.faults.add("timeout", "hh000-meter", rate=0.5)
            answered = [bool(await ask(sim, ENERGY, timeout=0.2)) for _ in range(8)]
            assert answered == [True, False] * 4

    arun(scenario())


def test_timeout_seen_by_pymodbus_client() -> None:
    async def scenario() -> None:
        async with simulator() as sim:
            endpoint = sim.endpoints[0]
            client = AsyncModbusTcpClient(endpoint.host, port=endpoint.port,
                                          framer=FramerType.RTU, timeout=0.3, retries=0)
            await client.connect()
            try:
                sim.faults.add("timeout", "hh000-meter", duration=3600)
                with pytest.raises(ModbusIOException):
                    await client.read_input_registers(0x48, count=4, device_id=1)
            finally:
                client.close()

    arun(scenario())


def test_crc_corruption() -> None:
    async def scenario() -> None:
        async with simulator() as sim:
            sim.faults.add("crc", "hh000-meter", functions=(4,))
            frame = await ask(sim, ENERGY)
            assert len(frame) == modbus.expected_response_length(ENERGY)  # complete, but...
            with pytest.raises(ProtocolError) as info:
                modbus.parse_response(ENERGY, frame)
            assert info.value.code == "bad_crc"
            # ...only the configured device: the battery's answers are intact.
            assert modbus.parse_response(BATTERY, await ask(sim, BATTERY))
            assert sim.endpoints[0].stats.corrupted == 1

    arun(scenario())


def test_exception_code_and_function_filter() -> None:
    async def scenario() -> None:
        async with simulator() as sim:
            sim.faults.add("exception", "hh000-meter", code=6, functions=(4,))
            with pytest.raises(ProtocolError) as info:
                modbus.parse_response(ENERGY, await ask(sim, ENERGY))
            assert info.value.code == "modbus_exception" and info.value.exception_code == 6
            holding = modbus.build_read(1, 3, 0x14, 2)
            assert modbus.parse_response(holding, await ask(sim, holding))  # fc 03 unaffected
            endpoint = sim.endpoints[0]
            client = AsyncModbusTcpClient(endpoint.host, port=endpoint.port,
                                          framer=FramerType.RTU, timeout=1, retries=0)
            await client.connect()
            rr = await client.read_input_registers(0x48, count=4, device_id=1)
            client.close()
            assert rr.isError() and rr.exception_code == 6

    arun(scenario())


def test_delay() -> None:
    async def scenario() -> None:
        async with simulator() as sim:
            sim.faults.add("delay", "hh000-meter", delay_s=0.4)
            began = time.monotonic()
            frame = await ask(sim, ENERGY, timeout=2.0)
            assert time.monotonic() - began >= 0.4
            assert modbus.parse_response(ENERGY, frame)
            assert await ask(sim, ENERGY, timeout=0.2) == b""  # a 0.2 s master gives up

    arun(scenario())


def energy_wh(frame: bytes) -> tuple[int, int]:
    regs = modbus.parse_response(ENERGY, frame)
    from protocols import registers

    m = registers.sdm630()
    return (m.scaled("import_energy", (4, 0x48, 4), regs, 1000),
            m.scaled("export_energy", (4, 0x48, 4), regs, 1000))


def test_counter_reset_replaces_the_meter() -> None:
    async def scenario() -> None:
        async with simulator(speed=600) as sim:
            before = energy_wh(await ask(sim, ENERGY))
            assert before[0] > 100_000
            reset_at = sim.clock.now() + 60
            sim.faults.add("counter_reset", "hh000-meter", start=reset_at, value_kwh=5.0)
            await sim.clock.sleep_until(reset_at + 30)
            after = energy_wh(await ask(sim, ENERGY))
            t = sim.devices["hh000-meter"].last_t
            # The new meter started at 5 kWh import, 0 export, and counts from reset_at.
            h = sim.household(0)
            load, pv = h.profile.interval_energy_wh(reset_at, t)
            assert 5000 <= after[0] <= 5000 + load + 1
            assert after[1] <= pv + 1
            assert after[0] + after[1] > 5000  # counting again

    arun(scenario())


def test_power_loss_and_return() -> None:
    async def scenario() -> None:
        async with simulator(speed=600) as sim:
            write = modbus.build_write_multiple(2, 0x10, [0xFFFF, 0xFC18])  # charge 1000 W
            assert modbus.parse_response(write, await ask(sim, write))
            assert sim.battery_power_w(0) == -1000
            outage = sim.faults.add("power_loss", "hh000-meter")  # the house loses power
            frozen = sim.meter_energy_wh("hh000-meter")
            assert await ask(sim, ENERGY) == b"" and await ask(sim, BATTERY) == b""
            await sim.clock.sleep_until(sim.clock.now() + 300)
            assert sim.meter_energy_wh("hh000-meter") == pytest.approx(frozen, abs=1e-6)
            assert sim.battery_power_w(0) == 0
            sim.faults.end_now(outage)
            frame = await ask(sim, BATTERY)
            assert modbus.parse_response(BATTERY, frame) == [0, 0]  # setpoint back to 0
            assert energy_wh(await ask(sim, ENERGY))[0] >= int(frozen[0])

    arun(scenario())


def test_battery_only_power_loss_and_feeder_outage() -> None:
    async def scenario() -> None:
        async with simulator() as sim:
            sim.faults.add("power_loss", "hh000-battery", duration=3600)
            assert await ask(sim, BATTERY) == b""
            assert modbus.parse_response(ENERGY, await ask(sim, ENERGY))  # the meter still talks
            sim.faults.add("power_loss", "feeder-meter", duration=3600)
            assert await ask(sim, ENERGY, bus=1) == b""

    arun(scenario())


def test_device_patterns_make_storms() -> None:
    async def scenario() -> None:
        async with simulator(meters=3) as sim:
            sim.faults.add("exception", "hh*-meter", code=4)
            for bus in range(3):
                with pytest.raises(ProtocolError):
                    modbus.parse_response(ENERGY, await ask(sim, ENERGY, bus=bus))
            assert modbus.parse_response(ENERGY, await ask(sim, ENERGY, bus=3))  # the feeder

    arun(scenario())


def test_fault_windows_follow_simulated_time() -> None:
    async def scenario() -> None:
        async with simulator(speed=600) as sim:
            now = sim.clock.now()
            sim.faults.add("timeout", "hh000-meter", start=now + 120, duration=120)
            assert await ask(sim, ENERGY)
            await sim.clock.sleep_until(now + 150)
            assert await ask(sim, ENERGY) == b""
            await sim.clock.sleep_until(now + 250)
            assert await ask(sim, ENERGY)

    arun(scenario())


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_faults_file(tmp_path: Path, fmt: str) -> None:
    entries = [{"kind": "exception", "device": "hh000-meter", "start": 60, "duration": 600,
                "code": 2, "functions": [4]},
               {"kind": "counter_reset", "device": "hh001-meter", "start": 3600},
               {"kind": "timeout", "device": "feeder-meter", "start_unix": 1.0e9, "rate": 0.25}]
    path = tmp_path / f"faults.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps({"faults": entries}))
    else:
        path.write_text("\n".join(
            "[[fault]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in e.items())
            for e in entries))
    schedule = FaultSchedule()
    faults = load_faults(path, schedule, run_start=T0)
    assert [(f.kind, f.device, f.start, f.end) for f in faults] == [
        ("exception", "hh000-meter", T0 + 60, T0 + 660),
        ("counter_reset", "hh001-meter", T0 + 3600, math.inf),
        ("timeout", "feeder-meter", 1.0e9, math.inf)]
    assert faults[0].code == 2 and faults[0].functions == (4,) and faults[2].rate == 0.25
    assert schedule.request_fault("hh000-meter", T0 + 100, 4) is faults[0]
    assert schedule.request_fault("hh000-meter", T0 + 100, 3) is None
    assert schedule.request_fault("hh000-meter", T0 + 700, 4) is None


def test_faults_file_rejects_mistakes(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    for entry in ({"kind": "meltdown", "device": "x"}, {"device": "x"},
                  {"kind": "timeout", "device": "x", "colour": "red"},
                  {"kind": "timeout", "device": "x", "rate": 2}):
        path.write_text(json.dumps({"faults": [entry]}))
        with pytest.raises(ValueError):
            load_faults(path, FaultSchedule(), 0.0)


def test_fault_added_from_another_thread_while_serving() -> None:
    async def scenario() -> None:
        async with simulator() as sim:
            await asyncio.to_thread(sim.faults.add, "timeout", "hh000-meter")
            assert await ask(sim, ENERGY) == b""
            await asyncio.to_thread(sim.faults.clear)
            assert await ask(sim, ENERGY)

    arun(scenario())
