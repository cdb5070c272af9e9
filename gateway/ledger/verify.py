"""Independent checks of a ledger database: `tmeter ledger verify`, inclusion and consistency
proofs. Verification trusts nothing in the database but the public key and the checkpoints an
auditor brings: it recomputes every commitment from its opening, every checkpoint root from the
leaves (RFC 6962), checks every Ed25519 signature (C2SP signed note), that the log extends every
given checkpoint and every checkpoint a meter witnessed (RFC 9162 2.1.4 consistency proofs),
that every checkpoint the log records exists, that erasures carry their own evidence, and that
each stored row the settlement depends on (readings, bids, awards, settlements, intervals)
agrees with its ledger leaves. Every input gets a verdict: each failure is one line naming what
failed, so an auditor knows where to look; no database content can raise out of ``verify``."""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway import meterkeys
from gateway.ledger import merkle, note, records, tlog
from gateway.ledger.tlog import commitment, unpack_frontier
from protocols import canonical
from protocols.errors import ProtocolError

MAX_PROBLEMS = 50
TABLES = ("leaves", "openings", "checkpoints", "erasures", "readings", "bids", "awards", "settlements",
          "intervals", "meter_status")
PRUNE_FIELDS = ("cut", "through", "archive_sha256")

# Stored row -> the record fields it must equal: table, key columns, the leaf kind, columns.
ROW_CHECKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "readings": ("reading", ("meter", "boot", "seq", "iv", "imp_wh", "exp_wh", "cnt_imp_wh", "cnt_exp_wh", "flags")),
    "bids": ("bid", ("meter", "iv", "boot", "n", "curve")),
    "awards": ("award", ("iv", "meter", "q_wh", "price", "trades", "share_ppm")),
    "settlements": ("settlement", ("iv", "meter", "rev", "award_wh", "metered_wh", "award_amount",
                                   "deviation_amount", "share_amount", "amount")),
}
# Record fields added after the first version, with the value their absence meant before.
ADDED_FIELDS = {"share_amount": 0, "share_ppm": None}
JSON_COLUMNS = ("curve", "trades")
STATES = ("open", "cleared", "settled")


@dataclass
class Report:
    leaves: int = 0
    erased: int = 0
    checkpoints: int = 0
    unsigned_tail: int = 0
    given: int = 0
    since: int | None = None  # verify_since: the size of the note it started from
    rehashed_prefix: bool = False  # verify_since: no stored frontier, the leaves before the note were hashed
    pruned: int | None = None  # the leaves before this were archived and removed (tmeter ledger prune)
    witnesses: list[str] = field(default_factory=list)  # one line per meter that reported a checkpoint
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, what: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(what)


@dataclass
class Leaf:
    idx: int
    kind: str
    meter: str | None
    iv: int | None
    erased: bool
    opened: bool = False
    fields: dict[str, Any] | None = None  # the parsed record, for the kinds checked further
    record: bytes | None = None  # kept for result leaves (the intervals table stores it)


@dataclass(frozen=True)
class Signed:
    """A (size, root) the log must extend, and who vouches for it."""
    size: int
    root: bytes
    source: str


KEEP_FIELDS = ("checkpoint", "erasure", "result", "interval", "settlement", "award", "prune")


@dataclass(frozen=True)
class Pruned:
    """The ``pruned`` row (gateway/db.py): leaves before ``cut`` archived and removed; ``base``
    their frontier, proven by the kept checkpoint ``through`` (the archived period's end)."""
    cut: int
    base: merkle.Frontier
    through: int
    archive_sha256: str


def _describe(kind: object, meter: object, iv: object) -> str:
    return f"{kind}" + (f" of {meter}" if meter else "") + (f" for interval {iv}" if iv is not None else "")


