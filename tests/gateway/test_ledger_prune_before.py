"""`tmeter ledger prune --before DATE|SIZE` (retention, issue 14): the archives `ledger archive`
recorded must hold every leaf removed, each file still hashing as recorded, and no interval
removed may still be inside the settlement window; a dry run unless --yes; afterwards the file
is smaller, the kept log verifies and proves, and a proof request for a pruned record names the
archive that holds it. Every refusal is one line, exit code 2, nothing deleted."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.gateway.conftest import write_toml
from tests.gateway.test_ledger_prune import Pi, check_proof, first_reading, pi, prove, refused, verified
from tests.gateway.test_ledger_tamper import more

__all__ = ["pi"]  # the fixture, shared with test_ledger_prune

DAY = 86_400
T0 = 1_700_000_000  # the simulated community's first day (tests/gateway/conftest.py offline)


def file_bytes(pi: Pi) -> int:
    pi.off.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = Path(f"{pi.db}-wal")
    return os.path.getsize(pi.db) + (wal.stat().st_size if wal.exists() else 0)


def untouched(pi: Pi, before: tuple[int, int]) -> None:
    assert pi.leaves() == before
    assert pi.off.conn.execute("SELECT COUNT(*) FROM pruned").fetchone()[0] == 0


def test_dry_run_then_prune_before_a_checkpoint(pi: Pi) -> None:
    sizes = pi.sizes()
    mid = sizes[len(sizes) // 2]
    meter, early_iv = first_reading(pi)
    arc = pi.archive(0, mid)
    assert pi.off.conn.execute("SELECT path, last FROM archives").fetchall() == [(str(arc.resolve()), mid)]
    before, size0 = pi.leaves(), file_bytes(pi)
    dry = verified(pi.cli("prune", "--before", str(mid)), "dry run: nothing deleted")
    assert f"prune through checkpoint {mid}: leaves 0.." in dry and "reading" in dry and str(arc.resolve()) in dry
    assert pi.leaves() == before
    assert "dry run" in verified(pi.cli("prune", "--before", str(mid), "--yes", "--dry-run"), "nothing deleted")
    assert pi.leaves() == before
    out = verified(pi.cli("prune", "--before", str(mid), "--yes"), "pruned")
    cut, kept = pi.leaves()
    assert cut > 0 and kept < before[1] and f"keeps leaves {cut} on" in out
    said = re.search(r"VACUUM [0-9.]+ s: ([0-9,]+) -> ([0-9,]+) bytes", out)
    assert said is not None, out
    was, now = (int(g.replace(",", "")) for g in said.groups())
    assert now < was and file_bytes(pi) < size0, (out, size0)  # VACUUM gave the pages back
    assert "archived and pruned" in verified(pi.cli("verify"))
    # The daemon's connection stayed open across the prune and the VACUUM: it goes on.
    more(pi.off, pi.specs, 2)
    verified(pi.cli("verify"))
    late_iv = pi.off.conn.execute("SELECT MAX(iv) FROM leaves WHERE kind='reading'").fetchone()[0]
    check_proof(pi, prove(pi, pi.specs[0].meter, late_iv), pi.note_file(pi.sizes()[-1]))
    cons = pi.cli("consistency", "--old", str(mid))
    assert cons.returncode == 0 and json.loads(cons.stdout)["verified"], cons.stdout + cons.stderr
    res = pi.cli("prove", "--meter", meter, "--interval", str(early_iv))
    assert res.returncode == 1 and f"pruned: the records of interval {early_iv}" in res.stderr, res.stderr
    assert f"in archive {arc.resolve()}" in res.stderr
    check_proof(pi, prove(pi, meter, early_iv, db=str(arc)), pi.note_file(mid))
    refused(pi.cli("prune", "--before", str(mid), "--yes"), "nothing to prune before checkpoint")


def test_before_a_date_resolves_to_the_last_checkpoint_signed_by_then(pi: Pi) -> None:
    sizes = pi.sizes()
    # A history: checkpoint k signed on day k (the simulated clock runs in minutes).
    for k, size in enumerate(sizes):
        pi.off.conn.execute("UPDATE checkpoints SET created=? WHERE size=?", (T0 + k * DAY, size))
    k = len(sizes) // 2
    pi.archive(0, sizes[-1])
    day = datetime.fromtimestamp(T0 + k * DAY + 3600, UTC)
    out = verified(pi.cli("prune", "--before", day.strftime("%Y-%m-%dT%H:%M")), "dry run")
    assert f"prune through checkpoint {sizes[k]}:" in out, out
    out = verified(pi.cli("prune", "--before", day.strftime("%Y-%m-%d"), "--yes"), "pruned")
    assert pi.off.conn.execute("SELECT through FROM pruned").fetchone()[0] == sizes[k - 1]  # midnight: day k-1's
    verified(pi.cli("verify"))
    refused(pi.cli("prune", "--before", "2023-01-01"), "no checkpoint signed at or before 2023-01-01")


def test_a_bound_inside_an_archive_and_two_archives_chained(pi: Pi) -> None:
    sizes = pi.sizes()
    a, b = sizes[len(sizes) // 3], sizes[2 * len(sizes) // 3]
    pi.archive(0, a)
    pi.archive(a, sizes[-1])
    verified(pi.cli("prune", "--before", str(b), "--yes"), "pruned")
    assert pi.off.conn.execute("SELECT through FROM pruned").fetchone()[0] == b
    assert pi.off.conn.execute("SELECT COUNT(*) FROM leaves WHERE kind='prune'").fetchone()[0] == 2
    verified(pi.cli("verify"))
    verified(pi.cli("verify", "--since", str(pi.note_file(b))), "ledger OK since the note")


@pytest.mark.parametrize(("bound", "needle"), [
    ("2999-01-01", "is in the future"),
    ("yesterday", "is neither a date"),
    ("2026-13-45", "is neither a date"),
    ("-3", "is neither a date"),
    ("999999", "no checkpoint of size 999999"),
    ("9" * 40, "no checkpoint of size"),
    ("0", "no checkpoint of size 0"),
])
def test_a_bad_bound_is_refused(pi: Pi, bound: str, needle: str) -> None:
    pi.archive(0, pi.sizes()[-1])
    before = pi.leaves()
    refused(pi.cli("prune", "--before", bound, "--yes"), needle)
    untouched(pi, before)


def test_leaves_in_no_archive_are_refused(pi: Pi) -> None:
    sizes = pi.sizes()
    a, b = sizes[len(sizes) // 3], sizes[2 * len(sizes) // 3]
    before = pi.leaves()
    refused(pi.cli("prune", "--before", str(b), "--yes"), "are in no archive: run `tmeter ledger archive --from 0")
    pi.archive(0, a)  # archived up to a only: the leaves after it are not
    res = pi.cli("prune", "--before", str(b), "--yes")
    refused(res, f"--from {a} --to {b}")
    assert "(interval " in res.stderr
    untouched(pi, before)


def test_a_changed_or_missing_archive_is_refused(pi: Pi) -> None:
    mid = pi.sizes()[len(pi.sizes()) // 2]
    arc = pi.archive(0, mid)
    before = pi.leaves()
    data = arc.read_bytes()
    arc.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit: the file no longer hashes as recorded
    refused(pi.cli("prune", "--before", str(mid)), "changed since `tmeter ledger archive` wrote it")
    refused(pi.cli("prune", "--before", str(mid), "--yes"), "restore it, or archive the period again")
    arc.unlink()
    refused(pi.cli("prune", "--before", str(mid), "--yes"), "is missing")
    untouched(pi, before)
    arc.write_bytes(data)  # restored: accepted
    verified(pi.cli("prune", "--before", str(mid), "--yes"), "pruned")


def test_an_interval_inside_the_settlement_window_is_refused(pi: Pi, tmp_path: Path) -> None:
    mid = pi.sizes()[len(pi.sizes()) // 2]
    pi.archive(0, mid)
    before = pi.leaves()
    first_iv = pi.off.conn.execute("SELECT MIN(iv) FROM intervals WHERE state='settled'").fetchone()[0]
    # The simulated intervals settled in 2023: a window of 10 years still holds them.
    toml = write_toml(tmp_path / "gateway.toml", pi.db)
    toml.write_text(toml.read_text() + "[ingest]\nsettlement_window_s = 315360000\n")
    res = pi.cli("prune", "--before", str(mid), "--config", str(toml))
    refused(res, f"interval {first_iv} settled 2023-")
    assert "inside the settlement window (3650 days" in res.stderr and "prune --before an earlier" in res.stderr
    refused(pi.cli("prune", "--before", str(mid), "--config", str(toml), "--yes"), "settlement window")
    arc = pi.folder / f"period-0-{mid}.db"
    refused(pi.cli("prune", "--archive", str(arc), "--config", str(toml), "--yes"), f"interval {first_iv} settled")
    # An interval not settled at all: its leaves stay whatever its age.
    pi.off.conn.execute("UPDATE intervals SET state='cleared', settled_at=NULL WHERE iv=?", (first_iv,))
    refused(pi.cli("prune", "--before", str(mid), "--yes"), f"interval {first_iv} is cleared, not settled")
    untouched(pi, before)


def test_prune_by_archive_is_a_dry_run_without_yes(pi: Pi) -> None:
    arc = pi.archive(0, pi.sizes()[len(pi.sizes()) // 2])
    before = pi.leaves()
    verified(pi.cli("prune", "--archive", str(arc)), "nothing deleted")
    untouched(pi, before)
    res = pi.cli("prune", "--archive", str(arc), "--before", "3")
    assert res.returncode == 2 and "not allowed with argument" in res.stderr
