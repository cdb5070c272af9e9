"""`tmeter ledger verify --since NOTE` (issue 14): from a checkpoint note an auditor verified
earlier, the log must extend it and every leaf after it must open and agree with its rows and
intervals; leaves before it are not opened again. Time is measured in bench/year.py, never here."""

from __future__ import annotations

import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.ledger import note
from tests.gateway.conftest import Offline, populate, tmeter
from tests.gateway.test_ledger_tamper import edit_record, more  # the same later intervals of readings


@dataclass
class Copy:
    db: Path
    conn: sqlite3.Connection
    pub: Path
    origin: str
    notes: dict[int, Path]
    mid: int  # the size of the note the auditor verified earlier

    def since(self, size: int | None = None, note_file: Path | None = None) -> subprocess.CompletedProcess[str]:
        path = note_file or self.notes[size or self.mid]
        return tmeter("ledger", "verify", "--db", str(self.db), "--pubkey", str(self.pub), "--origin", self.origin,
                      "--since", str(path))

    def full(self) -> subprocess.CompletedProcess[str]:
        return tmeter("ledger", "verify", "--db", str(self.db), "--pubkey", str(self.pub), "--origin", self.origin)

    def leaf_of(self, kind: str, after: bool) -> int:
        op = ">=" if after else "<"
        return self.conn.execute(f"SELECT MIN(idx) FROM leaves WHERE kind=? AND idx {op} ?",  # noqa: S608
                                 (kind, self.mid)).fetchone()[0]