def _blob(value: object, what: str, report: Report) -> bytes | None:
    """A BLOB column's bytes; TEXT (a plain sqlite3 edit), NULL or a number is named."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        report.fail(f"{what} is stored as TEXT, the gateway writes a BLOB: edited outside the gateway")
        return value.encode("utf-8", "surrogateescape")
    report.fail(f"{what} is {'NULL' if value is None else type(value).__name__}, not a BLOB: edited")
    return None


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(raw: bytes) -> str:
    # TEXT cells are read as bytes-preserving str, so a cell of invalid UTF-8 is a verdict too.
    return raw.decode("utf-8", "surrogateescape")


# --- leaves


def _load_leaves(conn: sqlite3.Connection, report: Report, start: int = 0,
                 keep_all: bool = False) -> tuple[list[bytes], dict[int, Leaf]]:
    """Leaves ``start`` on: their hashes (hashes[0] is leaf ``start``) and labels, each opened;
    ``keep_all`` keeps every parsed record (a bounded range), not just the kinds checked further."""
    hashes: list[bytes] = []
    leaves: dict[int, Leaf] = {}
    cur = conn.cursor()
    cur.row_factory = None  # plain tuples: sqlite3.Row costs a third of reading a day's leaves
    rows = cur.execute("SELECT l.idx, l.commitment, l.kind, l.meter, l.iv, l.erased, o.idx, o.salt, o.record"
                       " FROM leaves l LEFT JOIN openings o ON o.idx = l.idx WHERE l.idx >= ? ORDER BY l.idx",
                       (start,))
    for idx, com, kind, meter, iv, erased, o_idx, salt, record in rows:
        if idx != start + len(hashes):
            report.fail(f"leaf {start + len(hashes)} is missing (the log jumps to leaf {idx}): a record was deleted")
            hashes.extend([b""] * (idx - start - len(hashes)))  # keep indices aligned for later checks
        what = f"leaf {idx} ({_describe(kind, meter, iv)})"
        com_b = _blob(com, f"{what}: commitment", report)
        if com_b is not None and len(com_b) != merkle.HASH_LEN:
            report.fail(f"{what}: commitment is {len(com_b)} bytes, not {merkle.HASH_LEN}")
        hashes.append(merkle.leaf_hash(com_b or b""))
        if not isinstance(kind, str) or not (meter is None or isinstance(meter, str)) or not (iv is None or _int(iv)):
            report.fail(f"{what}: kind, meter or iv label has the wrong type (edited)")
            kind, meter, iv = str(kind), None if meter is None else str(meter), iv if _int(iv) else None
        leaf = Leaf(idx, kind, meter, iv, erased == 1)
        leaves[idx] = leaf
        if o_idx is not None:
            leaf.opened = True
            _open_leaf(leaf, what, com_b, salt, record, report, keep_all)
    report.leaves = len(hashes)
    return hashes, leaves


def _open_leaf(leaf: Leaf, what: str, com: bytes | None, salt: object, record: object, report: Report,
               keep_all: bool = False) -> None:
    salt_b, rec_b = _blob(salt, f"{what}: salt", report), _blob(record, f"{what}: record", report)
    if salt_b is None or rec_b is None or com is None:
        return
    try:
        rec_b = records.unpack(rec_b)
    except records.RecordError as exc:
        report.fail(f"{what}: {exc}")
        return
    if commitment(salt_b, rec_b) != com:
        report.fail(f"{what}: record does not match its commitment (edited)")
        return
    if leaf.erased:
        report.fail(f"{what}: marked erased but its record is still there")
    try:
        fields = canonical.parse(rec_b)
    except ProtocolError:
        report.fail(f"{what}: record is not canonical JSON")
        return
    if not isinstance(fields, dict) or fields.get("type") != leaf.kind or fields.get("meter", leaf.meter) != leaf.meter \
            or fields.get("iv", leaf.iv) != leaf.iv:
        report.fail(f"{what}: leaf labels disagree with its record")
        return
    if keep_all or leaf.kind in KEEP_FIELDS:
        leaf.fields = fields
        leaf.record = rec_b if leaf.kind == "result" else None


# --- erasures: each erased leaf is named by a signed erasure leaf of its member


def _check_erasures(conn: sqlite3.Connection, leaves: dict[int, Leaf], signed_size: int, report: Report,
                    start: int = 0) -> None:
    """From leaf ``start`` on (``verify_since``): erasure leaves there may name older leaves, whose
    labels are read; erasures rows pointing before ``start`` are not re-checked."""
    older = _older_labels(conn, leaves, start)
    covered: dict[int, int] = {}  # erased leaf -> the erasure leaf naming it
    legacy: dict[str, int] = {}  # member -> erasure leaf of the count-only format
    latest: dict[str, int] = {}
    for leaf in leaves.values():
        if leaf.kind != "erasure" or leaf.fields is None:
            continue
        member, named = leaf.fields.get("member"), leaf.fields.get("idxs")
        what = f"erasure leaf {leaf.idx} (of {member})"
        if not isinstance(member, str):
            report.fail(f"{what}: names no member")
            continue
        latest[member] = leaf.idx
        if leaf.idx >= signed_size:
            report.fail(f"{what}: not signed by any checkpoint, and the erasure procedure signs one at once: forged")
        if named is None:
            legacy[member] = leaf.idx
            continue
        if not isinstance(named, list) or len(named) != leaf.fields.get("leaves"):
            report.fail(f"{what}: its count and its list of erased leaves disagree")
            continue
        for i in named:
            target = (leaves.get(i) or older.get(i)) if _int(i) else None
            if target is None or i >= leaf.idx or target.meter != member:
                report.fail(f"{what}: names leaf {i}, which is not a leaf of {member} before it")
            else:
                covered[i] = leaf.idx
    for leaf in leaves.values():
        if leaf.opened:
            continue
        what = f"leaf {leaf.idx} ({_describe(leaf.kind, leaf.meter, leaf.iv)})"
        by = covered.get(leaf.idx)
        if by is None and leaf.meter in legacy and leaf.idx < legacy[leaf.meter]:
            by = legacy[leaf.meter]
        if by is None:
            report.fail(f"{what}: its record and salt are gone, and no erasure leaf of {leaf.meter} names it")
        elif not leaf.erased:
            report.fail(f"{what}: erased by leaf {by} but not marked erased")
        else:
            report.erased += 1
    for meter, at, row_leaf in conn.execute("SELECT meter, at, leaf FROM erasures").fetchall():
        if start and meter not in latest and _int(row_leaf) and row_leaf < start:
            continue  # erased before the checkpoint the auditor already verified
        if latest.get(meter) != row_leaf:
            report.fail(f"erasures row of {meter} points at leaf {row_leaf}, which is not {meter}'s latest erasure leaf"
                        f" ({latest.get(meter, 'none')}): forged erasure")
    rows = {m for (m,) in conn.execute("SELECT meter FROM erasures")}
    for member, idx in latest.items():
        if member not in rows:
            report.fail(f"erasure leaf {idx} (of {member}): its erasures row is missing (deleted)")


# --- checkpoints: stored, given, witnessed; and the checkpoint leaves


def _open_stored(conn: sqlite3.Connection, origin: str, key: Ed25519PublicKey, report: Report,
                 after: int = -1) -> list[note.Checkpoint]:
    """The stored checkpoints above size ``after``, each note's signature checked and its row
    compared with what it signs."""
    out: list[note.Checkpoint] = []
    rows = conn.execute("SELECT size, root, note FROM checkpoints WHERE size > ? ORDER BY size", (after,)).fetchall()
    report.checkpoints = len(rows)
    for size, root, signed in rows:
        where = f"checkpoint at size {size}"
        signed_b, root_b = _blob(signed, f"{where}: note", report), _blob(root, f"{where}: root", report)
        if signed_b is None:
            continue
        try:
            cp = note.open_checkpoint(signed_b, origin, key)
        except note.NoteError as exc:
            report.fail(f"{where}: signature or format invalid ({exc})")
            continue
        if cp.size != size or cp.root != root_b:
            report.fail(f"{where}: stored size/root differ from the signed note")
        out.append(cp)
    return out


def _stored_checkpoints(conn: sqlite3.Connection, origin: str, key: Ed25519PublicKey,
                        report: Report) -> list[Signed]:
    return [Signed(cp.size, cp.root, f"stored checkpoint at size {cp.size}")
            for cp in _open_stored(conn, origin, key, report)]


def given_checkpoints(notes: Sequence[bytes], origin: str, key: Ed25519PublicKey, report: Report) -> list[Signed]:
    """Checkpoint notes an auditor obtained earlier (retained topic, export, witness)."""
    out = []
    for n, signed in enumerate(notes, 1):
        try:
            cp = note.open_checkpoint(signed, origin, key)
        except note.NoteError as exc:
            report.fail(f"given checkpoint {n}: signature or format invalid ({exc})")
            continue
        out.append(Signed(cp.size, cp.root, f"given checkpoint at size {cp.size}"))
    report.given = len(out)
    return out


def _witnessed(conn: sqlite3.Connection, report: Report) -> list[Signed]:
    """What each meter reported as the latest checkpoint it saw (status field ``cp``)."""
    out = []
    for meter, body in conn.execute("SELECT meter, body FROM meter_status ORDER BY meter").fetchall():
        try:
            doc = json.loads(body)
            cp = doc.get("cp")
            if cp is None:
                continue
            size, root = cp["size"], base64.b64decode(cp["root"], validate=True)
            if not _int(size) or size < 0 or len(root) != merkle.HASH_LEN:
                raise ValueError
        except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
            report.fail(f"witness {meter}: its stored status is not what the gateway accepts (edited)")
            continue
        out.append(Signed(size, root, f"witness {meter}"))
    return out


def _check_against(points: list[Signed], hashes: list[bytes], leaves: dict[int, Leaf], report: Report) -> None:
    """Each (size, root) must be a prefix of the log: an RFC 9162 consistency proof from it to the
    log's full tree. A failing one names the range between the last agreeing point and it."""
    n = len(hashes)
    full = merkle.root(hashes)
    prefix: dict[int, bytes] = {}
    tree = merkle.Frontier()
    for size in sorted({p.size for p in points if p.size <= n}):
        while tree.size < size:
            tree.append(hashes[tree.size])
        prefix[size] = tree.root()
    agree = sorted({p.size for p in points if prefix.get(p.size) == p.root} | {0})
    proofs: dict[int, list[bytes]] = {}  # one proof per distinct size: many meters saw the same checkpoint
    for p in sorted(points, key=lambda q: q.size):
        ok = prefix.get(p.size) == p.root
        if p.size <= n and not p.source.startswith("stored "):
            # What an auditor holding only (size, root) checks: RFC 9162 2.1.4.2 against the log's root.
            if p.size not in proofs:
                proofs[p.size] = merkle.consistency_proof(p.size, hashes)
            ok = merkle.verify_consistency(p.size, n, p.root, full, proofs[p.size])
        if p.source.startswith("witness "):
            report.witnesses.append(f"{p.source}: checkpoint at size {p.size} "
                                    + ("is a prefix of the log" if ok else "is NOT a prefix of the log"))
        if ok:
            continue
        if p.size > n:
            report.fail(f"{p.source}: signs {p.size} leaves but the log holds {n}: rolled back or truncated")
            continue
        last = max(s for s in agree if s < p.size)
        first = leaves.get(last)
        named = f"leaf {last} ({_describe(first.kind, first.meter, first.iv)})" if first else f"leaf {last}"
        report.fail(f"{p.source}: root does not match leaves 0..{p.size - 1}: a record among"
                    f" leaves {last}..{p.size - 1} was edited, removed or reordered (leaves 0..{last - 1} agree"
                    f" with a checkpoint); the first that can differ is {named}")


