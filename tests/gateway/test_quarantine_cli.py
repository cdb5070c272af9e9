"""`tmeter gateway quarantine`: the operator's read-only view of the readings ingest kept aside
(gateway/ingest/store.py), on a database the real ingest path filled, run as an operator runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocols import messages
from tests.gateway.conftest import INTERVAL_S, Offline, provision, tmeter, write_toml
from tests.gateway.test_plausibility import opened, raw, res


@pytest.fixture
def quarantined(offline: Offline, tmp_path: Path) -> Path:
    """Two meters' quarantined readings (one reason each), a stored one, a meter with neither;
    returns the gateway.toml."""
    m0, m1, _ = provision(offline.cfg, 3)
    now_iv = int(offline.clock.t) // INTERVAL_S
    opened(offline, now_iv + 1)  # the community's first interval is now_iv
    epoch = raw(m0, 1, 0, 0, INTERVAL_S, 1, m0.counter_imp + 1, messages.FLAG_TIME_UNSYNCED)
    assert res(offline.send(epoch)) == ["stored"]  # acked as stored, kept aside
    offline.conn.execute("UPDATE meters SET created = created - 86400")
    offline.ingest._provisioned.clear()  # noqa: SLF001 - the cache of the running daemon
    back = now_iv - 180
    assert res(offline.send(raw(m1, 1, back, back * INTERVAL_S, (back + 1) * INTERVAL_S, 2,
                                m1.counter_imp + 2))) == ["stored"]
    iv = now_iv + 1
    assert res(offline.send(raw(m0, 2, iv, iv * INTERVAL_S, (iv + 1) * INTERVAL_S, 3, m0.counter_imp + 4))) \
        == ["stored"]
    assert offline.counters["quarantined"] == 2 and offline.counters["stored"] == 1
    return write_toml(tmp_path / "gateway.toml", offline.cfg.db)


def ledgered(offline: Offline) -> list[tuple[str, int, int, str, int]]:
    """(meter, boot, seq, reason, leaf) of every quarantined record, from the ledger's leaves."""
    return [(m, b, s, r, i) for m, b, s, r, i in offline.conn.execute(
        "SELECT q.meter, q.boot, q.seq, q.reason, l.idx FROM leaves l JOIN quarantine q ON q.leaf = l.idx"
        " WHERE l.kind = 'quarantined' ORDER BY q.iv")]


def listing(config: Path, *args: str) -> list[dict]:
    out = tmeter("gateway", "quarantine", "--config", str(config), "--json", *args)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 1  # one array
    return json.loads(out.stdout)


def test_lists_each_quarantined_reading_with_its_reason_leaf_and_a_count_per_reason(
        offline: Offline, quarantined: Path) -> None:
    out = tmeter("gateway", "quarantine", "--config", str(quarantined))
    assert out.returncode == 0, out.stderr
    kept = ledgered(offline)
    assert [r[3] for r in kept] == ["before_provisioning", "before_first_interval"]
    rows = [line for line in out.stdout.splitlines() if " m00" in line]
    assert len(rows) == 2, out.stdout  # the stored reading is not listed
    for line, (meter, boot, seq, reason, leaf) in zip(rows, kept, strict=True):
        cells = [c.strip() for c in line.split("│")[1:-1]]
        assert cells[:3] == [meter, str(boot), str(seq)] and cells[-2:] == [reason, str(leaf)], line
    assert "1970-01-01 00:00:00" in rows[0]  # interval 0's t0, in UTC
    assert "2 quarantined: before_first_interval 1, before_provisioning 1" in out.stdout


def test_json_is_every_row_and_meter_filters(offline: Offline, quarantined: Path) -> None:
    everything = listing(quarantined)
    kept = ledgered(offline)
    assert [(r["meter"], r["boot"], r["seq"], r["reason"], r["leaf"]) for r in everything] == kept
    assert everything[0]["iv"] == 0 and everything[0]["t0"] == 0 and everything[0]["imp_wh"] == 1
    assert [r["meter"] for r in listing(quarantined, "--meter", "m001")] == ["m001"]
    assert listing(quarantined, "--meter", "m002") == []  # provisioned, nothing kept aside


def test_an_empty_quarantine_is_one_line_exit_0(offline: Offline, tmp_path: Path) -> None:
    provision(offline.cfg, 1)
    config = write_toml(tmp_path / "gateway.toml", offline.cfg.db)
    out = tmeter("gateway", "quarantine", "--config", str(config))
    assert out.returncode == 0 and out.stdout.strip() == f"no quarantined readings in {offline.cfg.db}", out
    out = tmeter("gateway", "quarantine", "--config", str(config), "--meter", "m000")
    assert out.returncode == 0 and out.stdout.startswith("no quarantined readings of m000 in"), out


def test_mistakes_are_one_line_exit_2_and_change_nothing(offline: Offline, quarantined: Path,
                                                         tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "gateway.db"
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    bad = tmp_path / "bad.toml"
    bad.write_text('community = "c 1!"\n')
    cases = {
        "no database": ["--config", str(write_toml(tmp_path / "missing.toml", str(missing)))],
        "not a database": ["--config", str(write_toml(tmp_path / "garbage.toml", str(garbage)))],
        "community": ["--config", str(bad)],
        "no meter 'm999'": ["--config", str(quarantined), "--meter", "m999"],
        "no meter '[red]m000'": ["--config", str(quarantined), "--meter", "[red]m000", "--json"],
    }
    for expected, args in cases.items():
        out = tmeter("gateway", "quarantine", *args)
        assert out.returncode == 2 and out.stdout == "", (args, out)
        assert len(out.stderr.splitlines()) == 1 and expected in out.stderr, (args, out.stderr)
    assert not missing.parent.exists()  # read-only: nothing created


def test_erasing_a_member_erases_its_quarantined_readings_too(offline: Offline, quarantined: Path) -> None:
    out = tmeter("ledger", "erase", "--config", str(quarantined), "--meter", "m000", "--yes")
    assert out.returncode == 0, out.stderr
    assert [r["meter"] for r in listing(quarantined)] == ["m001"]  # the other member's stays
    verified = tmeter("ledger", "verify", "--config", str(quarantined))
    assert verified.returncode == 0, verified.stdout + verified.stderr
