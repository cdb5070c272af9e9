"""The firmware, unmodified, under the real MicroPython unix port against sim_hardware devices
and a real Mosquitto: signed readings arrive and verify in CPython, bids arrive before gate
closure, and an award changes the simulated battery's power."""

from __future__ import annotations

import time

import pytest

from protocols import meterlink
from tests.firmware import harness

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]


def test_readings_bids_and_award(tmp_path, mosquitto, sim, clock, gateway, meters):
    link = harness.device_link(sim, 0)
    cfg = harness.write_config(tmp_path / "m01", "m01", mosquitto.port, link, clock)
    meters.append(harness.Meter(cfg).start())
    # A whole interval needs a read within a quarter interval (250 ms wall here) either side of
    # each boundary; on a loaded CI machine a stalled poll makes one record partial, so wait for
    # a whole one rather than assume it is the second.
    gateway.wait_for(lambda g: len(g.snapshot("m01")) >= 3 and len(g.bids) >= 2
                     and any(r["flags"] == 0 for r in g.snapshot("m01")[1:]), 30,
                     "three readings, one of them a whole interval, and two bids")

    # Readings: verified by FakeGateway through protocols.messages.decode (tag first).
    readings = gateway.snapshot("m01")
    for r in readings:
        assert r["t0"] <= r["t1"] and r["imp_wh"] >= 0 and r["exp_wh"] >= 0
        assert r["iv"] * 60 <= r["t1"] + 60
    assert all(r["flags"] & ~meterlink.FLAG_PARTIAL == 0 for r in readings[1:]), readings
    for a, b in zip(readings[1:], readings[2:]):
        assert b["iv"] == a["iv"] + 1 and b["t0"] == a["t1"]
        assert b["cnt_imp_wh"] - a["cnt_imp_wh"] == b["imp_wh"]
    # Counters are the simulated meter's own (float32 kWh turned into integer Wh), never ahead.
    last = readings[-1]
    now_imp, now_exp = sim.meter_energy_wh(sim.household(0).meter_id)
    assert last["cnt_imp_wh"] <= now_imp + 1 and last["cnt_exp_wh"] <= now_exp + 1
    assert now_imp - last["cnt_imp_wh"] < 2000 and now_exp - last["cnt_exp_wh"] < 2000

    # Bids: before the gate closure of their interval (simulated clock), valid curves.
    with gateway.lock:
        bids = list(gateway.bids)
    for wall, bid in bids:
        sim_t = clock.at_wall(wall)
        assert sim_t < bid["iv"] * 60 - 10, (sim_t, bid)
        assert 1 <= len(bid["curve"]) <= 16

    # Award: for the interval after next, a discharge the household cannot cover alone.
    iv = int(clock.now()) // 60 + 1
    before = sim.battery_power_w(0)
    gateway.send_award("m01", iv, 40)  # sell 40 Wh in one minute: battery must discharge
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if int(clock.now()) // 60 == iv and sim.battery_power_w(0) > 0:
            break
        time.sleep(0.05)
    assert int(clock.now()) // 60 == iv, "award interval passed without battery change"
    assert sim.battery_power_w(0) > 0 and sim.battery_power_w(0) != before
    state = sim.battery_state(0)
    assert state["setpoint"] <= state["max_discharge_power"]
    # Afterwards, without an award, the battery falls back to self-consumption.
    deadline = time.monotonic() + 5
    while int(clock.now()) // 60 <= iv + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    out = meters[0].output()
    assert "award iv %d" % iv in out, out[-2000:]
    assert "Traceback" not in out, out
