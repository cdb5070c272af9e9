"""Independent checks of a ledger database: `tmeter ledger verify`, inclusion and consistency
proofs. Verification trusts nothing in the database but the public key: it recomputes every
commitment from its opening, every checkpoint root from the leaves (RFC 6962), checks every
Ed25519 signature (C2SP signed note) and that each stored row agrees with its ledger record.
Each failure is reported with what failed, so an auditor knows where to look."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.ledger import merkle, note
from gateway.ledger.tlog import commitment
from protocols import canonical
from protocols.errors import ProtocolError

MAX_PROBLEMS = 50

# Stored row -> the record fields it must equal: table, key columns, the leaf kind, columns.
ROW_CHECKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "readings": ("reading", ("meter", "boot", "seq", "iv", "imp_wh", "exp_wh", "cnt_imp_wh", "cnt_exp_wh", "flags")),
    "bids": ("bid", ("meter", "iv", "boot", "n", "curve")),
    "awards": ("award", ("iv", "meter", "q_wh", "price", "trades")),
    "settlements": ("settlement", ("iv", "meter", "rev", "award_wh", "metered_wh", "award_amount",
                                   "deviation_amount", "amount")),
}
JSON_COLUMNS = ("curve", "trades")


@dataclass
class Report:
    leaves: int = 0
    erased: int = 0
    checkpoints: int = 0
    unsigned_tail: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, what: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(what)


def _describe(kind: str, meter: str | None, iv: int | None) -> str:
    return kind + (f" of {meter}" if meter else "") + (f" for interval {iv}" if iv is not None else "")


def _check_leaves(conn: sqlite3.Connection, report: Report) -> list[bytes]:
    erased_meters = {r[0] for r in conn.execute("SELECT meter FROM erasures")}
    hashes: list[bytes] = []
    rows = conn.execute(
        "SELECT l.idx, l.commitment, l.kind, l.meter, l.iv, l.erased, o.salt, o.record"
        " FROM leaves l LEFT JOIN openings o ON o.idx = l.idx ORDER BY l.idx")
    for idx, com, kind, meter, iv, erased, salt, record in rows:
        if idx != len(hashes):
            report.fail(f"leaf {len(hashes)} is missing (the log jumps to leaf {idx}): a record was deleted")
            hashes.extend([b""] * (idx - len(hashes)))  # keep indices aligned for later checks
        hashes.append(merkle.leaf_hash(bytes(com)))
        what = f"leaf {idx} ({_describe(kind, meter, iv)})"
        if record is None:
            if erased and meter in erased_meters:
                report.erased += 1
            else:
                report.fail(f"{what}: its record and salt are gone, and {meter} was never erased")
            continue
        if commitment(bytes(salt), bytes(record)) != bytes(com):
            report.fail(f"{what}: record does not match its commitment (edited)")
            continue
        try:
            fields = canonical.parse(bytes(record))
        except ProtocolError:
            report.fail(f"{what}: record is not canonical JSON")
            continue
        if fields.get("type") != kind or fields.get("meter", meter) != meter or fields.get("iv", iv) != iv:
            report.fail(f"{what}: leaf labels disagree with its record")
    report.leaves = len(hashes)
    return hashes


def _check_checkpoints(conn: sqlite3.Connection, hashes: list[bytes], origin: str,
                       key: Ed25519PublicKey, report: Report) -> None:
    frontier = merkle.Frontier()
    rows = conn.execute("SELECT size, root, note FROM checkpoints ORDER BY size").fetchall()
    report.checkpoints = len(rows)
    for size, root, signed in rows:
        where = f"checkpoint at size {size}"
        try:
            cp = note.open_checkpoint(bytes(signed), origin, key)
        except note.NoteError as exc:
            report.fail(f"{where}: signature or format invalid ({exc})")
            continue
        if cp.size != size or cp.root != bytes(root):
            report.fail(f"{where}: stored size/root differ from the signed note")
        if size > len(hashes):
            report.fail(f"{where}: signs {size} leaves but the log holds {len(hashes)}: records were removed")
            continue
        while frontier.size < size:
            frontier.append(hashes[frontier.size])
        if frontier.root() != cp.root:
            report.fail(f"{where}: root does not match leaves 0..{size - 1}: a record was edited, removed or reordered")
    last = rows[-1][0] if rows else 0
    report.unsigned_tail = max(0, len(hashes) - last)


def _row_fields(row: sqlite3.Row, columns: tuple[str, ...]) -> dict[str, Any]:
    return {c: json.loads(row[c]) if c in JSON_COLUMNS else row[c] for c in columns}


def _check_rows(conn: sqlite3.Connection, report: Report) -> None:
    conn.row_factory = sqlite3.Row
    try:
        for table, (kind, columns) in ROW_CHECKS.items():
            seen: set[int] = set()
            for row in conn.execute(f"SELECT * FROM {table}"):  # noqa: S608 - fixed names
                seen.add(row["leaf"])
                opening = conn.execute("SELECT record FROM openings WHERE idx=?", (row["leaf"],)).fetchone()
                what = f"{table} row {tuple(row[c] for c in columns[:3])} (leaf {row['leaf']})"
                if opening is None:
                    report.fail(f"{what}: no ledger record behind it")
                    continue
                try:
                    record = canonical.parse(bytes(opening[0]))
                except ProtocolError:
                    continue  # reported by the leaf check
                if record.get("type") != kind or any(record.get(c) != v for c, v in _row_fields(row, columns).items()):
                    report.fail(f"{what}: differs from its ledger record (edited)")
            for (idx,) in conn.execute("SELECT l.idx FROM leaves l JOIN openings o ON o.idx=l.idx WHERE l.kind=?", (kind,)):
                if idx not in seen:
                    report.fail(f"leaf {idx} ({kind}): its {table} row is missing (deleted)")
    finally:
        conn.row_factory = None


def verify(conn: sqlite3.Connection, origin: str, key: Ed25519PublicKey) -> Report:
    report = Report()
    hashes = _check_leaves(conn, report)
    _check_checkpoints(conn, hashes, origin, key, report)
    _check_rows(conn, report)
    return report


# --- proofs for third parties


@dataclass
class InclusionProof:
    index: int
    size: int
    commitment: bytes
    salt: bytes | None
    record: bytes | None
    path: list[bytes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "leaf_index": self.index, "tree_size": self.size, "commitment": self.commitment.hex(),
            "salt": self.salt.hex() if self.salt else None,
            "record": self.record.decode() if self.record else None,
            "path": [h.hex() for h in self.path],
        }


def prove_leaf(conn: sqlite3.Connection, idx: int, size: int) -> InclusionProof:
    hashes = [merkle.leaf_hash(bytes(r[0])) for r in
              conn.execute("SELECT commitment FROM leaves WHERE idx < ? ORDER BY idx", (size,))]
    com, salt, record = conn.execute(
        "SELECT l.commitment, o.salt, o.record FROM leaves l LEFT JOIN openings o ON o.idx=l.idx WHERE l.idx=?",
        (idx,)).fetchone()
    return InclusionProof(idx, size, bytes(com), salt and bytes(salt), record and bytes(record),
                          merkle.inclusion_proof(idx, hashes))


def check_inclusion(proof: InclusionProof, root: bytes) -> bool:
    """What a third party does: open the commitment, then walk the audit path (RFC 9162 2.1.3.2)."""
    if proof.record is not None and proof.salt is not None:
        if commitment(proof.salt, proof.record) != proof.commitment:
            return False
    return merkle.verify_inclusion(proof.index, proof.size, merkle.leaf_hash(proof.commitment), proof.path, root)


def consistency(conn: sqlite3.Connection, old_size: int, new_size: int) -> list[bytes]:
    hashes = [merkle.leaf_hash(bytes(r[0])) for r in
              conn.execute("SELECT commitment FROM leaves WHERE idx < ? ORDER BY idx", (new_size,))]
    if len(hashes) != new_size:
        raise ValueError(f"the log has fewer than {new_size} leaves")
    return merkle.consistency_proof(old_size, hashes)
