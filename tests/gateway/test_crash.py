"""Crash safety: SIGKILL the gateway process at random moments while meters keep publishing and
resending what was not acknowledged. Afterwards every acknowledged record is stored exactly once,
no interval was settled twice (settlement sums equal one settlement of what was metered), the
last will announced the gateway offline, and `tmeter ledger verify` passes."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway.interval import settlement
from gateway.config import GatewayConfig, MarketConfig
from protocols import messages, topics
from sim_hardware.harness.mosquitto import MosquittoBroker
from sim_hardware.harness.redteam import start
from tests.gateway.conftest import make_config, provision
from tests.gateway.meters import AckCollector, Fleet, publisher

pytestmark = pytest.mark.mosquitto
ITERATIONS = int(os.environ.get("TMETER_CRASH_ITERATIONS", "15"))
ROOT = Path(__file__).parents[2]


def write_toml(cfg: GatewayConfig, path: Path) -> Path:
    path.write_text(f"""community = "{cfg.community}"
db = "{cfg.db}"
interval_s = {cfg.interval_s}
gate_closure_s = {cfg.gate_closure_s}
synchronous = "{cfg.synchronous}"
[mqtt]
host = "{cfg.mqtt.host}"
port = {cfg.mqtt.port}
client_id = "{cfg.mqtt.client_id}"
[settlement]
grace_s = {cfg.settlement.grace_s}
[status]
http_port = 0
publish_s = 0.5
""")
    return path


class StatusWatch:
    def __init__(self, broker: MosquittoBroker) -> None:
        self.offline = 0
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.c.on_message = self._on
        self.c.connect(broker.host, broker.port)
        self.c.subscribe(topics.gateway_status_topic("c1"), 1)
        self.c.loop_start()

    def _on(self, c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        if messages.decode(m.topic, m.payload)[2]["online"] == 0:
            self.offline += 1


def expected_amounts(conn, market: MarketConfig) -> dict[tuple[int, str], int]:  # noqa: ANN001
    """One settlement of what was metered in every settled interval (no awards: no bids sent),
    the grid bill shared once every member's reading is in (no feeder here)."""
    rows = conn.execute("SELECT r.iv, r.meter, SUM(r.exp_wh - r.imp_wh) FROM readings r JOIN intervals i"
                        " ON i.iv = r.iv WHERE i.state='settled' GROUP BY r.iv, r.meter").fetchall()
    members = {m for (m,) in conn.execute("SELECT meter FROM meters WHERE feeder=0")}
    by_iv: dict[int, list[settlement.Line]] = {}
    for iv, m, net in rows:
        by_iv.setdefault(iv, []).append(settlement.settle_member(m, None, net, market))
    out = {}
    for iv, lines in by_iv.items():
        if {x.meter for x in lines} >= members:
            net_import = -sum(x.metered_wh or 0 for x in lines)
            lines = settlement.share_grid_bill(lines, max(net_import, 0), max(-net_import, 0), market)
        out.update({(iv, x.meter): x.amount for x in lines})
    return out


def wait_for_acks_to_pause(acks: AckCollector, quiet_s: float = 0.5, most_s: float = 5.0) -> None:
    """Until no ack came for ``quiet_s`` (at least that long, at most ``most_s``): the meters
    resend what is left then, as the firmware does on its ack timeout. Resending the whole
    backlog every 0.5 s buried the restarted gateway in duplicates (drains of 10 to 28 s)."""
    sent = time.monotonic()
    time.sleep(quiet_s)
    while time.monotonic() - sent < most_s and time.monotonic() - acks.last < quiet_s:
        time.sleep(0.1)


def settled_sums(conn) -> dict[tuple[int, str], int]:  # noqa: ANN001
    return dict(((iv, m), a) for iv, m, a in conn.execute("SELECT iv, meter, SUM(amount) FROM settlements"
                                                          " GROUP BY iv, meter"))


