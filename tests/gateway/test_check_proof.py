"""`tmeter ledger check-proof`: a proof `tmeter ledger prove` wrote, checked offline against a
checkpoint note and the public key from `export-checkpoint`, with the database moved away. Any
change to the proof, another checkpoint or another key fails (exit 1); files that are not a
proof, a note or a key get one line and exit 2."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.gateway.conftest import Offline, populate

ROOT = Path(__file__).parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tmeter", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


class Files:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.proof = folder / "proof.json"
        self.note = folder / "export" / "checkpoint.note"
        self.pub = folder / "export" / "pub.pem"

    def check(self, proof: Path | None = None, note: Path | None = None, pub: Path | None = None,
              *extra: str) -> subprocess.CompletedProcess[str]:
        return cli("ledger", "check-proof", "--proof", str(proof or self.proof), "--checkpoint",
                   str(note or self.note), "--pubkey", str(pub or self.pub), *extra)

    def variant(self, name: str, change) -> Path:  # noqa: ANN001 - change(doc) edits the proof document
        doc = json.loads(self.proof.read_text())
        change(doc)
        path = self.folder / name
        path.write_text(json.dumps(doc))
        return path


@pytest.fixture
def files(offline: Offline, tmp_path: Path) -> Files:
    populate(offline)
    iv, meter = offline.conn.execute("SELECT iv, meter FROM readings ORDER BY id LIMIT 1").fetchone()
    f = Files(tmp_path)
    out = cli("ledger", "prove", "--db", offline.cfg.db, "--meter", meter, "--interval", str(iv))
    assert out.returncode == 0, out.stderr
    f.proof.write_text(out.stdout)
    assert len(json.loads(out.stdout)["proofs"]) >= 2  # its bid, its reading (and award, settlement)
    out = cli("ledger", "export-checkpoint", "--db", offline.cfg.db, "--out", str(tmp_path / "export"))
    assert out.returncode == 0, out.stderr
    return f


def flip_bit(hex_string: str, bit: int = 0) -> str:
    raw = bytearray(bytes.fromhex(hex_string))
    raw[bit // 8] ^= 1 << (bit % 8)
    return raw.hex()


def fails(out: subprocess.CompletedProcess[str], reason: str) -> bool:
    return out.returncode == 1 and "proof FAILED" in out.stdout and reason in out.stdout


def test_a_proof_from_prove_verifies_without_the_database(files: Files, offline: Offline) -> None:
    # The checkpoint as a member gets it from the broker: the retained checkpoint message.
    message = files.folder / "checkpoint.msg"
    (out_msg,) = offline.scheduler.checkpoint()
    message.write_bytes(out_msg.payload)
    offline.conn.close()
    for suffix in ("", "-wal", "-shm"):  # the verdict cannot come from the database: there is none
        Path(f"{offline.cfg.db}{suffix}").unlink(missing_ok=True)
    out = files.check()
    assert out.returncode == 0, out.stdout + out.stderr
    n = len(json.loads(files.proof.read_text())["proofs"])
    assert out.stdout.count("OK: leaf ") == n and f"proof OK: {n} records" in out.stdout
    assert "type=reading meter=m000" in out.stdout
    assert files.check(None, message).returncode == 0
    origin = files.note.read_text().split("\n", 1)[0]
    assert files.check(None, None, None, "--origin", origin).returncode == 0
    assert fails(files.check(None, None, None, "--origin", "someone.else/c1"), "checkpoint: ")


def test_a_flipped_bit_anywhere_in_a_proof_fails(files: Files) -> None:
    def path_bit(doc: dict) -> None:
        doc["proofs"][0]["path"][0] = flip_bit(doc["proofs"][0]["path"][0], 77)

    def commitment_bit(doc: dict) -> None:
        doc["proofs"][0]["commitment"] = flip_bit(doc["proofs"][0]["commitment"], 3)

    def salt_bit(doc: dict) -> None:
        doc["proofs"][-1]["salt"] = flip_bit(doc["proofs"][-1]["salt"], 100)

    def record_bit(doc: dict) -> None:  # the interval's first digit, one bit off: still a valid record
        record = doc["proofs"][0]["record"]
        at = record.index('"iv":') + 5
        doc["proofs"][0]["record"] = record[:at] + chr(ord(record[at]) ^ 1) + record[at + 1:]

    def index(doc: dict) -> None:
        doc["proofs"][0]["leaf_index"] ^= 1

    assert fails(files.check(files.variant("path.json", path_bit)), "does not lead to the checkpoint's root")
    assert fails(files.check(files.variant("com.json", commitment_bit)), "do not open the commitment")
    assert fails(files.check(files.variant("salt.json", salt_bit)), "do not open the commitment")
    assert fails(files.check(files.variant("rec.json", record_bit)), "do not open the commitment")
    assert fails(files.check(files.variant("idx.json", index)), "does not lead to the checkpoint's root")


def test_another_record_in_the_proof_fails(files: Files) -> None:
    def other_opening(doc: dict) -> None:  # another leaf's record with its own salt and commitment
        a, b = doc["proofs"][0], doc["proofs"][1]
        a["record"], a["salt"], a["commitment"] = b["record"], b["salt"], b["commitment"]

    def no_opening(doc: dict) -> None:
        doc["proofs"][0]["record"] = doc["proofs"][0]["salt"] = None

    assert fails(files.check(files.variant("other.json", other_opening)), "does not lead to the checkpoint's root")
    assert fails(files.check(files.variant("bare.json", no_opening)), "the record is not in the proof")


def test_another_checkpoint_or_key_fails(files: Files, offline: Offline, tmp_path: Path) -> None:
    # The gateway goes on (an erasure signs a newer checkpoint): the old proof is not for it.
    assert cli("ledger", "erase", "--db", offline.cfg.db, "--meter", "m002", "--yes").returncode == 0
    assert cli("ledger", "export-checkpoint", "--db", offline.cfg.db, "--out", str(tmp_path / "newer")).returncode == 0
    assert fails(files.check(None, tmp_path / "newer" / "checkpoint.note"), "the proof is for tree size")
    # The same checkpoint body with its root changed: the signature no longer verifies.
    text = files.note.read_text().split("\n")
    text[2] = base64.b64encode(bytes.fromhex(flip_bit(base64.b64decode(text[2]).hex(), 5))).decode()
    forged = tmp_path / "forged.note"
    forged.write_text("\n".join(text))
    assert fails(files.check(None, forged), "does not verify")
    # Another key (a gateway that is not ours, or a key the member was handed by someone else).
    other = tmp_path / "other.pem"
    other.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert fails(files.check(None, None, other), "no signature by")


GARBAGE = [
    ("proof", b"\x00\xffnot json"), ("proof", b'{"checkpoint": "x"}'), ("proof", b'{"proofs": [{"leaf_index": 1}]}'),
    ("proof", b'{"proofs": [{"leaf_index": 0, "tree_size": 1, "commitment": "zz", "path": []}]}'),
    ("note", b"hello\n"), ("note", b""), ("note", b'{"note": "not base64!"}'), ("pub", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
    ("pub", b"\x00garbage"), ("missing", b""),
]


def test_garbage_files_get_one_line_and_exit_2(files: Files, tmp_path: Path) -> None:
    for n, (which, content) in enumerate(GARBAGE):
        bad = tmp_path / f"bad{n}"
        if which != "missing":
            bad.write_bytes(content)
        out = files.check(*{"proof": (bad, None, None), "note": (None, bad, None), "pub": (None, None, bad),
                            "missing": (tmp_path / "nowhere.json", None, None)}[which])
        assert out.returncode == 2 and out.stdout == "", (which, content, out.stdout + out.stderr)
        lines = out.stderr.strip().split("\n")
        assert len(lines) == 1 and lines[0].startswith("tmeter ledger check-proof: "), out.stderr
