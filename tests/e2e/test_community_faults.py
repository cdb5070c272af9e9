"""End to end, with faults: simulated households, the real firmware (MicroPython unix port for
5 meters, CPython fleets for 100), the gateway process and a real Mosquitto. After each run the
invariants must hold: every record in the ledger exactly once, `tmeter ledger verify` passes,
settled intervals balance at the feeder, no award applied outside its interval."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from sim_hardware.harness.community import RunResult
from sim_hardware.harness.pytest_plugin import RunCommunity
from sim_hardware.harness.scenario import FaultStep, Scenario


SCENARIOS = Path(__file__).resolve().parents[2] / "bench" / "scenarios"


def every_fault(hours: float) -> list[FaultStep]:
    """One of each fault, spread over the run (times in simulated hours)."""
    h = hours / 10
    return [
        FaultStep(at_h=1 * h, action="broker_restart", down_s=3),
        FaultStep(at_h=2.5 * h, action="gateway_kill", down_s=2),
        FaultStep(at_h=3.5 * h, action="meter_offline", target="hh001", intervals=8),
        FaultStep(at_h=6.5 * h, action="modbus_storm", target="hh*-meter", intervals=3, rate=0.5),
        FaultStep(at_h=7.0 * h, action="link_delay", target="hh002", intervals=3, delay_s=0.3),
        FaultStep(at_h=8.0 * h, action="meter_kill", target="hh003", intervals=2),
    ]


def assert_invariants(result: RunResult) -> None:
    report = result.report
    assert result.drained, "records still unacknowledged or intervals unsettled after the drain"
    assert report.ok, "\n".join(f"{c.name}: {c.detail}" for c in report.failures())
    assert len(result.community.events) == len(result.community.scenario.faults)


def assert_faults_left_their_marks(result: RunResult) -> None:
    """The faults really happened: the gateway started twice, the killed meter booted twice,
    the offline meter's reconnects were refused by its cut link, readings were flagged."""
    community = result.community
    assert community.gateway is not None and community.gateway.starts == 2
    state = json.loads((community.out / "meters" / "hh003" / "state.json").read_text())
    assert state["boot"] == 2
    proxy = next(m.proxy for m in community.meters if m.meter == "hh001")
    assert proxy is not None and proxy.stats.refused > 0
    with sqlite3.connect(community.db_path) as db:
        flagged = db.execute("SELECT COUNT(*) FROM readings WHERE flags & 2").fetchone()[0]
    assert flagged > 0  # the Modbus storm left meters offline at some boundaries


@pytest.mark.micropython
@pytest.mark.mosquitto
def test_five_micropython_meters_survive_every_fault(run_community: RunCommunity) -> None:
    """The shipped scenario file, through the bench's pytest fixture."""
    result = run_community(SCENARIOS / "faults.toml", drain_s=90)
    assert result.community.scenario.runtime == "micropython" and result.community.scenario.meters == 5
    assert_invariants(result)
    assert_faults_left_their_marks(result)


@pytest.mark.mosquitto
def test_hundred_cpython_meters_survive_every_fault(run_community: RunCommunity) -> None:
    # Four simulated hours hold every fault, spaced as before in proportion (the last,
    # meter_kill, ends at 3.7 h): 60 s at 240x instead of the 75 s of five hours.
    hours = 4.0
    scenario = Scenario(name="faults-cpython", meters=100, hours=hours, speed=240, poll_s=150,
                        runtime="cpython", faults=every_fault(hours))
    result = run_community(scenario, drain_s=120)
    assert_invariants(result)
    assert_faults_left_their_marks(result)


@pytest.mark.micropython
@pytest.mark.mosquitto
def test_keys_rotated_over_mqtt_in_a_running_community(run_community: RunCommunity) -> None:
    """`tmeter fw rotate-key` on two of five MicroPython meters while the gateway process runs,
    one of them power-cut after: every reading in the ledger once and verified, each rotated
    meter on key 2 with key 1 retired by the gateway, the others untouched."""
    scenario = Scenario(name="key-rotation", meters=5, hours=3, speed=720, runtime="micropython",
                        faults=[FaultStep(at_h=1.0, action="key_rotate", target="hh001"),
                                FaultStep(at_h=1.5, action="key_rotate", target="hh002"),
                                FaultStep(at_h=2.0, action="meter_kill", target="hh001", intervals=2)])
    result = run_community(scenario, drain_s=90)
    assert_invariants(result)
    rotated = result.community.disruptions.rotated
    assert sorted(rotated) == ["hh001", "hh002"]
    assert all(line.startswith(f"{m}: signs with key 2 now") for m, line in rotated.items()), rotated
    with sqlite3.connect(result.community.db_path) as db:
        keys = {(m, kid): retired is not None for m, kid, retired in
                db.execute("SELECT meter, kid, retired FROM meter_keys")}
        status = {m: json.loads(body)["kid"] for m, body in
                  db.execute("SELECT meter, body FROM meter_status")}
    for m in ("hh001", "hh002"):
        assert keys[(m, 1)] and not keys[(m, 2)], keys  # the old key retired, the new one valid
        assert status[m] == 2
    assert {m for m, kid in keys if kid > 1} == {"hh001", "hh002"}
