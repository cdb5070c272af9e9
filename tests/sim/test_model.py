"""The household model without the Modbus layer: the shared clock, battery limits, self-
consumption, demand registers and power loss, all exact."""

from __future__ import annotations

import time

import pytest

from protocols import registers
from sim_hardware.simulator.battery import MODE_GRID_TARGET, MODE_SELF_CONSUMPTION
from sim_hardware.simulator.clock import SimClock
from sim_hardware.simulator.faults import FaultSchedule
from sim_hardware.simulator.household import Neighbourhood, Household, build_neighbourhood
from tests.sim.conftest import T0

NOON = T0 + 12 * 3600


def community(n: int = 1, faults: FaultSchedule | None = None) -> Neighbourhood:
    return build_neighbourhood(n, 0, "synthetic", NOON, faults or FaultSchedule(), ["sdm630"] * n)


def test_clock_formula_and_triple() -> None:
    clock = SimClock(start=1000.0, epoch=time.time() - 10.0, speed=60.0)
    assert clock.now() == pytest.approx(1000.0 + 600.0, abs=1.0)
    assert clock.at_wall(clock.epoch + 2.0) == 1120.0
    assert clock.wall_at(clock.at_wall(12345.0)) == pytest.approx(12345.0)
    assert clock.real_seconds(600.0) == 10.0
    again = SimClock.from_dict(clock.to_dict())
    assert again.to_dict() == clock.to_dict() == {"start": 1000.0, "epoch": clock.epoch,
                                                  "speed": 60.0}
    real = SimClock.realtime()
    assert real.now() == pytest.approx(time.time(), abs=0.1)
    with pytest.raises(ValueError):
        SimClock(speed=0)


def set_battery(c: Neighbourhood, h: Household, t: float, **changes: int) -> None:
    def change(hh: Household) -> None:
        for name, value in changes.items():
            setattr(hh.battery, name, value)

    c.change_household(h, t, change)


def test_battery_charges_until_full_exactly() -> None:
    c = community()
    h = c.households[0]
    b = h.battery
    set_battery(c, h, NOON, setpoint_w=-b.spec.max_charge_w)
    start = c.battery_values(h, NOON)
    hours = (b.e_max - b.energy_wh) / (b.spec.max_charge_w * b.spec.eta_charge)
    full_at = NOON + hours * 3600
    before = c.battery_values(h, full_at - 1)
    assert before["power"] == -b.spec.max_charge_w
    assert before["status"] == registers.BATTERY_STATUS_CHARGING
    after = c.battery_values(h, full_at + 1)
    assert after["power"] == 0 and after["status"] == registers.BATTERY_STATUS_FULL
    assert after["soc"] == 10000 and b.energy_wh == b.e_max
    charged = after["charged_energy"] - start["charged_energy"]
    assert charged == int(b.spec.max_charge_w * hours)  # AC energy taken in, to the Wh


def test_battery_stops_at_soc_min() -> None:
    c = community()
    h = c.households[0]
    b = h.battery
    set_battery(c, h, NOON, setpoint_w=b.spec.max_discharge_w, soc_min_centi=3000)
    hours = (b.energy_wh - b.e_min) * b.spec.eta_discharge / b.spec.max_discharge_w
    empty_at = NOON + hours * 3600
    assert c.battery_values(h, empty_at - 1)["power"] == b.spec.max_discharge_w
    after = c.battery_values(h, empty_at + 1)
    assert after["power"] == 0 and after["status"] == registers.BATTERY_STATUS_EMPTY
    assert after["soc"] == 3000


def test_self_consumption_keeps_the_grid_exchange_at_zero() -> None:
    c = community()
    h = c.households[0]
    set_battery(c, h, NOON, mode=MODE_SELF_CONSUMPTION, soc_min_centi=0)
    imp0, exp0 = c.meter_energy_wh(h.meter_id, NOON)
    later = NOON + 1800
    imp1, exp1 = c.meter_energy_wh(h.meter_id, later)
    assert 0 < h.battery.energy_at(later) < h.battery.e_max  # within limits all along
    assert imp1 - imp0 == pytest.approx(0.0, abs=1e-6)
    assert exp1 - exp0 == pytest.approx(0.0, abs=1e-6)
    load, pv = h.profile.interval_energy_wh(NOON, later)
    values = c.battery_values(h, later)
    assert values["power"] == round(h.load_w - h.pv_w)  # the battery covers the difference


