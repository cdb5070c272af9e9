"""`tmeter ledger prune --archive FILE` (retention, issue 14): an archived period leaves the Pi
only when its archive verifies and holds every leaf removed; afterwards the Pi's log still
verifies whole (from the pruned prefix's frontier), proves its kept leaves, keeps running, and
proofs of archived leaves still check against their notes and the archive."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.ledger import note
from gateway.web import memberdata
from tests.gateway.conftest import INTERVAL_S, Offline, make_config, populate, tmeter
from tests.gateway.test_ledger_tamper import edit_record, more


@dataclass
class Pi:
    off: Offline
    specs: list
    pub: Path
    folder: Path

    @property
    def db(self) -> str:
        return str(self.off.cfg.db)

    def sizes(self) -> list[int]:
        return [r[0] for r in self.off.conn.execute("SELECT size FROM checkpoints ORDER BY size")]

    def note_file(self, size: int) -> Path:
        path = self.folder / f"cp-{size}.note"
        row = self.off.conn.execute("SELECT note FROM checkpoints WHERE size=?", (size,)).fetchone()
        if row is not None:
            path.write_bytes(bytes(row[0]))
        return path

    def cli(self, *args: str, db: str | None = None) -> subprocess.CompletedProcess[str]:
        out = tmeter("ledger", args[0], "--db", db or self.db, "--pubkey", str(self.pub),
                     "--origin", self.off.cfg.origin, *args[1:])
        assert "Traceback" not in out.stderr, out.stderr
        return out

    def archive(self, first: int, last: int) -> Path:
        out = self.folder / f"period-{first}-{last}.db"
        res = self.cli("archive", "--from", str(first), "--to", str(last), "--out", str(out))
        assert res.returncode == 0, res.stdout + res.stderr
        return out

    def leaves(self) -> tuple[int, int]:
        return self.off.conn.execute("SELECT MIN(idx), COUNT(*) FROM leaves").fetchone()


@pytest.fixture
def pi(offline: Offline, tmp_path: Path) -> Pi:
    specs = populate(offline, intervals=4)
    more(offline, specs, 3)
    pub = tmp_path / "pub.pem"
    pub.write_bytes(note.public_pem(offline.ledger.signing_key.public_key()))  # type: ignore[union-attr]
    return Pi(offline, specs, pub, tmp_path)


def verified(out: subprocess.CompletedProcess[str], needle: str = "ledger OK") -> str:
    assert out.returncode == 0 and needle in out.stdout, out.stdout + out.stderr
    return out.stdout


def refused(out: subprocess.CompletedProcess[str], needle: str) -> None:
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "nothing pruned" in lines[0] and needle in lines[0], out.stderr


def prove(pi: Pi, meter: str, iv: int, db: str | None = None) -> Path:
    res = pi.cli("prove", "--meter", meter, "--interval", str(iv), db=db)
    assert res.returncode == 0 and json.loads(res.stdout)["verified"], res.stdout + res.stderr
    path = pi.folder / f"proof-{meter}-{iv}-{Path(db or pi.db).stem}.json"
    path.write_text(res.stdout)
    return path


def check_proof(pi: Pi, proof: Path, checkpoint: Path) -> None:
    res = tmeter("ledger", "check-proof", "--proof", str(proof), "--checkpoint", str(checkpoint),
                 "--pubkey", str(pi.pub))
    assert res.returncode == 0 and "proof OK" in res.stdout, res.stdout + res.stderr


def first_reading(pi: Pi) -> tuple[str, int]:
    return pi.off.conn.execute("SELECT meter, iv FROM leaves WHERE kind='reading' ORDER BY idx LIMIT 1").fetchone()


def test_prune_then_the_pi_verifies_proves_and_keeps_running(pi: Pi) -> None:
    sizes = pi.sizes()
    mid = sizes[len(sizes) // 2]
    meter, early_iv = first_reading(pi)
    old_proof, old_note = prove(pi, meter, early_iv), pi.note_file(sizes[-1])
    first_note, mid_note = pi.note_file(sizes[0]), pi.note_file(mid)  # what an auditor kept
    arc = pi.archive(0, mid)
    before = pi.leaves()
    out = verified(pi.cli("prune", "--archive", str(arc), "--yes"), "pruned")
    cut, kept = pi.leaves()
    assert cut > 0 and kept < before[1] and f"keeps leaves {cut} on" in out
    assert pi.off.conn.execute("SELECT COUNT(*) FROM leaves WHERE kind='prune'").fetchone()[0] == 1
    assert f"from leaf {cut} (the leaves before it archived and pruned)" in verified(pi.cli("verify"))
    # The daemon's ledger resumes from the pruned frontier: later intervals verify too.
    more(pi.off, pi.specs, 2)
    verified(pi.cli("verify"))
    verified(pi.cli("verify", "--since", str(mid_note)), "ledger OK since the note")
    res = pi.cli("verify", "--since", str(first_note))
    assert res.returncode == 1 and "archived and pruned" in res.stdout and f"size {mid}" in res.stdout, res.stdout
    # Kept leaves: proven on the Pi, by the CLI and by the member page.
    late_iv = pi.off.conn.execute("SELECT MAX(iv) FROM leaves WHERE kind='reading'").fetchone()[0]
    check_proof(pi, prove(pi, pi.specs[0].meter, late_iv), pi.note_file(pi.sizes()[-1]))
    size = pi.sizes()[-1]
    doc = memberdata.proof_document(pi.off.conn, pi.specs[0].meter, late_iv, size)
    assert doc is not None and doc["verified"] and doc["proofs"]
    # Archived leaves: a proof taken before still checks; the archive proves them anew.
    check_proof(pi, old_proof, old_note)
    check_proof(pi, prove(pi, meter, early_iv, db=str(arc)), mid_note)
    res = pi.cli("prove", "--meter", meter, "--interval", str(early_iv))
    # Gone from the Pi, and the answer says where it went.
    assert res.returncode == 1 and f"pruned: the records of interval {early_iv}" in res.stderr, res.stderr
    assert f"in archive {arc.resolve()}" in res.stderr and f"prove --db {arc.resolve()}" in res.stderr
    cons = pi.cli("consistency", "--old", str(mid))
    assert cons.returncode == 0 and json.loads(cons.stdout)["verified"], cons.stdout + cons.stderr


def test_periods_prune_one_after_another_and_chain(pi: Pi) -> None:
    sizes = pi.sizes()
    a, b = sizes[len(sizes) // 3], sizes[2 * len(sizes) // 3]
    verified(pi.cli("prune", "--archive", str(pi.archive(0, a)), "--yes"), "pruned")
    second = pi.archive(a, b)
    verified(pi.cli("verify", "--since", str(pi.note_file(a)), db=str(second)), "ledger OK since the note")
    verified(pi.cli("prune", "--archive", str(second), "--yes"), "pruned")
    assert pi.off.conn.execute("SELECT through FROM pruned").fetchone()[0] == b
    more(pi.off, pi.specs, 1)
    verified(pi.cli("verify"))
    refused(pi.cli("prune", "--archive", str(second), "--yes"), "nothing to prune")


def test_a_bad_archive_is_refused_in_one_line_and_nothing_goes(pi: Pi, tmp_path: Path) -> None:
    sizes = pi.sizes()
    mid = sizes[len(sizes) // 2]
    before = pi.leaves()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    refused(pi.cli("prune", "--archive", str(junk), "--yes"), "not an archive")
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE t (x)").connection.close()
    refused(pi.cli("prune", "--archive", str(empty), "--yes"), "tables missing")
    refused(pi.cli("prune", "--archive", str(tmp_path / "missing.db"), "--yes"), "no archive file")
    # Partial: a later period while the first is still on the Pi.
    refused(pi.cli("prune", "--archive", str(pi.archive(mid, sizes[-1])), "--yes"), "archive (and prune) the period before")
    # Edited: a record changed in the archive.
    edited = pi.archive(0, mid)
    conn = sqlite3.connect(edited)
    idx = conn.execute("SELECT MIN(idx) FROM leaves WHERE kind='settlement'").fetchone()[0]
    edit_record(conn, idx, b'"amount":', b'"amount":1')
    conn.close()
    refused(pi.cli("prune", "--archive", str(edited), "--yes"), "does not verify")
    # Another log's archive (same origin name, another key).
    other = Offline(make_config(tmp_path / "other", None, interval_s=INTERVAL_S, gate_closure_s=10), pi.off.clock.t)
    other.cfg.settlement.grace_s = 5
    populate(other, intervals=2)
    foreign = tmp_path / "foreign.db"
    res = tmeter("ledger", "archive", "--db", str(other.cfg.db), "--from", "0", "--to",
                 str(other.conn.execute("SELECT MAX(size) FROM checkpoints").fetchone()[0]), "--out", str(foreign))
    assert res.returncode == 0, res.stderr
    refused(pi.cli("prune", "--archive", str(foreign), "--yes"), "")
    assert pi.leaves() == before
    assert pi.off.conn.execute("SELECT COUNT(*) FROM pruned").fetchone()[0] == 0
    verified(pi.cli("verify"))


def test_tampering_with_what_pruning_left_is_named(pi: Pi) -> None:
    sizes = pi.sizes()
    verified(pi.cli("prune", "--archive", str(pi.archive(0, sizes[len(sizes) // 2])), "--yes"), "pruned")
    copy = pi.folder / "copy.db"
    pi.off.conn.execute("VACUUM INTO ?", (str(copy),))

    def fails_with(sql: str, args: tuple[object, ...], needle: str) -> None:
        path = pi.folder / "tampered.db"
        path.unlink(missing_ok=True)
        path.write_bytes(copy.read_bytes())
        conn = sqlite3.connect(path)
        conn.execute(sql, args)
        conn.commit()
        conn.close()
        out = pi.cli("verify", db=str(path))
        assert out.returncode == 1 and needle in out.stdout, out.stdout + out.stderr

    cut = pi.leaves()[0]
    fails_with("DELETE FROM pruned", (), f"leaf 0 is missing (the log jumps to leaf {cut})")
    fails_with("UPDATE pruned SET nodes = randomblob(length(nodes))", (), "do not have the root")
    fails_with("UPDATE pruned SET archive_sha256 = 'ab' || substr(archive_sha256, 3)", (), "no signed prune leaf")
    # Deleting more leaves and moving the cut to hide it: the signed prune leaf names the real cut.
    fails_with("UPDATE pruned SET cut = cut + 1", (), "")
    through = pi.off.conn.execute("SELECT through FROM pruned").fetchone()[0]
    fails_with("DELETE FROM checkpoints WHERE size=?", (through,), f"checkpoint (size {through})")


def test_a_database_from_before_retention_still_verifies_and_proves(pi: Pi) -> None:
    pi.off.conn.execute("DROP TABLE pruned")
    verified(pi.cli("verify"))
    meter, iv = first_reading(pi)
    check_proof(pi, prove(pi, meter, iv), pi.note_file(pi.sizes()[-1]))