def _check_checkpoint_leaves(leaves: dict[int, Leaf], stored: list[Signed], hashes: list[bytes],
                             report: Report) -> None:
    sizes = {s.size: s.root for s in stored}
    marks = sorted(i for i, leaf in leaves.items() if leaf.kind == "checkpoint")
    first = marks[0] if marks else len(hashes)
    prev: tuple[int, bytes] | None = None
    for s in sorted(sizes):
        if s - 1 < first:  # made before checkpoints were leaves
            prev = (s, sizes[s])
    for i in marks:
        leaf = leaves[i]
        if i + 1 not in sizes:
            report.fail(f"leaf {i} (checkpoint) records a checkpoint at size {i + 1}, which is missing (deleted)")
        f = leaf.fields
        if f is not None:
            want = {"size": i + 1} | ({"prev_size": prev[0], "prev_root": base64.b64encode(prev[1]).decode()}
                                      if prev else {})
            if {k: f.get(k) for k in ("size", "prev_size", "prev_root") if k in f or k in want} != want:
                report.fail(f"leaf {i} (checkpoint): does not chain to the checkpoint before it"
                            f" ({'none' if prev is None else prev[0]}): a checkpoint was removed or inserted")
        prev = (i + 1, sizes[i + 1] if i + 1 in sizes else merkle.root(hashes[: i + 1]))
    for s in sorted(sizes):
        if s - 1 >= first and (s - 1 not in leaves or leaves[s - 1].kind != "checkpoint"):
            report.fail(f"checkpoint at size {s}: its last leaf is not its checkpoint leaf")
    report.unsigned_tail = max(0, len(hashes) - max(sizes, default=0))


# --- stored rows against their leaves


def _row_values(values: list[Any], json_at: list[int]) -> list[Any]:
    for i in json_at:
        try:
            values[i] = json.loads(values[i])
        except (TypeError, ValueError):
            values[i] = ("unreadable JSON", values[i])
    return values