def wait_settled(path: str, market: MarketConfig, most_s: float) -> None:
    """Until every interval holding readings is settled once, as metered (late readings'
    revisions included), at most ``most_s``: the test's assertions then read a settled ledger
    without a fixed wait; a double settlement never gets there and fails them after most_s."""
    deadline = time.monotonic() + most_s
    while time.monotonic() < deadline:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as c:
            unsettled = c.execute("SELECT COUNT(*) FROM (SELECT DISTINCT iv FROM readings) r LEFT JOIN"
                                  " intervals i ON i.iv = r.iv WHERE i.state IS NOT 'settled'").fetchone()[0]
            if unsettled == 0 and settled_sums(c) == expected_amounts(c, market):
                return
        time.sleep(0.5)


def test_sigkill_at_random_points_loses_nothing_and_settles_once(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    rng = random.Random(6)
    cfg = make_config(tmp_path, mosquitto, interval_s=4, gate_closure_s=1)
    cfg.settlement.grace_s = 1
    toml = write_toml(cfg, tmp_path / "gateway.toml")
    log = tmp_path / "gateway.log"
    specs = provision(cfg, 12)
    fleet = Fleet("c1", cfg.interval_s, specs)
    acks = AckCollector(mosquitto.host, mosquitto.port, "c1", {s.meter: s.key for s in specs})
    watch = StatusWatch(mosquitto)
    pub = publisher(mosquitto.host, mosquitto.port)
    acked_ever: set[tuple[str, int, int]] = set()
    produced = 0

    def meters_step() -> None:
        nonlocal produced
        fleet.produce(messages.interval_index(time.time(), cfg.interval_s))
        produced += len(specs)
        fleet.send(pub)
        time.sleep(0.05)
        with acks.lock:
            acked_ever.update(acks.acks)
        fleet.forget_acked(acks.acks)

    for _ in range(ITERATIONS):
        proc = start(toml, log)
        deadline = time.monotonic() + rng.uniform(0.3, 2.5)
        while time.monotonic() < deadline:
            meters_step()
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    proc = start(toml, log)
    deadline = time.monotonic() + 60
    while fleet.unacked and time.monotonic() < deadline:
        fleet.send(pub)
        wait_for_acks_to_pause(acks)
        with acks.lock:
            acked_ever.update(acks.acks)
        fleet.forget_acked(acks.acks)
    wait_settled(cfg.db, cfg.market, 3 * cfg.interval_s)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    pub.loop_stop()
    acks.close()
    assert not fleet.unacked, f"{len(fleet.unacked)} records never acknowledged"
    assert watch.offline >= 1  # the last will (and the clean stop) said so

    from gateway import db

    conn = db.connect(cfg.db)
    # Readings of intervals before the gateway's first scheduler run (its first lives may all
    # be killed sooner on a loaded machine) are kept aside, not lost: quarantine counts as stored.
    stored = set(conn.execute("SELECT meter, boot, seq FROM readings UNION ALL SELECT meter, boot, seq"
                              " FROM quarantine").fetchall())
    assert acked_ever <= stored
    rows = conn.execute("SELECT (SELECT COUNT(*) FROM readings) + (SELECT COUNT(*) FROM quarantine)").fetchone()[0]
    assert len(stored) == produced == rows
    assert {r for (r,) in conn.execute("SELECT DISTINCT reason FROM quarantine")} <= {"before_first_interval"}
    sums = settled_sums(conn)
    assert sums and sums == expected_amounts(conn, cfg.market)
    for iv, m, revs in conn.execute("SELECT iv, meter, GROUP_CONCAT(rev) FROM settlements GROUP BY iv, meter"):
        assert sorted(int(r) for r in revs.split(",")) == list(range(len(revs.split(","))))
    out = subprocess.run([sys.executable, "-m", "tmeter", "ledger", "verify", "--db", cfg.db],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stdout
    assert "ledger OK" in out.stdout
