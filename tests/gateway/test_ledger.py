"""Ledger verification, tamper detection, proofs, erasure and openssl interop of checkpoints."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.ledger import merkle, note, records, verify
from gateway.ledger.tlog import commitment, load_hashes
from tests.gateway.conftest import Offline, populate

CLI = [sys.executable, "-m", "tmeter"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2])


def report(off: Offline) -> verify.Report:
    return verify.verify(off.conn, off.cfg.origin, off.ledger.signing_key.public_key())  # type: ignore[union-attr]


@pytest.fixture
def filled(offline: Offline) -> Offline:
    populate(offline)
    return offline


def test_clean_ledger_verifies_from_the_command_line(filled: Offline) -> None:
    r = report(filled)
    assert r.ok, r.problems
    assert r.leaves > 20 and r.checkpoints >= 3 and r.unsigned_tail == 0
    out = run_cli("ledger", "verify", "--db", filled.cfg.db)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ledger OK" in out.stdout


def _reading_leaf(off: Offline) -> int:
    return off.conn.execute("SELECT leaf FROM readings ORDER BY id LIMIT 1").fetchone()[0]


def test_edited_reading_row_is_named(filled: Offline) -> None:
    filled.conn.execute("UPDATE readings SET imp_wh = imp_wh + 1 WHERE id = 1")
    out = run_cli("ledger", "verify", "--db", filled.cfg.db)
    assert out.returncode == 1
    assert "readings row" in out.stdout and "differs from its ledger record" in out.stdout


def test_edited_record_fails_its_commitment(filled: Offline) -> None:
    leaf = _reading_leaf(filled)
    rec = filled.conn.execute("SELECT record FROM openings WHERE idx=?", (leaf,)).fetchone()[0]
    edited = records.pack(records.unpack(bytes(rec)).replace(b'"imp_wh":0', b'"imp_wh":9'))
    filled.conn.execute("UPDATE openings SET record=? WHERE idx=?", (edited, leaf))
    problems = report(filled).problems
    assert any(f"leaf {leaf} " in p and "does not match its commitment" in p for p in problems), problems


def test_record_rewritten_with_new_commitment_breaks_the_signed_root(filled: Offline) -> None:
    leaf = _reading_leaf(filled)
    salt, rec = filled.conn.execute("SELECT salt, record FROM openings WHERE idx=?", (leaf,)).fetchone()
    forged = records.unpack(bytes(rec)).replace(b'"exp_wh":50', b'"exp_wh":90')
    filled.conn.execute("UPDATE openings SET record=? WHERE idx=?", (forged, leaf))
    filled.conn.execute("UPDATE leaves SET commitment=? WHERE idx=?", (commitment(bytes(salt), forged), leaf))
    filled.conn.execute("UPDATE readings SET exp_wh=90 WHERE leaf=?", (leaf,))
    problems = report(filled).problems
    assert any("root does not match" in p for p in problems), problems


def test_deleted_record_is_named(filled: Offline) -> None:
    leaf = _reading_leaf(filled)
    for table in ("leaves", "openings"):
        filled.conn.execute(f"DELETE FROM {table} WHERE idx=?", (leaf,))
    filled.conn.execute("DELETE FROM readings WHERE leaf=?", (leaf,))
    problems = report(filled).problems
    assert any(f"leaf {leaf} is missing" in p for p in problems), problems


def test_deleted_row_only_is_named(filled: Offline) -> None:
    leaf = _reading_leaf(filled)
    filled.conn.execute("DELETE FROM readings WHERE leaf=?", (leaf,))
    assert any(f"leaf {leaf} (reading): its readings row is missing" in p for p in report(filled).problems)


def test_reordered_records_break_the_root(filled: Offline) -> None:
    a, b = [r[0] for r in filled.conn.execute("SELECT leaf FROM readings ORDER BY id LIMIT 2")]
    rows = {i: filled.conn.execute("SELECT l.commitment, o.salt, o.record FROM leaves l JOIN openings o"
                                   " ON o.idx=l.idx WHERE l.idx=?", (i,)).fetchone() for i in (a, b)}
    for i, j in ((a, b), (b, a)):
        filled.conn.execute("UPDATE leaves SET commitment=?, meter=(SELECT meter FROM readings WHERE leaf=?) WHERE idx=?",
                            (rows[j][0], j, i))
        filled.conn.execute("UPDATE openings SET salt=?, record=? WHERE idx=?", (rows[j][1], rows[j][2], i))
    filled.conn.execute("UPDATE readings SET leaf=-leaf WHERE leaf IN (?, ?)", (a, b))
    filled.conn.execute("UPDATE readings SET leaf=? WHERE leaf=?", (b, -a))
    filled.conn.execute("UPDATE readings SET leaf=? WHERE leaf=?", (a, -b))
    problems = report(filled).problems
    assert any("root does not match" in p for p in problems), problems


def test_altered_checkpoint_is_named(filled: Offline) -> None:
    size, signed = filled.conn.execute("SELECT size, note FROM checkpoints ORDER BY size LIMIT 1").fetchone()
    lines = bytes(signed).split(b"\n")
    lines[1] = str(size + 1).encode()
    filled.conn.execute("UPDATE checkpoints SET note=? WHERE size=?", (b"\n".join(lines), size))
    out = run_cli("ledger", "verify", "--db", filled.cfg.db)
    assert out.returncode == 1
    assert f"checkpoint at size {size}: signature or format invalid" in out.stdout


def test_truncated_log_is_named(filled: Offline) -> None:
    n = filled.ledger.size
    filled.conn.execute("DELETE FROM leaves WHERE idx=?", (n - 1,))
    filled.conn.execute("DELETE FROM openings WHERE idx=?", (n - 1,))
    problems = report(filled).problems
    assert any("rolled back or truncated" in p for p in problems), problems


def test_exported_checkpoint_verifies_with_openssl_and_fails_after_one_byte(filled: Offline, tmp_path: Path) -> None:
    out_dir = tmp_path / "export"
    res = run_cli("ledger", "export-checkpoint", "--db", filled.cfg.db, "--out", str(out_dir))
    assert res.returncode == 0, res.stderr
    cmd = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(out_dir / "pub.pem"), "-rawin",
           "-in", str(out_dir / "body"), "-sigfile", str(out_dir / "sig")]
    ok = subprocess.run(cmd, capture_output=True, text=True)
    assert ok.returncode == 0 and "Signature Verified Successfully" in ok.stdout, ok.stdout + ok.stderr
    body = bytearray((out_dir / "body").read_bytes())
    body[len(body) // 2] ^= 0x01
    (out_dir / "body").write_bytes(bytes(body))
    assert subprocess.run(cmd, capture_output=True).returncode != 0
    # The body is a C2SP tlog-checkpoint and the note's key id follows the signed-note rule.
    signed = (out_dir / "checkpoint.note").read_bytes()
    text, sigs = note.split(signed)
    cp = note.parse_checkpoint(text)
    pub = filled.ledger.signing_key.public_key()  # type: ignore[union-attr]
    assert sigs[0].key_id == note.key_id(cp.origin, note.raw_public(pub))
    assert cp.root == merkle.root(load_hashes(filled.conn)[: cp.size])


def test_inclusion_and_consistency_proofs_from_the_command_line(filled: Offline) -> None:
    iv, meter = filled.conn.execute("SELECT iv, meter FROM readings ORDER BY id LIMIT 1").fetchone()
    res = run_cli("ledger", "prove", "--db", filled.cfg.db, "--meter", meter, "--interval", str(iv))
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["verified"] and doc["proofs"]
    # Check one proof the way a third party would, from the printed JSON alone.
    text, _ = note.split(doc["checkpoint"].encode())
    cp = note.parse_checkpoint(text)
    p = doc["proofs"][0]
    assert commitment(bytes.fromhex(p["salt"]), p["record"].encode()).hex() == p["commitment"]
    assert merkle.verify_inclusion(p["leaf_index"], p["tree_size"], merkle.leaf_hash(bytes.fromhex(p["commitment"])),
                                   [bytes.fromhex(h) for h in p["path"]], cp.root)
    sizes = [r[0] for r in filled.conn.execute("SELECT size FROM checkpoints ORDER BY size")]
    res = run_cli("ledger", "consistency", "--db", filled.cfg.db, "--old", str(sizes[1]), "--new", str(sizes[-1]))
    assert res.returncode == 0 and json.loads(res.stdout)["verified"], res.stdout + res.stderr


def test_erasing_a_member_keeps_the_log_verifiable(filled: Offline) -> None:
    meter = "m001"
    res = run_cli("ledger", "erase", "--db", filled.cfg.db, "--meter", meter, "--yes")
    assert res.returncode == 0, res.stderr
    r = report(filled)
    assert r.ok, r.problems
    assert r.erased > 0
    assert filled.conn.execute("SELECT COUNT(*) FROM readings WHERE meter=?", (meter,)).fetchone()[0] == 0
    leaf = filled.conn.execute("SELECT idx FROM leaves WHERE meter=? LIMIT 1", (meter,)).fetchone()[0]
    size, root, _ = filled.conn.execute("SELECT size, root, note FROM checkpoints ORDER BY size DESC").fetchone()
    proof = verify.prove_leaf(filled.conn, leaf, size)
    assert proof.record is None and verify.check_inclusion(proof, bytes(root))
    # A record removed without an erasure is still caught.
    other = filled.conn.execute("SELECT leaf FROM readings WHERE meter='m000' LIMIT 1").fetchone()[0]
    filled.conn.execute("DELETE FROM openings WHERE idx=?", (other,))
    assert any(f"leaf {other} " in p and "no erasure leaf of m000 names it" in p for p in report(filled).problems)


def test_checkpoint_message_carries_the_signed_note(filled: Offline) -> None:
    from protocols import messages

    out = filled.scheduler.checkpoint()
    assert out[0].retain and out[0].topic == "tm/v1/c1/ledger/checkpoint"
    _, _, msg, _ = messages.decode(out[0].topic, out[0].payload)
    signed = base64.b64decode(msg["note"])
    cp = note.open_checkpoint(signed, filled.cfg.origin, filled.ledger.signing_key.public_key())  # type: ignore[union-attr]
    assert cp.size == msg["size"] == filled.ledger.size


def test_a_ledger_from_before_bill_shares_opens_migrated_and_verifies(offline: Offline, monkeypatch) -> None:  # noqa: ANN001
    # What the previous version wrote: no share of the grid bill, in the row or in the record.
    from gateway import db
    from gateway.interval import scheduler, settlement

    monkeypatch.setattr(settlement, "share_grid_bill", lambda lines, *args: lines)
    real_encode = scheduler.encode_record
    monkeypatch.setattr(scheduler, "encode_record", lambda kind, fields: real_encode(
        kind, {k: v for k, v in fields.items() if k != "share_amount"}))
    populate(offline)
    offline.conn.execute("ALTER TABLE settlements DROP COLUMN share_amount")
    assert report(offline).problems  # the row check wants the column: this is what migration fixes
    migrated = db.connect(offline.cfg.db)
    assert "share_amount" in {r[1] for r in migrated.execute("PRAGMA table_info(settlements)")}
    assert migrated.execute("SELECT COUNT(*) FROM settlements WHERE share_amount != 0").fetchone()[0] == 0
    migrated.close()
    verdict = report(offline)
    assert verdict.ok, verdict.problems


def test_erasing_asks_first_and_refuses_an_unknown_meter(filled: Offline) -> None:
    before = filled.conn.execute("SELECT COUNT(*) FROM readings WHERE meter='m001'").fetchone()[0]
    res = run_cli("ledger", "erase", "--db", filled.cfg.db, "--meter", "m001")  # a script, no --yes
    assert res.returncode == 2 and "confirm with --yes" in res.stderr and len(res.stderr.splitlines()) == 1
    assert filled.conn.execute("SELECT COUNT(*) FROM readings WHERE meter='m001'").fetchone()[0] == before > 0
    res = run_cli("ledger", "erase", "--db", filled.cfg.db, "--meter", "m0O1", "--yes")  # a typo
    assert res.returncode == 2 and "no meter 'm0O1'" in res.stderr
    assert filled.conn.execute("SELECT COUNT(*) FROM erasures").fetchone()[0] == 0