def _check_rows(conn: sqlite3.Connection, leaves: dict[int, Leaf], report: Report, start: int = 0) -> None:
    """Rows whose leaf is ``start`` or later against their leaves (all rows when 0)."""
    for table, (kind, columns) in ROW_CHECKS.items():
        seen: set[object] = set()
        last: tuple[int, int] | None = None  # (leaf, rowid) of the largest leaf so far in row order
        where = "WHERE leaf >= ? " if start else ""
        defaults = [ADDED_FIELDS.get(c) for c in columns]
        json_at = [i for i, c in enumerate(columns) if c in JSON_COLUMNS]
        cur = conn.cursor()
        cur.row_factory = None  # plain tuples: a day of rows is read here, and sqlite3.Row costs a third
        sql = f"SELECT rowid, leaf, {', '.join(columns)} FROM {table} {where}ORDER BY rowid"  # noqa: S608 - fixed names
        for rid, idx, *values in cur.execute(sql, (start,) if start else ()):
            seen.add(idx)
            leaf = leaves.get(idx) if _int(idx) else None
            record = leaf.fields if leaf is not None else None
            if record is None:
                what = f"{table} row {tuple(values[:3])} (leaf {idx})"
                record = _opened_record(conn, leaves, idx, what, report)
                if record is None:
                    continue
            if record.get("type") != kind or [record.get(c, d) for c, d in zip(columns, defaults, strict=True)] \
                    != _row_values(values, json_at):
                report.fail(f"{table} row {tuple(values[:3])} (leaf {idx}): differs from its ledger record (edited)")
            # Rows and leaves are written together, so row order is log order: an inversion is a
            # swap or a re-commit, and it names the exact leaves where the roots can only name a range.
            if _int(idx):
                if last is not None and idx < last[0]:
                    report.fail(f"{table}: leaf {idx} was stored after leaf {last[0]} but sits before it"
                                f" in the log: leaves {idx} and {last[0]} were swapped or re-committed")
                if last is None or idx > last[0]:
                    last = (idx, rid)
        for leaf in leaves.values():
            if leaf.kind == kind and leaf.opened and leaf.idx not in seen:
                report.fail(f"leaf {leaf.idx} ({kind}): its {table} row is missing (deleted)")


def _opened_record(conn: sqlite3.Connection, leaves: dict[int, Leaf], idx: object, what: str,
                   report: Report) -> dict[str, Any] | None:
    """The parsed record behind a row: the leaf's, if it opened and was kept, else read again."""
    leaf = leaves.get(idx) if _int(idx) else None  # type: ignore[call-overload]
    if leaf is not None and leaf.fields is not None:
        return leaf.fields
    opening = conn.execute("SELECT record FROM openings WHERE idx=?", (idx,)).fetchone()
    if opening is None or not isinstance(opening[0], bytes):
        if opening is None:
            report.fail(f"{what}: no ledger record behind it")
        return None  # a TEXT record is reported by the leaf check
    try:
        parsed = canonical.parse(records.unpack(opening[0]))
    except (ProtocolError, records.RecordError):
        return None  # reported by the leaf check
    return parsed if isinstance(parsed, dict) else None


def _check_intervals(conn: sqlite3.Connection, leaves: dict[int, Leaf], report: Report,
                     only: set[int] | None = None) -> None:
    """Each interval's state, mechanism, price and result against its clearing and settlement leaves
    (``only``: just these intervals, whose leaves are all in ``leaves``)."""
    by_iv: dict[int, dict[str, list[Leaf]]] = {}
    for leaf in leaves.values():
        if leaf.iv is not None and leaf.kind in ("result", "interval", "settlement", "award"):
            by_iv.setdefault(leaf.iv, {}).setdefault(leaf.kind, []).append(leaf)
    if only is None:
        rows = {r["iv"]: r for r in conn.execute("SELECT * FROM intervals")}
    else:
        by_iv = {iv: k for iv, k in by_iv.items() if iv in only}
        rows = {r["iv"]: r for r in conn.execute("SELECT * FROM intervals WHERE iv BETWEEN ? AND ?",
                                                 (min(only, default=0), max(only, default=-1))) if r["iv"] in only}
    for iv, kinds in sorted(by_iv.items()):
        if iv not in rows and "result" in kinds:  # the clearing writes both in one transaction
            report.fail(f"interval {iv}: has {', '.join(sorted(kinds))} leaves but no intervals row (deleted)")
    for iv, row in sorted(rows.items(), key=lambda kv: str(kv[0])):
        _check_interval(iv, row, by_iv.get(iv, {}) if _int(iv) else {}, report)


def _check_interval(iv: object, row: sqlite3.Row, kinds: dict[str, list[Leaf]], report: Report) -> None:
    what = f"intervals row {iv}"
    state, results = row["state"], kinds.get("result", [])
    summaries, lines = kinds.get("interval", []), kinds.get("settlement", [])
    if state not in STATES:
        report.fail(f"{what}: state {state!r} is none of {', '.join(STATES)}")
        return
    if state == "open":
        if results or row["leaf"] is not None or row["price"] is not None or row["result"] is not None:
            report.fail(f"{what}: open, but it has a clearing (result leaf or price): edited")
        return
    if len(results) != 1 or row["leaf"] != results[0].idx:
        report.fail(f"{what}: {state}, but its leaf {row['leaf']} is not its one result leaf"
                    f" ({', '.join(str(r.idx) for r in results) or 'none'})")
        return
    res = results[0]
    if res.fields is not None:
        stored = row["result"].encode("utf-8", "surrogateescape") if isinstance(row["result"], str) else row["result"]
        if stored != res.record or row["mech"] != res.fields.get("mech") or row["price"] != res.fields.get("price"):
            report.fail(f"{what}: mech, price or result differ from its result leaf {res.idx} (edited)")
        for award in kinds.get("award", []):
            if award.fields is not None and award.fields.get("price") != res.fields.get("price"):
                report.fail(f"leaf {award.idx} (award of {award.meter} for interval {iv}): price differs from"
                            f" the clearing's (leaf {res.idx})")
    first = [s for s in summaries if s.fields is not None and s.fields.get("rev") == 0]
    if state == "cleared":
        if summaries or lines:
            report.fail(f"{what}: cleared, but it has settlement leaves: its state was edited")
        return
    if not first and not any(s.fields is None for s in summaries):
        report.fail(f"{what}: settled, but there is no settlement summary leaf for it (deleted or state edited)")
        return
    if all(x.fields is not None for x in summaries + lines):
        _check_summaries(what, sorted(summaries + lines, key=lambda x: x.idx), report)