@pytest.fixture
def live(offline: Offline, tmp_path: Path) -> Copy:
    more(offline, populate(offline, intervals=4), 3)
    pub = tmp_path / "pub.pem"
    pub.write_bytes(note.public_pem(offline.ledger.signing_key.public_key()))  # type: ignore[union-attr]
    notes = {}
    for size, signed in offline.conn.execute("SELECT size, note FROM checkpoints ORDER BY size"):
        notes[size] = tmp_path / f"cp-{size}.note"
        notes[size].write_bytes(bytes(signed))
    copy = tmp_path / "copy.db"
    dst = sqlite3.connect(copy, isolation_level=None)
    offline.conn.backup(dst)
    sizes = sorted(notes)
    return Copy(copy, dst, pub, offline.cfg.origin, notes, sizes[len(sizes) // 2])


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 0 and "ledger OK since the note" in out.stdout, out.stdout + out.stderr
    return out.stdout


def fails(out: subprocess.CompletedProcess[str], needle: str) -> None:
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 1 and "ledger FAILED" in out.stdout, out.stdout + out.stderr
    assert any(needle in line for line in out.stdout.splitlines() if line.startswith("FAIL: ")), out.stdout


def test_the_untouched_log_passes_since_each_note_and_counts_only_new_leaves(live: Copy) -> None:
    total = live.conn.execute("SELECT COUNT(*) FROM leaves").fetchone()[0]
    for size in live.notes:
        out = ok(live.since(size))
        assert f"{total - size} leaves after the checkpoint at size {size}" in out
        assert "hashed again" not in out  # the stored frontier was used


def test_a_tampered_leaf_after_the_note_is_named(live: Copy) -> None:
    idx = live.leaf_of("reading", after=True)
    edit_record(live.conn, idx, b'"imp_wh":', b'"imp_wh":9')
    fails(live.since(), f"leaf {idx} (reading")


def test_a_tampered_row_or_interval_after_the_note_is_named(live: Copy) -> None:
    idx = live.leaf_of("settlement", after=True)
    live.conn.execute("UPDATE settlements SET amount = amount + 1 WHERE leaf=?", (idx,))
    fails(live.since(), f"(leaf {idx}): differs from its ledger record")


def test_a_tampered_leaf_before_the_note_is_not_rechecked_but_the_full_verify_names_it(live: Copy) -> None:
    idx = live.leaf_of("reading", after=False)
    edit_record(live.conn, idx, b'"imp_wh":', b'"imp_wh":9')
    live.conn.execute("UPDATE leaves SET commitment = zeroblob(32) WHERE idx=?", (idx - 1,))
    ok(live.since())  # the note's root still proves the old leaves' commitments; they are not opened
    out = live.full()
    assert out.returncode == 1 and f"leaf {idx} (reading" in out.stdout, out.stdout


def test_without_stored_frontiers_the_prefix_is_hashed_and_an_edit_before_the_note_fails(live: Copy) -> None:
    live.conn.execute("DELETE FROM frontiers")  # a database from before frontiers were stored
    assert "hashed again" in ok(live.since())
    live.conn.execute("UPDATE leaves SET commitment = zeroblob(32) WHERE idx=1")
    fails(live.since(), "do not have its root: the log does not extend it")


def test_an_edited_frontier_fails(live: Copy) -> None:
    live.conn.execute("UPDATE frontiers SET nodes = zeroblob(length(nodes)) WHERE size=?", (live.mid,))
    fails(live.since(), f"frontier stored for checkpoint {live.mid}: does not fold to the note's root")


def test_a_note_of_another_log_fails(live: Copy, tmp_path: Path) -> None:
    size, signed = live.mid, live.notes[live.mid].read_bytes()
    cp = note.parse_checkpoint(note.split(signed)[0])
    other = tmp_path / "other.note"
    other.write_bytes(note.sign_checkpoint(cp, Ed25519PrivateKey.generate()))  # same tree, another key
    fails(live.since(note_file=other), "--since note: not a checkpoint of this log")
    elsewhere = tmp_path / "elsewhere.note"
    elsewhere.write_bytes(note.sign_checkpoint(note.Checkpoint("other.example/log", size, cp.root),
                                               Ed25519PrivateKey.generate()))
    fails(live.since(note_file=elsewhere), "--since note: not a checkpoint of this log")


def test_a_rolled_back_log_fails_against_a_later_note(live: Copy) -> None:
    latest = max(live.notes)
    for table in ("leaves", "openings"):
        live.conn.execute(f"DELETE FROM {table} WHERE idx >= ?", (live.mid,))  # noqa: S608
    fails(live.since(latest), f"signs {latest} leaves but the log holds {live.mid}")


def test_a_checkpoint_after_the_note_that_signs_another_tree_fails(live: Copy) -> None:
    latest = max(live.notes)
    live.conn.execute("UPDATE leaves SET commitment = zeroblob(32) WHERE idx=?", (latest - 2,))
    fails(live.since(), f"checkpoint at size {latest}: root does not match leaves")


def test_an_erasure_after_the_note_of_leaves_before_it_passes(live: Copy) -> None:
    key = live.db.parent / "copy.db.ledger-key.pem"
    key.write_bytes((live.db.parent / "gateway.db.ledger-key.pem").read_bytes())
    out = tmeter("ledger", "erase", "--db", str(live.db), "--meter", "m001", "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    ok(live.since())


# --- closed periods archived to their own file (gateway/ledger/archive.py)


def archive(live: Copy, first: int, last: int) -> Path:
    out = live.db.parent / f"period-{first}-{last}.db"
    res = tmeter("ledger", "archive", "--db", str(live.db), "--pubkey", str(live.pub), "--origin", live.origin,
                 "--from", str(first), "--to", str(last), "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    return out


def verify_file(live: Copy, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return tmeter("ledger", "verify", "--db", str(path), "--pubkey", str(live.pub), "--origin", live.origin, *extra)


def test_an_archived_period_verifies_later_from_its_start_note_and_holds_no_keys(live: Copy) -> None:
    sizes = sorted(live.notes)
    first, last = live.mid, sizes[-2]
    out = archive(live, first, last)
    ok(verify_file(live, out, "--since", str(live.notes[first])))
    head = archive(live, 0, first)  # the log's first period: verified whole
    res = verify_file(live, head)
    assert res.returncode == 0 and "ledger OK" in res.stdout, res.stdout + res.stderr
    conn = sqlite3.connect(out)
    assert conn.execute("SELECT COUNT(*) FROM meter_keys").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM meters").fetchone()[0] == 0
    assert conn.execute("SELECT MIN(size), MAX(size) FROM checkpoints").fetchone() == (first, last)
    idx = conn.execute("SELECT MIN(idx) FROM leaves WHERE kind='settlement' AND idx >= ?", (first,)).fetchone()[0]
    edit_record(conn, idx, b'"amount":', b'"amount":1')
    fails(verify_file(live, out, "--since", str(live.notes[first])), f"leaf {idx} (settlement")
    following = archive(live, last, sizes[-1])  # the period's end note starts the next: they chain
    ok(verify_file(live, following, "--since", str(live.notes[last])))
    # An archive holds its own period only: from a note it was not cut at, its leaves cannot be proven.
    fails(verify_file(live, following, "--since", str(live.notes[sizes[-1]])), "do not have its root")