def test_the_grid_target_holds_the_exchange_in_one_direction_only() -> None:
    c = community()
    h = c.households[0]
    b = h.battery
    later = NOON + 900
    # Hold an export of 300 W: the battery gives net + 300 W, whatever the sign of net.
    set_battery(c, h, NOON, mode=MODE_GRID_TARGET, grid_setpoint_w=300, soc_min_centi=0)
    imp0, exp0 = c.meter_energy_wh(h.meter_id, NOON)
    imp1, exp1 = c.meter_energy_wh(h.meter_id, later)
    assert 0 < b.energy_at(later) < b.e_max
    assert exp1 - exp0 - (imp1 - imp0) == pytest.approx(300 * 900 / 3600, abs=1e-6)
    values = c.battery_values(h, later)
    net_w = h.load_w - h.pv_w  # what the house draws now without the battery
    assert values["power"] == round(net_w + 300)
    # The same target with the battery allowed only the other way: it stays idle, the grid
    # takes the difference (a charge-only battery never discharges to meet a target).
    wrong_way = ({"target_discharge_w": 0} if net_w + 300 > 0 else {"target_charge_w": 0})
    set_battery(c, h, later, **wrong_way)
    assert c.battery_values(h, later + 600)["power"] == 0
    set_battery(c, h, later + 600, target_charge_w=b.spec.max_charge_w,
                target_discharge_w=b.spec.max_discharge_w)
    values = c.battery_values(h, later + 1200)
    assert values["power"] == round(h.load_w - h.pv_w + 300)


def test_demand_is_the_mean_power_of_the_last_period() -> None:
    c = community()
    h = c.households[0]
    hour = (NOON // 3600 + 1) * 3600
    imp0, exp0 = c.meter_energy_wh(h.meter_id, hour)
    imp1, exp1 = c.meter_energy_wh(h.meter_id, hour + 3600)
    values = c.meter_values(h.meter_id, hour + 3600 + 1)
    assert values["power_demand"] == pytest.approx((imp1 - imp0) - (exp1 - exp0))
    assert values["max_power_demand"] >= values["power_demand"]


def test_power_loss_freezes_the_house_and_the_feeder_sees_it() -> None:
    faults = FaultSchedule()
    c = community(2, faults)
    faults.add("power_loss", "hh000-meter", start=NOON + 600, end=NOON + 1200)
    at_600 = {m: c.meter_energy_wh(m, NOON + 600) for m in ("hh000-meter", "hh001-meter",
                                                             "feeder-meter")}
    assert c.meter_energy_wh("hh000-meter", NOON + 1199) == at_600["hh000-meter"]
    at_1200 = {m: c.meter_energy_wh(m, NOON + 1200) for m in at_600}
    net = {m: (at_1200[m][0] - at_1200[m][1]) - (at_600[m][0] - at_600[m][1]) for m in at_600}
    assert net["feeder-meter"] == pytest.approx(net["hh001-meter"], rel=1e-9)
    assert net["hh000-meter"] == 0.0
    e0 = at_600["hh000-meter"]
    assert c.meter_energy_wh("hh000-meter", NOON + 1300) != e0  # back on


def test_runtime_fault_never_rewrites_what_was_read() -> None:
    faults = FaultSchedule()
    c = community(1, faults)
    seen = c.meter_energy_wh("hh000-meter", NOON + 900)
    faults.add("power_loss", "hh000-meter", start=NOON + 300)  # added late, "in the past"
    assert c.meter_energy_wh("hh000-meter", NOON + 900) == seen
    assert c.meter_energy_wh("hh000-meter", NOON + 1800) == seen  # frozen from now on
