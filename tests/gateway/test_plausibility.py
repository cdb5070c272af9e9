"""Energy and time plausibility at ingest (issue #12): a gap record's span is bounded by what the
gateway knows, counters agree with the energy, and readings the market never ran for are
quarantined, never settled; offline (Ingest + Scheduler on a real database), then through the
real daemon process and a real Mosquitto."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.ledger import records, verify
from protocols import canonical, messages, topics
from sim_hardware.harness.mosquitto import MosquittoBroker
from tests.gateway.conftest import INTERVAL_S, Offline, make_config, provision
from tests.gateway.meters import AckCollector, MeterSpec, bid, publisher, reading


def res(out: list) -> list[str]:  # noqa: ANN001
    return [canonical.parse(o.payload.rsplit(b"\n", 1)[0])["res"] for o in out]


def raw(spec: MeterSpec, seq: int, iv: int, t0: int, t1: int, imp: int, cnt_imp: int, flags: int = 0,
        exp: int = 0, cnt_exp: int | None = None) -> tuple[str, bytes]:
    msg = messages.reading(spec.meter, spec.kid, spec.boot, seq, iv, t0, t1, imp, exp, cnt_imp,
                           spec.counter_exp if cnt_exp is None else cnt_exp, flags)
    return topics.meter_topic("c1", spec.meter, "reading"), messages.encode(msg, spec.key)


def opened(off: Offline, iv: int) -> None:
    """The scheduler opens ``iv`` (and its neighbour) as it does in the running daemon."""
    off.tick(iv * INTERVAL_S - 30)


def settle(off: Offline, iv: int) -> dict[str, int]:
    off.tick((iv + 2) * INTERVAL_S)
    return dict(off.conn.execute("SELECT meter, SUM(amount) FROM settlements WHERE iv=? GROUP BY meter", (iv,)))


def test_gap_record_span_is_bounded_by_previous_record_provisioning_and_max_outage(offline: Offline) -> None:
    spec = provision(offline.cfg, 1)[0]
    offline.conn.execute("UPDATE meters SET created = created - 86400")  # provisioned a day ago
    iv = int(offline.clock.t) // INTERVAL_S + 1
    opened(offline, iv)
    assert res(offline.send(reading(spec, "c1", iv, INTERVAL_S)[:2])) == ["stored"]
    prev_t1 = (iv + 1) * INTERVAL_S
    offline.tick(prev_t1 + 31)
    # The attack of the issue: t0 = 0 "justifies" 10^9 Wh.
    forged = raw(spec, spec.seq + 1, iv + 1, 0, prev_t1 + 30, 10 ** 9, spec.counter_imp + 10 ** 9,
                 messages.FLAG_PARTIAL)
    assert res(offline.send(forged)) == ["span_out_of_range"]
    # Before the previous record ended (beyond the slack), though after provisioning.
    early = prev_t1 - 2 * offline.cfg.ingest.time_slack_s
    assert res(offline.send(raw(spec, spec.seq + 1, iv + 1, early, prev_t1 + 30, 5, spec.counter_imp + 5,
                                messages.FLAG_PARTIAL))) == ["span_out_of_range"]
    # Longer than the configured outage.
    offline.cfg.ingest.max_outage_s = INTERVAL_S
    assert res(offline.send(raw(spec, spec.seq + 1, iv + 1, prev_t1, prev_t1 + 2 * INTERVAL_S, 5,
                                spec.counter_imp + 5, messages.FLAG_PARTIAL))) == ["span_out_of_range"]
    assert offline.counters["span_out_of_range"] == 3
    # The honest gap record from where the previous one ended is stored.
    assert res(offline.send(raw(spec, spec.seq + 1, iv + 1, prev_t1, prev_t1 + 30, 5, spec.counter_imp + 5,
                                messages.FLAG_PARTIAL))) == ["stored"]
    lines = settle(offline, iv + 1)
    assert lines == {"m000": -1500}  # 5 Wh at the import price, nothing of the 10^9


def test_gap_record_before_provisioning_is_refused(offline: Offline) -> None:
    spec = provision(offline.cfg, 1)[0]  # provisioned now: nothing flowed through it before
    iv = int(offline.clock.t) // INTERVAL_S + 1
    opened(offline, iv)
    t1 = iv * INTERVAL_S + 30
    assert res(offline.send(raw(spec, 1, iv, t1 - 3600, t1, 1000, spec.counter_imp, messages.FLAG_PARTIAL))) \
        == ["span_out_of_range"]


def test_counters_must_match_energy_and_an_absurd_one_does_not_poison_later_readings(offline: Offline) -> None:
    spec = provision(offline.cfg, 1)[0]
    iv = int(offline.clock.t) // INTERVAL_S + 1
    opened(offline, iv)
    assert res(offline.send(reading(spec, "c1", iv, INTERVAL_S, imp_wh=100, exp_wh=0)[:2])) == ["stored"]
    t0, t1 = (iv + 1) * INTERVAL_S, (iv + 2) * INTERVAL_S
    offline.clock.t = t0 - 30
    # Next in sequence, counters 10^15 up while the energy says 100 Wh.
    absurd = raw(spec, spec.seq + 1, iv + 1, t0, t1, 100, 10 ** 15)
    assert res(offline.send(absurd)) == ["counter_mismatch"]
    # Next in sequence, energy more than the counters rose.
    assert res(offline.send(raw(spec, spec.seq + 1, iv + 1, t0, t1, 100, spec.counter_imp + 40))) \
        == ["counter_mismatch"]
    # After a gap in the sequence: counters rose more than max_power_w allows in the time.
    assert res(offline.send(raw(spec, spec.seq + 5, iv + 1, t0, t1, 100, spec.counter_imp + 10 ** 9))) \
        == ["counter_mismatch"]
    # The meter's next honest reading (its seq after the refused one) is checked against the
    # last ACCEPTED record, not the refused one: stored, and it settles.
    spec.seq += 1  # the refused record's number
    opened(offline, iv + 1)
    assert res(offline.send(reading(spec, "c1", iv + 1, INTERVAL_S, imp_wh=200, exp_wh=0)[:2])) == ["stored"]
    assert res(offline.send(reading(spec, "c1", iv + 1, INTERVAL_S, imp_wh=10, exp_wh=0)[:2])) == ["stored"]
    assert offline.counters["counter_mismatch"] == 3 and "counter_decrease" not in offline.counters
    assert settle(offline, iv + 1) == {"m000": -63_000}  # 210 Wh at the import price
    # A reset-flagged record is a new baseline: the counters after it chain from it.
    spec.counter_imp = 7
    assert res(offline.send(reading(spec, "c1", iv + 1, INTERVAL_S, imp_wh=0, exp_wh=0,
                                    flags=messages.FLAG_COUNTER_RESET)[:2])) == ["stored"]
    assert res(offline.send(reading(spec, "c1", iv + 1, INTERVAL_S, imp_wh=3, exp_wh=0)[:2])) == ["stored"]


def test_late_record_must_chain_with_both_stored_neighbours(offline: Offline) -> None:
    spec = provision(offline.cfg, 1)[0]
    iv = int(offline.clock.t) // INTERVAL_S
    one = reading(spec, "c1", iv, INTERVAL_S, imp_wh=10, exp_wh=0)[:2]
    two = reading(spec, "c1", iv, INTERVAL_S, imp_wh=20, exp_wh=0)[:2]
    three = reading(spec, "c1", iv, INTERVAL_S, imp_wh=30, exp_wh=0)[:2]
    assert res(offline.send(one, three)) == ["stored", "stored"]
    # seq 2 arrives late with energy that does not fit between seq 1 and seq 3's counters
    bad = raw(spec, 2, iv, iv * INTERVAL_S, (iv + 1) * INTERVAL_S, 25, spec.counter_imp - 30 + 5)
    assert res(offline.send(bad)) == ["counter_mismatch"]
    assert res(offline.send(two)) == ["stored"]


def test_readings_the_market_never_ran_for_are_quarantined_and_open_no_interval(offline: Offline) -> None:
    spec = provision(offline.cfg, 1)[0]
    now_iv = int(offline.clock.t) // INTERVAL_S
    opened(offline, now_iv + 1)  # the community's first interval is now_iv
    # Interval 0 (1970), as an unsynchronised clock reports it: the flag excuses nothing.
    epoch = raw(spec, 1, 0, 0, INTERVAL_S, 1, spec.counter_imp + 1, messages.FLAG_TIME_UNSYNCED)
    assert res(offline.send(epoch)) == ["stored"]
    assert res(offline.send(epoch)) == ["duplicate"]  # resent: kept once
    # Hours back, after provisioning would allow but before the community's first interval.
    offline.conn.execute("UPDATE meters SET created = created - 86400")
    offline.ingest._provisioned.clear()  # noqa: SLF001 - the cache of the running daemon
    back = now_iv - 180
    assert res(offline.send(raw(spec, 2, back, back * INTERVAL_S, (back + 1) * INTERVAL_S, 2,
                                spec.counter_imp + 3))) == ["stored"]
    # Older than the settlement window (the gateway ran for a week and more).
    offline.cfg.ingest.settlement_window_s = INTERVAL_S
    offline.tick((now_iv + 5) * INTERVAL_S)
    old = now_iv + 2
    assert res(offline.send(raw(spec, 3, old, old * INTERVAL_S, (old + 1) * INTERVAL_S, 4,
                                spec.counter_imp + 7))) == ["stored"]
    kept = offline.conn.execute("SELECT seq, iv, reason FROM quarantine ORDER BY seq").fetchall()
    assert kept == [(1, 0, "before_provisioning"), (2, back, "before_first_interval"), (3, old, "too_old")]
    assert offline.counters["quarantined"] == 3 and offline.counters["stored"] == 0
    assert offline.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 0
    ivs = {iv for (iv,) in offline.conn.execute("SELECT iv FROM intervals")}
    assert not {0, back} & ivs
    assert offline.conn.execute("SELECT COUNT(*) FROM settlements WHERE iv IN (0, ?, ?)",
                                (back, old)).fetchone()[0] == 0
    # Ledgered, each as its meter's own message inside a record naming the reason; the
    # ledger still verifies.
    leaves = offline.conn.execute("SELECT o.record FROM leaves l JOIN openings o ON o.idx = l.idx"
                                  " WHERE l.kind='quarantined' ORDER BY l.idx").fetchall()
    assert canonical.encode(canonical.parse(records.unpack(bytes(leaves[0][0])))["record"]) == epoch[1].rsplit(b"\n", 1)[0]
    offline.tick(offline.clock.t + 1)
    report = verify.verify(offline.conn, offline.cfg.origin, offline.ledger.signing_key.public_key())
    assert report.ok, report.problems


def test_a_reading_for_a_never_opened_interval_is_stored_but_opens_nothing(offline: Offline) -> None:
    """The gateway was down: its scheduler never opened these intervals, so no market ran."""
    spec = provision(offline.cfg, 1)[0]
    iv = int(offline.clock.t) // INTERVAL_S
    opened(offline, iv + 1)
    offline.tick((iv + 20) * INTERVAL_S)  # back after an outage: opens iv + 20, iv + 21
    assert res(offline.send(reading(spec, "c1", iv + 5, INTERVAL_S)[:2])) == ["stored"]
    offline.tick((iv + 30) * INTERVAL_S)
    assert offline.conn.execute("SELECT COUNT(*) FROM intervals WHERE iv=?", (iv + 5,)).fetchone()[0] == 0
    assert offline.conn.execute("SELECT COUNT(*) FROM settlements WHERE iv=?", (iv + 5,)).fetchone()[0] == 0


# --- through the real daemon and a real Mosquitto


@pytest.mark.mosquitto
def test_daemon_refuses_forged_energy_quarantines_1970_and_settles_neither(tmp_path: Path,
                                                                         mosquitto: MosquittoBroker) -> None:
    from tests.gateway.test_crash import start, write_toml

    cfg = make_config(tmp_path, mosquitto, interval_s=4, gate_closure_s=1)
    cfg.settlement.grace_s = 1
    toml = write_toml(cfg, tmp_path / "gateway.toml")
    honest, forger = provision(cfg, 2)
    proc = start(toml, tmp_path / "gateway.log")
    acks = AckCollector(mosquitto.host, mosquitto.port, "c1", {s.meter: s.key for s in (honest, forger)})
    pub = publisher(mosquitto.host, mosquitto.port)
    try:
        time.sleep(1.0)
        iv = messages.interval_index(time.time(), cfg.interval_s) + 1
        while time.time() < iv * cfg.interval_s - cfg.gate_closure_s - 0.5:
            time.sleep(0.05)
        for s in (honest, forger):
            pub.publish(*bid(s, "c1", iv, 0, [[0, 100_000]], int(time.time())), qos=1)
        while time.time() < (iv + 1) * cfg.interval_s + 0.2:
            time.sleep(0.05)
        t1 = (iv + 1) * cfg.interval_s
        sent = {  # name -> ((topic, payload), (meter, boot, seq))
            "honest": (reading(honest, "c1", iv, cfg.interval_s, imp_wh=5, exp_wh=0)[:2], (honest.meter, 1, 1)),
            "t0 zero": (raw(forger, 1, iv, 0, t1, 10 ** 9, forger.counter_imp + 10 ** 9, messages.FLAG_PARTIAL),
                        (forger.meter, 1, 1)),
            "1970": (raw(forger, 2, 0, 0, 4, 1, forger.counter_imp + 1, messages.FLAG_TIME_UNSYNCED),
                     (forger.meter, 1, 2)),
        }
        keys = {name: key for name, (_, key) in sent.items()}
        for (topic, payload), _ in sent.values():
            pub.publish(topic, payload, qos=1)
        assert acks.wait_for(set(keys.values()), timeout=30)
        got = {name: acks.acks[k] for name, k in keys.items()}
        assert got == {"honest": "stored", "t0 zero": "span_out_of_range", "1970": "stored"}
        deadline = time.monotonic() + 30
        db = sqlite3.connect(f"file:{cfg.db}?mode=ro", uri=True, timeout=10)
        while not db.execute("SELECT 1 FROM intervals WHERE iv=? AND state='settled'", (iv,)).fetchone():
            assert time.monotonic() < deadline, "the interval was never settled"
            time.sleep(0.2)
        lines = dict(db.execute("SELECT meter, SUM(amount) FROM settlements WHERE iv=? GROUP BY meter", (iv,)))
        assert lines[honest.meter] == -1500 and lines.get(forger.meter, 0) == 0  # award 0, nothing metered
        assert db.execute("SELECT COUNT(*) FROM intervals WHERE iv=0").fetchone()[0] == 0
        assert db.execute("SELECT reason FROM quarantine").fetchall() == [("before_provisioning",)]
        db.close()
    finally:
        pub.loop_stop()
        acks.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
