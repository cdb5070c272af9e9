"""The gateway's own clock jumping, both ways: at a restart (the real daemon, its clock set through
[clock] start in gateway.toml as a wall clock hours off would be) and while running (in-process,
a wall clock the test moves). Nothing is cleared or settled ahead of time, bids for real future
intervals are taken, /health says "clock", and the meters' readings' t1 decide what is believed."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from gateway.clock import Clock
from gateway.config import GatewayConfig
from gateway.daemon import GatewayThread
from protocols import messages
from sim_hardware.harness.mosquitto import MosquittoBroker
from tests.gateway.conftest import first_point_clearing, make_config, wait_until
from tests.gateway.meters import bid, reading
from tests.gateway.test_crash import start
from tests.gateway.test_storage_faults import Meters, gateway_toml, health, status, stop

pytestmark = pytest.mark.mosquitto
HOURS_3 = 3 * 3600
INTERVAL_S = 10  # short intervals: the first session waits three of them; the offsets are hours


def config(tmp_path: Path, broker: MosquittoBroker) -> GatewayConfig:
    cfg = make_config(tmp_path, broker, interval_s=INTERVAL_S, gate_closure_s=3)
    cfg.settlement.grace_s = 1
    return cfg


def with_clock(toml: Path, offset_s: float) -> None:
    """The gateway's clock ``offset_s`` away from the real one from its next start on."""
    text = toml.read_text().split("[clock]")[0]
    toml.write_text(text + f"[clock]\nstart = {time.time() + offset_s}\n")


def not_open(db: str) -> set[tuple[int, str]]:
    conn = sqlite3.connect(db)
    try:
        return set(conn.execute("SELECT iv, state FROM intervals WHERE state != 'open'"))
    finally:
        conn.close()


def max_iv(db: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT MAX(iv) FROM intervals").fetchone()[0]
    finally:
        conn.close()


def real_iv() -> int:
    return messages.interval_index(time.time(), INTERVAL_S)


def fresh_readings(meters: Meters) -> None:
    """Each meter's reading of the interval that just ended, t1 now: what NTP-synced meters send."""
    iv = real_iv() - 1
    for spec in meters.specs:
        topic, payload, key = reading(spec, meters.cfg.community, iv, INTERVAL_S)
        body = messages.reading(spec.meter, spec.kid, spec.boot, spec.seq, iv, iv * INTERVAL_S, int(time.time()),
                                100, 20, spec.counter_imp, spec.counter_exp, 0)
        meters.pub.publish(topic, messages.encode(body, spec.key), qos=1)


def first_session(cfg: GatewayConfig, toml: Path, port: int, meters: Meters, log: Path) -> None:
    proc = start(toml, log)
    try:
        assert wait_until(lambda: health(port)[0] == 200, 30), health(port)
        # An interval of the community's has ended (earlier readings would be quarantined).
        assert wait_until(lambda: status(port)["counters"].get("cleared", 0) >= 3, 60)
        fresh_readings(meters)
        assert wait_until(lambda: status(port)["counters"].get("stored", 0) >= len(meters.specs), 15)
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("offset_s", [HOURS_3, -HOURS_3], ids=["ahead", "behind"])
def test_restart_with_the_clock_off_settles_nothing_and_takes_bids(tmp_path: Path, mosquitto: MosquittoBroker,
                                                                   offset_s: int) -> None:
    cfg = config(tmp_path, mosquitto)
    toml, port = gateway_toml(cfg, tmp_path / "gateway.toml")
    meters = Meters(cfg, mosquitto, 3)
    first_session(cfg, toml, port, meters, tmp_path / "log")
    done = not_open(cfg.db)
    with_clock(toml, offset_s)
    proc = start(toml, tmp_path / "log")
    try:
        assert wait_until(lambda: health(port)[0] == 503, 30), health(port)
        assert health(port)[1]["health"] == "clock"
        fresh_readings(meters)  # the meters' time: the real one
        assert wait_until(lambda: status(port)["counters"].get("clock_rebased", 0) == 1, 15), status(port)
        assert any("meters' time" in r for r in health(port)[1]["reasons"])
        target = real_iv() + 2  # a real future interval: its gate is open
        spec = meters.specs[0]
        meters.pub.publish(*bid(spec, cfg.community, target, 1, [[50, 100_000]], int(time.time())), qos=1)
        assert wait_until(lambda: status(port)["counters"].get("bid", 0) == 1, 15), status(port)["counters"]
        time.sleep(INTERVAL_S / 2)
        # Readings that came in on the behind clock were refused unacked (future_interval): resent later.
        assert status(port)["counters"].get("gate_closed", 0) == 0
        assert health(port)[0] == 503  # still in doubt: the wall clock disagrees
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        meters.close()
    assert not_open(cfg.db) == done  # nothing cleared or settled on either time
    assert max_iv(cfg.db) <= real_iv() + 3  # no interval made hours ahead


def test_restart_after_a_long_outage_resumes_once_the_meters_confirm(tmp_path: Path,
                                                                     mosquitto: MosquittoBroker) -> None:
    cfg = config(tmp_path, mosquitto)
    toml, port = gateway_toml(cfg, tmp_path / "gateway.toml")
    meters = Meters(cfg, mosquitto, 2)
    with_clock(toml, -HOURS_3)  # the ledger's last activity is three hours ago
    proc = start(toml, tmp_path / "log")
    try:
        assert wait_until(lambda: health(port)[0] == 200, 30)
        assert wait_until(lambda: status(port)["counters"].get("cleared", 0) >= 1, 30)
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    toml.write_text(toml.read_text().split("[clock]")[0])  # the real clock: right, but unconfirmed
    proc = start(toml, tmp_path / "log")
    try:
        assert wait_until(lambda: health(port)[0] == 503, 30)
        cleared = status(port)["counters"].get("cleared", 0)
        fresh_readings(meters)
        assert wait_until(lambda: health(port)[0] == 200, 15), health(port)
        assert status(port)["counters"].get("clock_confirmed") == 1
        assert wait_until(lambda: status(port)["counters"].get("cleared", 0) > cleared, 30)
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        meters.close()


@pytest.mark.parametrize("shift_s", [HOURS_3, -HOURS_3], ids=["forward", "backward"])
def test_wall_clock_jump_while_running(tmp_path: Path, mosquitto: MosquittoBroker, shift_s: int) -> None:
    cfg = config(tmp_path, mosquitto)
    shift = [0.0]
    clock = Clock(cfg.clock, jump_s=cfg.settlement.clock_jump_s, wall=lambda: time.time() + shift[0])
    gw = GatewayThread(cfg, first_point_clearing, clock=clock).start()
    try:
        g = gw.gateway
        assert wait_until(lambda: g.health() == "ok", 15)
        shift[0] = shift_s
        assert wait_until(lambda: g.health() == "clock", 5)
        assert abs(clock.now() - time.time()) < 5  # on the monotonic clock
        assert any("jumped" in r for r in g.snapshot()["reasons"])
        assert wait_until(lambda: g.counters["clock_jump"] == 1, 5)
        time.sleep(3)
        assert max(iv for iv, _ in not_open(cfg.db)) <= real_iv() + 1  # nothing cleared ahead
        shift[0] = 0.0
        assert wait_until(lambda: g.health() == "ok", 5), g.snapshot()["reasons"]
    finally:
        gw.stop()