def _check_summaries(what: str, leaves: list[Leaf], report: Report) -> None:
    """Each summary leaf sums the settlement leaves written since the interval's previous one:
    a settlement (revision 0) or an adjustment writes its lines and then its summary, in one
    transaction (an adjustment's lines may be revision 0 too, for members first seen late)."""
    pending: list[dict[str, Any]] = []
    for leaf in leaves:
        f = leaf.fields or {}
        if leaf.kind == "settlement":
            pending.append(f)
            continue
        total = sum(x["amount"] for x in pending if _int(x.get("amount")))
        if f.get("members") != len(pending) or f.get("amount") != total:
            report.fail(f"{what}: its summary leaf {leaf.idx} (revision {f.get('rev')}) does not add up to the"
                        f" {len(pending)} settlement leaves before it: a settlement leaf is missing or extra")
        pending = []
    if pending:
        report.fail(f"{what}: {len(pending)} settlement leaves after its last summary leaf")


# --- the whole check


def verify(conn: sqlite3.Connection, origin: str, key: Ed25519PublicKey, given: Sequence[Signed] = (),
           witnesses: bool = True) -> Report:
    """The verdict on one database; ``given`` from ``given_checkpoints``."""
    report = Report()
    conn.row_factory, conn.text_factory = sqlite3.Row, _text
    try:
        _verify(conn, origin, key, list(given), witnesses, report)
    except sqlite3.DatabaseError as exc:
        report.fail(f"database unreadable: {exc}")
    except Exception as exc:  # noqa: BLE001 - any input gets a verdict; this one says the check stopped
        report.fail(f"verification stopped on content it cannot read ({type(exc).__name__}: {exc})")
    finally:
        conn.row_factory, conn.text_factory = None, str
    return report


def _verify(conn: sqlite3.Connection, origin: str, key: Ed25519PublicKey, given: list[Signed], witnesses: bool,
            report: Report) -> None:
    present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    missing = [t for t in TABLES if t not in present]
    if missing:
        report.fail(f"tables missing: {', '.join(missing)} (not a gateway database, or tables were dropped)")
        if {"leaves", "openings", "checkpoints"} & set(missing):
            return
    pruned = _pruned_row(conn, present, report)
    if pruned is not None:
        _verify_pruned(conn, origin, key, given, witnesses and "meter_status" in present, pruned, report)
        return
    hashes, leaves = _load_leaves(conn, report)
    for leaf in leaves.values():
        if leaf.kind == "prune":
            report.fail(f"leaf {leaf.idx} (prune) records a pruning, but the pruned table has no row (deleted)")
    stored = _stored_checkpoints(conn, origin, key, report)
    seen = list(_witnessed(conn, report)) if witnesses and "meter_status" in present else []
    _check_against(stored + given + seen, hashes, leaves, report)
    _check_checkpoint_leaves(leaves, stored, hashes, report)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("erasures", lambda: _check_erasures(conn, leaves, max((s.size for s in stored), default=0), report)),
        ("rows", lambda: _check_rows(conn, leaves, report)),
        ("intervals", lambda: _check_intervals(conn, leaves, report)),
    ]
    for table, step in steps:
        if table in present or table == "rows":
            step()


# --- since a checkpoint the auditor verified earlier: time proportional to the new leaves


def _older_labels(conn: sqlite3.Connection, leaves: dict[int, Leaf], start: int) -> dict[int, Leaf]:
    """Labels of the leaves before ``start`` that erasure leaves from ``start`` on name."""
    if not start:
        return {}
    named = {i for leaf in leaves.values() if leaf.kind == "erasure" and leaf.fields
             for i in (leaf.fields.get("idxs") or []) if _int(i) and i < start}
    out: dict[int, Leaf] = {}
    for i in sorted(named):
        row = conn.execute("SELECT kind, meter, iv, erased FROM leaves WHERE idx=?", (i,)).fetchone()
        if row is not None:
            out[i] = Leaf(i, str(row[0]), row[1], row[2], row[3] == 1)
    return out


