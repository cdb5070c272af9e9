"""Checking a downloaded inclusion proof offline: `tmeter ledger check-proof`.

A member or an auditor holds three files: the proof JSON `tmeter ledger prove` writes, a signed
checkpoint note obtained independently (the retained checkpoint topic, `export-checkpoint`, a
witness) and the gateway's Ed25519 public key. The verdict depends on those alone, never on the
gateway's database: the note's signature is checked (C2SP signed note, gateway/ledger/note.py),
each record is opened against its commitment (SHA-256 of salt and record, gateway/ledger/tlog.py)
and each commitment's audit path is walked up to the checkpoint's root (RFC 9162 2.1.3.2,
gateway/ledger/merkle.py). The checkpoint the proof file carries is not trusted: only the one
given beside it.

With the meter's public keys (``--meter-key``, PEM; issue 15) every reading in the proof must
also carry the meter's ECDSA signature over the exact record bytes (gateway/meterkeys.py), which
no one but the meter can make: the gateway could have logged a reading it made itself, and the
checkpoint would prove that faithfully. Without them, signatures are not checked (and the
verdict says so).

Files that are not what they claim (no JSON, no note, no key) raise ``ProofFileError``, one line
for the operator; everything that parses gets a verdict.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway import meterkeys
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
        None if record is None else record.encode(), [_hex(h, f"{where}: path[{i}]") for i, h in enumerate(path)],
        _signature(item.get("signature"), where))


def _signature(value: Any, where: str) -> tuple[int, bytes] | None:
    """A proof's ``signature`` object (verify.InclusionProof.to_dict) as (skid, r || s)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("skid"), int) or isinstance(value["skid"], bool):
        raise ProofFileError(f"{where}: signature is not an object with an integer skid")
    if value.get("alg", meterkeys.ALGORITHM) != meterkeys.ALGORITHM:
        raise ProofFileError(f"{where}: signature algorithm {str(value['alg'])[:40]!r} is not {meterkeys.ALGORITHM}")
    return value["skid"], _hex(value.get("sig"), f"{where}: signature sig", meterkeys.SIG_LEN)


def load_meter_key(data: bytes) -> bytes:
    """A meter's public key from a PEM file (`tmeter ledger export-readings` writes them)."""
    try:
        return meterkeys.pub_of_pem(data)
    except meterkeys.MeterKeyError as exc:
        raise ProofFileError(f"meter key: {exc}") from None


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


def _is_reading(record: bytes | None) -> bool:
    try:
        return record is not None and json.loads(record).get("type") == "reading"
    except (ValueError, AttributeError):
        return False


def check_signature(proof: InclusionProof, meter_keys: list[bytes]) -> tuple[str | None, str]:
    """(None, the key's fingerprint) if the proof's record carries a signature by one of
    ``meter_keys`` over its exact bytes, else (why not, "")."""
    if proof.record is None:
        return "the record is not in the proof: its signature cannot be checked", ""
    if proof.signature is None:
        return "the reading carries no meter signature (the meter did not sign it, or it was dropped)", ""
    for pub in meter_keys:
        if meterkeys.verify(meterkeys.load(pub), proof.record, proof.signature[1]):
            return None, meterkeys.fingerprint(pub)
    names = ", ".join(meterkeys.fingerprint(p) for p in meter_keys)
    return f"the meter signature (key {proof.signature[0]}) does not verify under the meter's key {names}", ""


def check(proofs: list[InclusionProof], signed: bytes, origin: str, key: Ed25519PublicKey,
          meter_keys: list[bytes] | None = None) -> Verdict:
    """The verdict on ``proofs`` under the checkpoint note ``signed`` by (origin, key); with
    ``meter_keys`` (65-byte points) every reading must also be signed by one of them."""
    try:
        cp = note.open_checkpoint(signed, origin, key)
    except note.NoteError as exc:
        return Verdict(False, [f"FAIL: checkpoint: {exc}"])
    lines, ok = [], True
    for p in proofs:
        why = check_one(p, cp)
        head = f"leaf {p.index} ({_describe(p.record)})"
        by = ""
        if why is None and meter_keys and _is_reading(p.record):
            why, fp = check_signature(p, meter_keys)
            by = f", signed by the meter's key {fp}"
        ok &= why is None
        lines.append(f"OK: {head} is in the log under checkpoint {cp.origin} size {cp.size}{by}" if why is None
                     else f"FAIL: {head}: {why}")
    if not meter_keys:
        lines.append("meter signatures NOT checked (give the meter's public key: --meter-key PEM)")
    return Verdict(ok, lines)
