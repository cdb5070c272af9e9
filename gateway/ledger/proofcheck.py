"""Checking a downloaded inclusion proof offline: `tmeter ledger check-proof`.

A member or an auditor holds three files: the proof JSON `tmeter ledger prove` writes, a signed
checkpoint note obtained independently (the retained checkpoint topic, `export-checkpoint`, a
witness) and the gateway's Ed25519 public key. The verdict depends on those alone, never on the
gateway's database: the note's signature is checked (C2SP signed note, gateway/ledger/note.py),
each record is opened against its commitment (SHA-256 of salt and record, gateway/ledger/tlog.py)
and each commitment's audit path is walked up to the checkpoint's root (RFC 9162 2.1.3.2,
gateway/ledger/merkle.py). The checkpoint the proof file carries is not trusted: only the one
given beside it.

Files that are not what they claim (no JSON, no note, no key) raise ``ProofFileError``, one line
for the operator; everything that parses gets a verdict.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.ledger import merkle, note
from gateway.ledger.tlog import commitment
from gateway.ledger.verify import InclusionProof

HASH_LEN = 32


class ProofFileError(ValueError):
    """An input file is malformed (not a verdict on the ledger)."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    lines: list[str]  # one per proof, and the reason the checkpoint failed if it did


def _hex(value: Any, what: str, length: int | None = HASH_LEN) -> bytes:
    if not isinstance(value, str):
        raise ProofFileError(f"{what} is not a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ProofFileError(f"{what} is not hex") from None
    if length is not None and len(raw) != length:
        raise ProofFileError(f"{what} is {len(raw)} bytes, not {length}")
    return raw


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProofFileError(f"{what} is not a non-negative integer")
    return value


def _one_proof(item: Any, n: int) -> InclusionProof:
    where = f"proof {n}"
    if not isinstance(item, dict):
        raise ProofFileError(f"{where} is not an object")
    try:
        index, size, path = item["leaf_index"], item["tree_size"], item["path"]
        com, salt, record = item["commitment"], item.get("salt"), item.get("record")
    except KeyError as exc:
        raise ProofFileError(f"{where} has no {exc.args[0]}") from None
    if not isinstance(path, list):
        raise ProofFileError(f"{where}: path is not a list")
    if record is not None and not isinstance(record, str):
        raise ProofFileError(f"{where}: record is not a string")
    return InclusionProof(
        _count(index, f"{where}: leaf_index"), _count(size, f"{where}: tree_size"),
        _hex(com, f"{where}: commitment"), None if salt is None else _hex(salt, f"{where}: salt", None),
        None if record is None else record.encode(), [_hex(h, f"{where}: path[{i}]") for i, h in enumerate(path)])


def load_proofs(data: bytes) -> list[InclusionProof]:
    """The proofs of a `tmeter ledger prove` file; ProofFileError if it is not one."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ProofFileError("not JSON (expected what `tmeter ledger prove` writes)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("proofs"), list) or not doc["proofs"]:
        raise ProofFileError("no proofs in it (expected what `tmeter ledger prove` writes)")
    return [_one_proof(item, n) for n, item in enumerate(doc["proofs"], 1)]


def read_note(data: bytes) -> bytes:
    """The signed note in a checkpoint file: the note itself, or the gateway's checkpoint message
    as the retained checkpoint topic holds it (canonical JSON, the note base64 in ``note``)."""
    if not data.lstrip().startswith(b"{"):
        return data
    try:
        msg = json.loads(data.split(b"\n", 1)[0])
        return base64.b64decode(msg["note"], validate=True)
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise ProofFileError("not a checkpoint note nor a checkpoint message (no base64 note in it)") from None


def note_origin(signed: bytes) -> str:
    """The origin a checkpoint note names on its first line; ProofFileError if it is not a note."""
    try:
        text, _ = note.split(signed)
        return note.parse_checkpoint(text).origin
    except note.NoteError as exc:
        raise ProofFileError(f"not a signed checkpoint note ({exc})") from None


def _describe(record: bytes | None) -> str:
    if record is None:
        return "record not opened"
    try:
        msg = json.loads(record)
        return " ".join(f"{k}={msg[k]}" for k in ("type", "meter", "iv") if k in msg) or "record"
    except (ValueError, TypeError):
        return "record"


def check_one(proof: InclusionProof, cp: note.Checkpoint) -> str | None:
    """None if the proof shows its record under ``cp``, else why not."""
    if proof.size != cp.size:
        return (f"the proof is for tree size {proof.size}, the checkpoint for {cp.size}: check it against the"
                " checkpoint it was made for (or prove again under this one)")
    if proof.record is None or proof.salt is None:
        return "the record is not in the proof (erased?): its content cannot be checked"
    if commitment(proof.salt, proof.record) != proof.commitment:
        return "the record and salt do not open the commitment"
    if not merkle.verify_inclusion(proof.index, proof.size, merkle.leaf_hash(proof.commitment), proof.path, cp.root):
        return "the audit path does not lead to the checkpoint's root"
    return None


def check(proofs: list[InclusionProof], signed: bytes, origin: str, key: Ed25519PublicKey) -> Verdict:
    """The verdict on ``proofs`` under the checkpoint note ``signed`` by (origin, key)."""
    try:
        cp = note.open_checkpoint(signed, origin, key)
    except note.NoteError as exc:
        return Verdict(False, [f"FAIL: checkpoint: {exc}"])
    lines, ok = [], True
    for p in proofs:
        why = check_one(p, cp)
        ok &= why is None
        head = f"leaf {p.index} ({_describe(p.record)})"
        lines.append(f"OK: {head} is in the log under checkpoint {cp.origin} size {cp.size}" if why is None
                     else f"FAIL: {head}: {why}")
    return Verdict(ok, lines)
