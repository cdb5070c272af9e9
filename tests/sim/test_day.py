"""A simulated day at high speed, read over Modbus like the firmware does: each meter's
import/export counters equal the integral of its household model within 0.1 %, the feeder meter
equals the sum of the households within 0.1 %, and a battery following setpoints stays inside
its limits with its energy accounted for."""

from __future__ import annotations

import math

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.framer import FramerType

from sim_hardware.simulator.profiles import Profile
from sim_hardware.simulator.server import SimConfig, Simulator
from tests.sim.conftest import T0, HeldClock, arun

DAY = 86400.0
SPEED = 8640.0  # a day in ten wall seconds
ACTIVE = 2  # the household whose battery follows setpoints during the day


def reference_wh(profile: Profile, t0: float, t1: float) -> tuple[float, float]:
    """Import and export of a household without battery, integrated minute by minute from the
    public profile API (independent of the simulator's event engine)."""
    imp = exp = 0.0
    t = t0
    while t < t1:
        end = min(t1, (math.floor(t / 60) + 1) * 60)
        net = profile.load_w(t) - profile.pv_w(t)
        imp += max(net, 0.0) * (end - t) / 3600
        exp += max(-net, 0.0) * (end - t) / 3600
        t = end
    return imp, exp


async def read_energy(client: AsyncModbusTcpClient, sim: Simulator, device_id: str
                      ) -> tuple[int, int]:
    device = sim.devices[device_id]
    rr = await client.read_input_registers(0x48, count=4, device_id=device.unit)
    assert not rr.isError(), rr
    block = (4, 0x48, 4)
    return (device.regmap.scaled("import_energy", block, rr.registers, 1000),
            device.regmap.scaled("export_energy", block, rr.registers, 1000))


async def read_battery(client: AsyncModbusTcpClient, sim: Simulator, index: int) -> dict:
    device = sim.devices[sim.household(index).battery_id]
    rr = await client.read_holding_registers(0, count=0x28, device_id=device.unit)
    assert not rr.isError(), rr
    return {name: device.regmap.scaled(name, (3, 0, 0x28), rr.registers)
            for name in ("soc", "charged_energy", "discharged_energy", "power")}


async def set_battery(client: AsyncModbusTcpClient, sim: Simulator, index: int, watts: int) -> None:
    device = sim.devices[sim.household(index).battery_id]
    rr = await client.write_registers(0x10, device.regmap.encode("setpoint", watts),
                                      device_id=device.unit)
    assert not rr.isError(), rr


async def day() -> None:
    clock = HeldClock(T0, SPEED, hold_s=1.0, until=T0 + DAY)
    sim = Simulator(SimConfig(meters=3, meter_kind="mixed"), clock)
    async with sim:
        clients = {}
        for endpoint in sim.endpoints:
            clients[endpoint.name] = AsyncModbusTcpClient(
                endpoint.host, port=endpoint.port, framer=FramerType.RTU, timeout=2, retries=1)
            await clients[endpoint.name].connect()
        bus = {d: sim.endpoint_of(d).name for d in sim.devices}
        meters = [h.meter_id for h in sim.households] + ["feeder-meter"]

        start = {m: await read_energy(clients[bus[m]], sim, m) for m in meters}
        assert all(sim.devices[m].last_t == T0 for m in meters)
        bat0 = await read_battery(clients[bus[sim.household(ACTIVE).battery_id]], sim, ACTIVE)
        # The battery charges from noon, discharges in the evening, idles from 22:00.
        for hour, watts in ((12, -2500), (18, 1500), (22, 0)):
            await clock.sleep_until(T0 + hour * 3600)
            await set_battery(clients[bus[sim.household(ACTIVE).battery_id]], sim, ACTIVE, watts)
            state = sim.battery_state(ACTIVE)
            assert 0 <= state["soc"] <= 10000
        await clock.sleep_until(T0 + DAY)
        end = {m: await read_energy(clients[bus[m]], sim, m) for m in meters}
        assert all(sim.devices[m].last_t == T0 + DAY for m in meters)
        bat1 = await read_battery(clients[bus[sim.household(ACTIVE).battery_id]], sim, ACTIVE)
        for client in clients.values():
            client.close()

    delta = {m: (end[m][0] - start[m][0], end[m][1] - start[m][1]) for m in meters}
    for h in sim.households:
        imp, exp = delta[h.meter_id]
        if h.index != ACTIVE:
            ref_imp, ref_exp = reference_wh(h.profile, T0, T0 + DAY)
            assert abs(imp - ref_imp) <= 1e-3 * ref_imp + 2, (h.meter_id, imp, ref_imp)
            assert abs(exp - ref_exp) <= 1e-3 * max(ref_exp, 1.0) + 2, (h.meter_id, exp, ref_exp)
        else:
            # Net exchange = load - PV - battery AC energy out + battery AC energy in.
            load_wh, pv_wh = h.profile.interval_energy_wh(T0, T0 + DAY)
            battery_out = (bat1["discharged_energy"] - bat0["discharged_energy"]
                           - (bat1["charged_energy"] - bat0["charged_energy"]))
            assert bat1["charged_energy"] - bat0["charged_energy"] > 1000  # it did charge
            net_ref = load_wh - pv_wh - battery_out
            assert abs((imp - exp) - net_ref) <= 1e-3 * (load_wh + pv_wh) + 4
    households_net = sum(delta[h.meter_id][0] - delta[h.meter_id][1] for h in sim.households)
    feeder_net = delta["feeder-meter"][0] - delta["feeder-meter"][1]
    throughput = sum(delta[h.meter_id][0] + delta[h.meter_id][1] for h in sim.households)
    assert abs(feeder_net - households_net) <= 1e-3 * throughput, (feeder_net, households_net)


def test_simulated_day_counters_match_model_and_feeder() -> None:
    arun(day(), timeout=90)
