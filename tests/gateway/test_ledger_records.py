"""Records stored compressed (gateway/ledger/records.py): the exact bytes come back, records a
database stored plain (before compression) still open, and a damaged blob is named, not raised."""

from __future__ import annotations

import pytest

from gateway.ledger import records
from tests.gateway.conftest import Offline, populate, tmeter


def test_every_kind_comes_back_byte_exact_and_smaller(offline: Offline) -> None:
    populate(offline)
    rows = offline.conn.execute("SELECT l.kind, o.record FROM leaves l JOIN openings o ON o.idx = l.idx").fetchall()
    kinds = {k for k, _ in rows}
    assert {"reading", "bid", "award", "settlement", "result", "interval", "checkpoint"} <= kinds
    for _, stored in rows:
        rec = records.unpack(bytes(stored))
        assert rec.startswith(b"{") and records.pack(rec) == bytes(stored)
    assert sum(len(s) for _, s in rows) * 2 < sum(len(records.unpack(bytes(s))) for _, s in rows)


def test_plain_records_of_an_older_database_still_verify(offline: Offline) -> None:
    populate(offline)
    for idx, stored in offline.conn.execute("SELECT idx, record FROM openings").fetchall():
        offline.conn.execute("UPDATE openings SET record=? WHERE idx=?", (records.unpack(bytes(stored)), idx))
    out = tmeter("ledger", "verify", "--db", str(offline.cfg.db))
    assert out.returncode == 0 and "ledger OK" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("damage", [lambda b: b[:-3], lambda b: b + b"\x00", lambda b: b[:1] + b"\xff" * 9])
def test_a_damaged_stored_record_is_named(offline: Offline, damage) -> None:  # noqa: ANN001
    populate(offline)
    idx, stored = offline.conn.execute("SELECT idx, record FROM openings WHERE idx = 2").fetchone()
    offline.conn.execute("UPDATE openings SET record=? WHERE idx=?", (damage(bytes(stored)), idx))
    out = tmeter("ledger", "verify", "--db", str(offline.cfg.db))
    assert "Traceback" not in out.stderr and out.returncode == 1, out.stdout + out.stderr
    assert any(line.startswith(f"FAIL: leaf {idx} (") for line in out.stdout.splitlines()), out.stdout
