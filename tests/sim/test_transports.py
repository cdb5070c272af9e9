"""An independent Modbus client (pymodbus) reads the simulated devices correctly over every
transport: the registers it receives are the model's values at the instant the device served the
request, encoded as the maps say."""

from __future__ import annotations

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.framer import FramerType

from protocols import registers
from sim_hardware.simulator.clock import SimClock
from sim_hardware.simulator.server import SimConfig, Simulator
from tests.sim.conftest import T0, arun


def _client(sim: Simulator, endpoint_index: int = 0, tty: str | None = None):
    endpoint = sim.endpoints[endpoint_index]
    if endpoint.transport == "serial":
        return AsyncModbusSerialClient(tty, framer=FramerType.RTU, baudrate=9600, timeout=2,
                                       retries=0)
    framer = FramerType.SOCKET if endpoint.transport == "tcp" else FramerType.RTU
    return AsyncModbusTcpClient(endpoint.host, port=endpoint.port, framer=framer, timeout=2,
                                retries=0)


async def _check_meter(sim: Simulator, client, device_id: str) -> None:
    device = sim.devices[device_id]
    regmap = device.regmap
    names = [e[0] for e in regmap.inputs]
    for fc, start, count in regmap.plan(names):
        rr = await client.read_input_registers(start, count=count, device_id=device.unit)
        assert not rr.isError(), rr
        values = sim.neighbourhood.meter_values(device_id, device.last_t)
        for entry in regmap.inputs:
            name, address = entry[0], entry[1]
            if start <= address < start + count:
                got = rr.registers[address - start:address - start + 2]
                assert got == regmap.encode(name, values[name]), name
    # Energies as the firmware reads them: integer Wh without floats.
    block = (4, 0x48, 4)
    rr = await client.read_input_registers(0x48, count=4, device_id=device.unit)
    imp_wh, exp_wh = sim.neighbourhood.meter_energy_wh(device_id, device.last_t)
    assert abs(regmap.scaled("import_energy", block, rr.registers, 1000) - imp_wh) <= 1
    assert abs(regmap.scaled("export_energy", block, rr.registers, 1000) - exp_wh) <= 1


async def _check_battery(sim: Simulator, client, index: int) -> None:
    h = sim.household(index)
    device = sim.devices[h.battery_id]
    regmap = device.regmap
    rr = await client.write_registers(0x10, regmap.encode("setpoint", -1200),
                                      device_id=device.unit)
    assert not rr.isError(), rr
    rr = await client.read_holding_registers(0, count=0x28, device_id=device.unit)
    assert not rr.isError(), rr
    block = (3, 0, 0x28)
    assert regmap.scaled("setpoint", block, rr.registers) == -1200
    assert regmap.scaled("power", block, rr.registers) == -1200
    assert regmap.scaled("capacity", block, rr.registers) == h.battery.spec.capacity_wh
    assert regmap.scaled("status", block, rr.registers) == registers.BATTERY_STATUS_CHARGING
    assert sim.battery_power_w(index) == -1200


async def _scenario(config: SimConfig, tty: str | None = None) -> None:
    sim = Simulator(config, SimClock(T0 + 12 * 3600, speed=30))
    async with sim:
        client = _client(sim, 0, tty)
        await client.connect()
        try:
            await _check_meter(sim, client, "hh000-meter")
            await _check_battery(sim, client, 0)
        finally:
            client.close()
        feeder = _client(sim, len(sim.endpoints) - 1, tty)
        if sim.endpoints[-1].transport != "serial":
            await feeder.connect()
            try:
                await _check_meter(sim, feeder, "feeder-meter")
            finally:
                feeder.close()


@pytest.mark.parametrize("transport", ["rtu-tcp", "tcp"])
def test_pymodbus_client_over_tcp_transports(transport: str) -> None:
    arun(_scenario(SimConfig(meters=2, transport=transport)))


def test_pymodbus_client_over_serial_pty(pty_pair: tuple[str, str]) -> None:
    server_tty, client_tty = pty_pair
    config = SimConfig(meters=1, transport="serial", serial_ports=[server_tty])
    arun(_scenario(config, client_tty))


def test_sdm120_and_low_word_first_battery() -> None:
    async def scenario() -> None:
        config = SimConfig(meters=1, meter_kind="sdm120",
                           battery_word_order=registers.LOW_FIRST)
        sim = Simulator(config, SimClock(T0 + 12 * 3600, speed=30))
        async with sim:
            client = _client(sim)
            await client.connect()
            try:
                assert sim.devices["hh000-meter"].regmap.name == "sdm120"
                await _check_meter(sim, client, "hh000-meter")
                await _check_battery(sim, client, 0)
                rr = await client.read_holding_registers(0x10, count=2, device_id=2)
                assert rr.registers == [(-1200) & 0xFFFF, 0xFFFF]  # low word first on the wire
            finally:
                client.close()

    arun(scenario())


def test_simulator_thread_for_synchronous_callers() -> None:
    from pymodbus.client import ModbusTcpClient

    from sim_hardware.simulator.server import SimulatorThread

    with SimulatorThread(SimConfig(meters=1), SimClock(T0, speed=60)) as sim:
        endpoint = sim.endpoints[0]
        client = ModbusTcpClient(endpoint.host, port=endpoint.port, framer=FramerType.RTU,
                                 timeout=1, retries=0)
        assert client.connect()
        try:
            assert not client.read_input_registers(0x48, count=4, device_id=1).isError()
            fault = sim.faults.add("exception", "hh000-meter", code=4)
            rr = client.read_input_registers(0x48, count=4, device_id=1)
            assert rr.isError() and rr.exception_code == 4
            sim.faults.remove(fault)
            rr = client.write_registers(0x10, registers.battery().encode("setpoint", 700),
                                        device_id=2)
            assert not rr.isError() and sim.battery_power_w(0) == 700
        finally:
            client.close()