def _subproof_from(m: int, lo: int, hi: int, complete: bool, node: Callable[[int, int], bytes]) -> list[bytes]:
    # SUBPROOF(m, D[lo:hi], b) of RFC 6962 2.1.2 over leaf ranges, each node MTH(D[a:b]) from ``node``.
    n = hi - lo
    if m == n:
        return [] if complete else [node(lo, hi)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return _subproof_from(m, lo, lo + k, complete, node) + [node(lo + k, hi)]
    return _subproof_from(m - k, lo + k, hi, False, node) + [node(lo, lo + k)]


def _consistency_from(old: merkle.Frontier, new: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) (RFC 6962 2.1.2) from the frontier of the first m leaves and the leaf hashes
    after them: every node of the proof lies wholly before m (a run of frontier roots) or wholly
    after it (hashed from the new leaves), so no old leaf is read."""
    m = old.size
    spans, at = [], 0
    for h, root in old._stack:  # noqa: SLF001 - (height, root) of each perfect subtree, left to right
        spans.append((at, at + (1 << h), root))
        at += 1 << h

    def node(a: int, b: int) -> bytes:
        if a >= m:
            return merkle.root(new[a - m:b - m])
        run = [r for s, e, r in spans if a <= s and e <= b]
        if b > m or sum(e - s for s, e, _ in spans if a <= s and e <= b) != b - a:
            raise ValueError(f"range {a}..{b} is not a run of frontier subtrees")
        acc = run[-1]
        for r in reversed(run[:-1]):
            acc = merkle.node_hash(r, acc)
        return acc

    if m in (0, m + len(new)):
        return []
    return _subproof_from(m, 0, m + len(new), True, node)


def _frontier_at(conn: sqlite3.Connection, cp: note.Checkpoint, report: Report) -> merkle.Frontier | None:
    """The right edge of the tree the note signs: stored at each checkpoint (table frontiers) and
    trusted only once it folds to the signed root; a checkpoint made before frontiers were stored
    is rebuilt from its leaves (time proportional to the whole prefix, said in the report)."""
    row = conn.execute("SELECT nodes FROM frontiers WHERE size=?", (cp.size,)).fetchone() \
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name='frontiers'").fetchone() else None
    tree = unpack_frontier(cp.size, row[0]) if row is not None and isinstance(row[0], bytes) else None
    if tree is not None and tree.root() == cp.root:
        return tree
    if row is not None:
        report.fail(f"frontier stored for checkpoint {cp.size}: does not fold to the note's root (edited)")
    report.rehashed_prefix = True
    tree = merkle.Frontier()
    for (com,) in conn.execute("SELECT commitment FROM leaves WHERE idx < ? ORDER BY idx", (cp.size,)):
        tree.append(merkle.leaf_hash(com if isinstance(com, bytes) else b""))
    if tree.size != cp.size or tree.root() != cp.root:
        report.fail(f"the note's checkpoint (size {cp.size}): leaves 0..{cp.size - 1} of the log do not have its"
                    f" root: the log does not extend it (edited, removed or rolled back before it)")
        return None
    return tree


def verify_since(conn: sqlite3.Connection, origin: str, key: Ed25519PublicKey, since: bytes) -> Report:
    """The verdict on what the log added after ``since``, a checkpoint note the auditor verified
    earlier: the log extends it (an RFC 9162 2.1.4 consistency proof built from the stored frontier
    and the new leaves), every checkpoint after it is signed and has the root of its prefix, and
    every leaf after it opens, chains and agrees with its rows and intervals. Leaves before the
    note are not opened again (their commitments are proven by the note's root); the intervals
    the new leaves belong to are read whole. Time: proportional to the new leaves."""
    report = Report()
    conn.row_factory, conn.text_factory = sqlite3.Row, _text
    try:
        _verify_since(conn, origin, key, since, report)
    except sqlite3.DatabaseError as exc:
        report.fail(f"database unreadable: {exc}")
    except Exception as exc:  # noqa: BLE001 - any input gets a verdict
        report.fail(f"verification stopped on content it cannot read ({type(exc).__name__}: {exc})")
    finally:
        conn.row_factory, conn.text_factory = None, str
    return report


def _verify_since(conn: sqlite3.Connection, origin: str, key: Ed25519PublicKey, since: bytes,
                  report: Report, pruned: Pruned | None = None) -> Since | None:
    try:
        cp = note.open_checkpoint(since, origin, key)
    except note.NoteError as exc:
        report.fail(f"--since note: not a checkpoint of this log ({origin}, this key): {exc}")
        return None
    report.since = cp.size
    n = conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM leaves").fetchone()[0]
    if cp.size > n:
        report.fail(f"--since note: signs {cp.size} leaves but the log holds {n}: rolled back or truncated")
        return None
    whole = pruned is not None  # the whole kept part: from the pruned cut on
    if pruned is None:
        present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        pruned = _pruned_row(conn, present, report)
    if pruned is not None and cp.size < pruned.through:
        report.fail(f"--since note (size {cp.size}): the leaves before {pruned.cut} were archived and pruned from"
                    f" this database (archive sha256 {pruned.archive_sha256[:16]}...): verify that archive from"
                    f" the note, then --since its last checkpoint (size {pruned.through})")
        return None
    old = _frontier_at(conn, cp, report)
    if old is None:
        return None
    floor = pruned.cut if pruned is not None else 0
    touched = {r[0] for r in conn.execute("SELECT DISTINCT iv FROM leaves WHERE idx >= ? AND iv IS NOT NULL",
                                          (cp.size,)) if _int(r[0])}
    firsts = {r[0]: r[1] for r in conn.execute("SELECT iv, leaf FROM intervals WHERE iv BETWEEN ? AND ?",
                                               (min(touched, default=0), max(touched, default=-1)))
              if r[0] in touched and _int(r[1])}
    # An interval whose result leaf was pruned (a late reading after its period was archived) is
    # checked in its archive; here only its new leaves are.
    touched -= {iv for iv, leaf in firsts.items() if leaf < floor}
    # An interval's leaves start at its result leaf.
    start = floor if whole else min([cp.size] + [f for f in firsts.values() if f >= floor])
    hashes, leaves = _load_leaves(conn, report, start, keep_all=True)
    new = hashes[cp.size - start:]
    report.leaves = len(new)
    stored = _signed_after(conn, origin, key, cp, report)
    _extend(old, new, stored, leaves, report)
    _check_erasures(conn, {i: lf for i, lf in leaves.items() if i >= cp.size}, max(stored, default=cp.size),
                    report, cp.size)
    _check_rows(conn, leaves, report, start)
    _check_intervals(conn, leaves, report, touched)
    return Since(start, hashes, leaves, stored)


@dataclass
class Since:
    """What ``_verify_since`` read: leaves ``start`` on, their hashes and the signed roots."""
    start: int
    hashes: list[bytes]
    leaves: dict[int, Leaf]
    stored: dict[int, bytes]


# --- a pruned database (tmeter ledger prune): what is on the Pi, from the archived period's end


def _pruned_row(conn: sqlite3.Connection, present: set[str], report: Report) -> Pruned | None:
    if "pruned" not in present:
        return None
    rows = conn.execute("SELECT cut, nodes, through, archive_sha256 FROM pruned").fetchall()
    if not rows:
        return None
    cut, nodes, through, sha = rows[0]
    base = unpack_frontier(cut, nodes) if _int(cut) and cut >= 0 and isinstance(nodes, bytes) else None
    if base is None or not _int(through) or through < cut or not isinstance(sha, str):
        raise ValueError("the pruned table's row is malformed (edited)")
    return Pruned(cut, base, through, sha)


def _verify_pruned(conn: sqlite3.Connection, origin: str, key: Ed25519PublicKey, given: list[Signed],
                   witnesses: bool, pruned: Pruned, report: Report) -> None:
    """The whole of what the Pi keeps: everything after the archived period's last checkpoint as
    `verify --since` checks it, the kept leaves before that checkpoint against its signed root
    from the pruned prefix's frontier, the prune leaf that must record the pruned row, and the
    given and witnessed checkpoints the kept part can prove (older ones: their archive)."""
    report.pruned = pruned.cut
    row = conn.execute("SELECT note FROM checkpoints WHERE size=?", (pruned.through,)).fetchone()
    if row is None or not isinstance(row[0], bytes):
        report.fail(f"pruned: the archived period's last checkpoint (size {pruned.through}), from which the kept"
                    f" leaves are verified, is missing (deleted)")
        return
    seen = _verify_since(conn, origin, key, row[0], report, pruned)
    if seen is None:
        return
    report.since = None
    report.leaves = len(seen.hashes)
    tree = merkle.Pruned(pruned.base, seen.hashes)
    if tree.root(pruned.through) != seen.stored[pruned.through]:
        report.fail(f"pruned: the frontier of the pruned leaves 0..{pruned.cut - 1} and the kept leaves do not"
                    f" have the root checkpoint {pruned.through} signs (pruned row or kept leaves edited)")
        return
    _check_prune_leaf(seen.leaves, pruned, max(seen.stored), report)
    older = [Signed(cp.size, cp.root, f"stored checkpoint at size {cp.size}")
             for cp in _open_stored_before(conn, origin, key, pruned.through, report)]
    points = older + given + (_witnessed(conn, report) if witnesses else [])
    _check_against_pruned(points, tree, report)


def _open_stored_before(conn: sqlite3.Connection, origin: str, key: Ed25519PublicKey, through: int,
                        report: Report) -> list[note.Checkpoint]:
    counted = report.checkpoints
    out = [cp for cp in _open_stored(conn, origin, key, report) if cp.size < through]
    report.checkpoints = counted
    return out


def _check_prune_leaf(leaves: dict[int, Leaf], pruned: Pruned, signed: int, report: Report) -> None:
    """The latest prune leaf names the pruned row, and a checkpoint signs it: a pruned row outside
    the signed log is a deletion someone dressed up as retention."""
    marks = [lf for lf in leaves.values() if lf.kind == "prune" and lf.fields is not None]
    want = {"cut": pruned.cut, "through": pruned.through, "archive_sha256": pruned.archive_sha256}
    if not marks or {k: marks[-1].fields.get(k) for k in PRUNE_FIELDS} != want:  # type: ignore[union-attr]
        report.fail(f"pruned row (leaves before {pruned.cut} removed, archive {pruned.archive_sha256[:16]}...):"
                    f" no signed prune leaf records it: leaves were deleted outside `tmeter ledger prune`")
    elif marks[-1].idx >= signed:
        report.fail(f"prune leaf {marks[-1].idx}: not signed by any checkpoint, and prune signs one at once: forged")


def _check_against_pruned(points: list[Signed], tree: merkle.Pruned, report: Report) -> None:
    """As ``_check_against``, for the sizes the kept part holds; older points are checked against
    the archive that holds their leaves, and are named (a given one fails: it was asked for)."""
    n, full = tree.size, tree.root()
    prefix: dict[int, bytes] = {}
    grow = tree.base.copy()
    for size in sorted({p.size for p in points if tree.cut <= p.size <= n}):
        while grow.size < size:
            grow.append(tree.hashes[grow.size - tree.cut])
        prefix[size] = grow.root()
    for p in sorted(points, key=lambda q: q.size):
        if p.size > n:
            report.fail(f"{p.source}: signs {p.size} leaves but the log holds {n}: rolled back or truncated")
            continue
        if p.size < tree.cut:
            line = f"{p.source}: checkpoint at size {p.size} is in the archived part (leaves before {tree.cut})"
            if p.source.startswith("witness "):
                report.witnesses.append(line + ": check it against the archive")
            elif not p.source.startswith("stored "):
                report.fail(line + ": check it against the archive that holds it")
            continue
        ok = prefix[p.size] == p.root
        if ok and not p.source.startswith("stored "):
            ok = merkle.verify_consistency(p.size, n, p.root, full, tree.consistency_proof(p.size, n))
        if p.source.startswith("witness "):
            report.witnesses.append(f"{p.source}: checkpoint at size {p.size} "
                                    + ("is a prefix of the log" if ok else "is NOT a prefix of the log"))
        if not ok:
            report.fail(f"{p.source}: root does not match leaves 0..{p.size - 1} (the pruned prefix's frontier and"
                        f" the kept leaves {tree.cut}..{p.size - 1}): a record among them was edited, removed or"
                        f" reordered")



def _signed_after(conn: sqlite3.Connection, origin: str, key: Ed25519PublicKey, cp: note.Checkpoint,
                  report: Report) -> dict[int, bytes]:
    """size -> root of the stored checkpoints from the note on, each signature checked."""
    return {cp.size: cp.root, **{c.size: c.root for c in _open_stored(conn, origin, key, report, cp.size)}}


def _extend(old: merkle.Frontier, new: list[bytes], stored: dict[int, bytes], leaves: dict[int, Leaf],
            report: Report) -> None:
    """Grow the note's tree by the new leaves: each later checkpoint must sign the root of its
    prefix, its checkpoint leaf must chain to the one before, and a consistency proof from the
    note to the whole log must verify (RFC 9162 2.1.4.2), as `verify --checkpoint` checks it."""
    m, tree = old.size, old.copy()
    roots = {m: old.root()}
    want = set(stored) | {i + 1 for i, lf in leaves.items() if lf.kind == "checkpoint" and i >= m}
    for h in new:
        tree.append(h)
        if tree.size in want:
            roots[tree.size] = tree.root()
    n, full = tree.size, tree.root()
    proof = _consistency_from(old, new)
    if not merkle.verify_consistency(m, n, old.root(), full, proof):
        report.fail(f"--since note (size {m}): the consistency proof to the log's {n} leaves does not verify")
    prev = (m, stored[m])
    for size in sorted(stored):
        if size > m and stored[size] != roots.get(size):
            report.fail(f"checkpoint at size {size}: root does not match leaves 0..{size - 1}: a record among"
                        f" leaves {prev[0]}..{size - 1} was edited, removed or reordered")
        if size > m:
            lf = leaves.get(size - 1)
            if lf is None or lf.kind != "checkpoint":
                report.fail(f"checkpoint at size {size}: its last leaf is not its checkpoint leaf")
        prev = (size, stored[size])
    _chain_since(m, stored, roots, leaves, report)
    report.unsigned_tail = max(0, n - max(stored))


def _chain_since(m: int, stored: dict[int, bytes], roots: dict[int, bytes], leaves: dict[int, Leaf],
                 report: Report) -> None:
    prev = (m, stored[m])
    for i in sorted(i for i, lf in leaves.items() if lf.kind == "checkpoint" and i >= m):
        if i + 1 not in stored:
            report.fail(f"leaf {i} (checkpoint) records a checkpoint at size {i + 1}, which is missing (deleted)")
        f = leaves[i].fields
        if f is not None:
            want = {"size": i + 1, "prev_size": prev[0], "prev_root": base64.b64encode(prev[1]).decode()}
            if {k: f.get(k) for k in want} != want:
                report.fail(f"leaf {i} (checkpoint): does not chain to the checkpoint before it ({prev[0]}):"
                            f" a checkpoint was removed or inserted")
        prev = (i + 1, stored.get(i + 1, roots.get(i + 1, b"")))


# --- proofs for third parties


@dataclass
class InclusionProof:
    index: int
    size: int
    commitment: bytes
    salt: bytes | None
    record: bytes | None
    path: list[bytes]
    # The meter's signature over the exact record bytes, for a reading it signed (issue 15):
    # (skid, r || s). Outside the commitment: it says who made the record, the path that the log holds it.
    signature: tuple[int, bytes] | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "leaf_index": self.index, "tree_size": self.size, "commitment": self.commitment.hex(),
            "salt": self.salt.hex() if self.salt else None,
            "record": self.record.decode() if self.record else None,
            "path": [h.hex() for h in self.path],
        }
        if self.signature is not None:
            doc["signature"] = {"skid": self.signature[0], "sig": self.signature[1].hex(), "alg": meterkeys.ALGORITHM}
        return doc


def opening_signature(conn: sqlite3.Connection, idx: int) -> tuple[int, bytes] | None:
    """The meter's signature kept with leaf ``idx``'s opening; None if unsigned, erased, or the
    database predates signatures (no ``openings.sig``: an auditor's read-only copy is not migrated)."""
    if "sig" not in {r[1] for r in conn.execute("PRAGMA table_info(openings)")}:
        return None
    row = conn.execute("SELECT sig FROM openings WHERE idx=?", (idx,)).fetchone()
    if row is None or row[0] is None:
        return None
    try:
        return tlog.parse_signature_line(str(row[0]))
    except ProtocolError:
        raise ValueError(f"leaf {idx}: the stored meter signature is malformed (edited)") from None


def prove_leaf(conn: sqlite3.Connection, idx: int, size: int) -> InclusionProof:
    """PATH(idx, D[size]) from what the database holds: the whole log, or a pruned one's (or an
    archive's) frontier and leaves from there (tlog.tree); a leaf before that: ValueError."""
    tree = tlog.tree(conn, size)
    row = conn.execute(
        "SELECT l.commitment, o.salt, o.record FROM leaves l LEFT JOIN openings o ON o.idx=l.idx WHERE l.idx=?",
        (idx,)).fetchone()
    if row is None or idx < tree.cut:
        raise ValueError(f"leaf {idx} is not in this database (it keeps leaves {tree.cut}..{tree.size - 1}):"
                         f" prove it from the archive that holds it")
    com, salt, record = row
    return InclusionProof(idx, size, bytes(com), salt and bytes(salt), record and records.unpack(bytes(record)),
                          tree.inclusion_proof(idx, size), opening_signature(conn, idx))


def check_inclusion(proof: InclusionProof, root: bytes) -> bool:
    """What a third party does: open the commitment, then walk the audit path (RFC 9162 2.1.3.2)."""
    if proof.record is not None and proof.salt is not None:
        if commitment(proof.salt, proof.record) != proof.commitment:
            return False
    return merkle.verify_inclusion(proof.index, proof.size, merkle.leaf_hash(proof.commitment), proof.path, root)


def consistency(conn: sqlite3.Connection, old_size: int, new_size: int) -> list[bytes]:
    if not 0 <= old_size <= new_size:
        raise ValueError(f"the old size {old_size} must be between 0 and the new size {new_size}")
    tree = tlog.tree(conn, new_size)
    if tree.size != new_size:
        raise ValueError(f"the log has fewer than {new_size} leaves")
    if old_size < tree.cut:
        raise ValueError(f"size {old_size} is before the leaves this database keeps ({tree.cut} on, the rest archived"
                         f" and pruned): prove it from the archive, then from its last checkpoint")
    return tree.consistency_proof(old_size, new_size)
