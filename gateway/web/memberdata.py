"""What the member page and the operator view show, read from the gateway's database.

Every function here runs in a worker thread on a read-only connection of its own (``read``), as
/metrics does (gateway/ops/metrics.py): a page never waits behind the writer thread and never
writes. Each read is one snapshot (BEGIN), so a page's sections agree with each other.

Bills: one line per settled interval of the member, as gateway/bills.py's ``member_bills``
counts them (every settlement revision of the interval summed, sign turned to what a bill shows,
metered energy from the readings), beside the same energy at the grid prices (``Tariff``, "alone").
Days and months are UTC calendar days and months of the interval's start.
"""

from __future__ import annotations

import base64
import hmac
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from gateway import db
from gateway.bills import Tariff
from gateway.ledger import merkle, records, tlog, verify
from gateway.registry import token_hash

T = TypeVar("T")
BUSY_MS = 1000
RECENT = 12  # rows of bids, awards, readings and proof intervals shown
BILL_DAYS = 31  # days and ...
BILL_MONTHS = 12  # ... months of bills on the page, up to the latest settled (the CSV: every day)


def read(path: str | Path, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn`` on one snapshot of the database through a read-only connection (worker thread)."""
    conn = db.connect_readonly(path)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
        conn.execute("BEGIN")
        return fn(conn)
    finally:
        conn.close()


def web_hash(conn: sqlite3.Connection, meter: str) -> str | None:
    """The stored hash of ``meter``'s web secret, None if it has none (or is not provisioned)."""
    row = conn.execute("SELECT web_hash FROM meters WHERE meter=?", (meter,)).fetchone()
    return row[0] if row and row[0] else None


def token_matches(stored: str | None, token: str) -> bool:
    return stored is not None and hmac.compare_digest(stored, token_hash(token))


@dataclass(frozen=True)
class BillLine:
    """A period's bill of one member: money in micro-currency, + the member pays."""

    period: str  # "2026-12-03" or "2026-12"
    first_iv: int
    last_iv: int
    intervals: int
    energy_in_wh: int
    energy_out_wh: int
    community: int
    alone: int

    @property
    def saving(self) -> int:
        return self.alone - self.community


def interval_lines(conn: sqlite3.Connection, meter: str, tariff: Tariff, first_iv: int = 0,
                   last_iv: int = 2 ** 62) -> list[tuple[int, int, int, int, int]]:
    """(iv, imp_wh, exp_wh, community, alone) per settled interval of ``meter`` in the range,
    counted as gateway/bills.py member_bills counts them."""
    metered = {iv: (imp, exp) for iv, imp, exp in conn.execute(
        "SELECT iv, SUM(imp_wh), SUM(exp_wh) FROM readings WHERE meter=? AND iv BETWEEN ? AND ? GROUP BY iv",
        (meter, first_iv, last_iv))}
    lines = []
    for iv, paid_to in conn.execute(
            "SELECT s.iv, SUM(s.amount) FROM settlements s JOIN intervals i ON i.iv = s.iv WHERE i.state = 'settled'"
            " AND s.meter = ? AND s.iv BETWEEN ? AND ? GROUP BY s.iv ORDER BY s.iv", (meter, first_iv, last_iv)):
        imp, exp = metered.get(iv, (0, 0))
        lines.append((iv, imp, exp, -paid_to, tariff.bill(meter, iv, imp, exp)))
    return lines


def bill_lines(lines: list[tuple[int, int, int, int, int]], interval_s: int, month: bool) -> list[BillLine]:
    """Interval lines added up per UTC day (or month), newest first."""
    acc: dict[str, list[int]] = {}
    for iv, imp, exp, community, alone in lines:  # by interval: the first seen is the period's first
        day = datetime.fromtimestamp(iv * interval_s, UTC).strftime("%Y-%m" if month else "%Y-%m-%d")
        a = acc.setdefault(day, [iv, iv, 0, 0, 0, 0, 0])
        a[1] = iv
        for k, v in enumerate((1, imp, exp, community, alone), start=2):
            a[k] += v
    return [BillLine(p, *a) for p, a in sorted(acc.items(), reverse=True)]


@dataclass(frozen=True)
class Checkpoint:
    size: int
    root: str  # base64
    created: float
    note: bytes


def latest_checkpoint(conn: sqlite3.Connection, size: int | None = None) -> Checkpoint | None:
    sql = "SELECT size, root, created, note FROM checkpoints "
    row = conn.execute(sql + ("WHERE size=?" if size is not None else "ORDER BY size DESC LIMIT 1"),
                       (size,) if size is not None else ()).fetchone()
    if row is None:
        return None
    return Checkpoint(row[0], base64.b64encode(bytes(row[1])).decode(), row[2], bytes(row[3]))


@dataclass
class MemberView:
    meter: str
    current_iv: int
    current_state: str | None
    bids: list[tuple[int, list[list[int]]]] = field(default_factory=list)  # (iv, curve)
    awards: list[tuple[int, int, int, list[list[Any]]]] = field(default_factory=list)  # iv, q_wh, price, trades
    readings: list[tuple[int, int, int, int, float]] = field(default_factory=list)  # iv, imp, exp, flags, received
    days: list[BillLine] = field(default_factory=list)
    months: list[BillLine] = field(default_factory=list)
    proofs: list[tuple[int, int]] = field(default_factory=list)  # (iv, records under the checkpoint)
    checkpoint: Checkpoint | None = None


def member_view(conn: sqlite3.Connection, meter: str, current_iv: int, interval_s: int, tariff: Tariff) -> MemberView:
    state = conn.execute("SELECT state FROM intervals WHERE iv=?", (current_iv,)).fetchone()
    view = MemberView(meter, current_iv, state[0] if state else None)
    view.bids = [(iv, json.loads(curve)) for iv, curve in conn.execute(
        "SELECT iv, curve FROM bids WHERE meter=? ORDER BY iv DESC, boot DESC, n DESC LIMIT ?", (meter, RECENT))]
    view.awards = [(iv, q, price, json.loads(trades)) for iv, q, price, trades in conn.execute(
        "SELECT iv, q_wh, price, trades FROM awards WHERE meter=? ORDER BY iv DESC LIMIT ?", (meter, RECENT))]
    view.readings = list(conn.execute(
        "SELECT iv, imp_wh, exp_wh, flags, received FROM readings WHERE meter=? ORDER BY boot DESC, seq DESC LIMIT ?",
        (meter, RECENT)))
    # The year up to the latest settled interval (not up to now: after an outage the page still
    # shows the last bills). The intervals table has one row per interval: cheap to ask.
    last = conn.execute("SELECT MAX(iv) FROM intervals WHERE state = 'settled'").fetchone()[0]
    lines = [] if last is None else interval_lines(conn, meter, tariff, max(0, last - 366 * 86400 // interval_s),
                                                   last)
    view.days = bill_lines(lines, interval_s, month=False)[:BILL_DAYS]
    view.months = bill_lines(lines, interval_s, month=True)[:BILL_MONTHS]
    view.checkpoint = latest_checkpoint(conn)
    if view.checkpoint is not None:
        view.proofs = list(conn.execute(
            "SELECT iv, COUNT(*) FROM leaves WHERE meter=? AND iv IS NOT NULL AND idx < ? AND erased=0"
            " GROUP BY iv ORDER BY iv DESC LIMIT ?", (meter, view.checkpoint.size, RECENT)))
    return view


def all_bill_days(conn: sqlite3.Connection, meter: str, interval_s: int, tariff: Tariff) -> list[BillLine]:
    """Every settled day of the member, oldest first (the CSV)."""
    return list(reversed(bill_lines(interval_lines(conn, meter, tariff), interval_s, month=False)))


def proof_document(conn: sqlite3.Connection, meter: str, iv: int, size: int) -> dict[str, Any] | None:
    """What `tmeter ledger prove --meter --interval` prints, under the checkpoint of ``size``
    (the one the page showed, so the proof and the checkpoint downloaded beside it agree).
    None: no such checkpoint or no record of the member in that interval under it."""
    cp = latest_checkpoint(conn, size)
    if cp is None:
        return None
    idxs = [r[0] for r in conn.execute(
        "SELECT idx FROM leaves WHERE meter=? AND iv=? AND idx < ? ORDER BY idx", (meter, iv, size))]
    if not idxs:
        return None
    root = base64.b64decode(cp.root)
    proofs = prove_leaves(conn, idxs, size)
    return {"checkpoint": cp.note.decode(), "proofs": [p.to_dict() for p in proofs],
            "verified": all(verify.check_inclusion(p, root) for p in proofs)}


def audit_paths(source: list[bytes] | merkle.Pruned, targets: list[int]) -> dict[int, list[bytes]]:
    """PATH(m, D[n]) of RFC 6962 2.1.1 for every m in ``targets`` in one walk of the tree: a
    subtree holding no target is hashed once (its root is a sibling), one holding some is split
    as the RFC splits it. One tree's hashing for any number of records, where calling
    merkle.inclusion_proof per record hashes the tree each time."""
    tree = source if isinstance(source, merkle.Pruned) else merkle.Pruned(merkle.Frontier(), source)
    size = tree.size
    paths: dict[int, list[bytes]] = {t: [] for t in targets}

    def walk(lo: int, n: int, inside: list[int]) -> bytes:
        if n == 1:
            return tree.node(lo, lo + 1)
        k = 1 << ((n - 1).bit_length() - 1)  # the largest power of two below n (RFC 6962 2.1)
        left_t = [t for t in inside if t < lo + k]
        right_t = [t for t in inside if t >= lo + k]
        # A subtree without a target is one node, from the kept leaves or the pruned frontier.
        left = walk(lo, k, left_t) if left_t else tree.node(lo, lo + k)
        right = walk(lo + k, n - k, right_t) if right_t else tree.node(lo + k, lo + n)
        for t in left_t:
            paths[t].append(right)  # deeper siblings first: the path runs from the leaf up
        for t in right_t:
            paths[t].append(left)
        return merkle.node_hash(left, right)

    if size and targets:
        walk(0, size, sorted(set(targets)))
    return paths


def prove_leaves(conn: sqlite3.Connection, idxs: list[int], size: int) -> list[verify.InclusionProof]:
    """verify.prove_leaf for several leaves of one tree of ``size``, its leaves read and hashed once."""
    tree = tlog.tree(conn, size)  # a pruned database proves its kept leaves from the pruned frontier
    idxs = [i for i in idxs if i >= tree.cut]
    paths = audit_paths(tree, idxs)
    out = []
    for i in idxs:
        com, salt, record = conn.execute(
            "SELECT l.commitment, o.salt, o.record FROM leaves l LEFT JOIN openings o ON o.idx = l.idx WHERE l.idx=?",
            (i,)).fetchone()
        opened = records.unpack(bytes(record)) if record else None
        out.append(verify.InclusionProof(i, size, bytes(com), salt and bytes(salt), opened, paths[i]))
    return out


@dataclass(frozen=True)
class MeterHealth:
    meter: str
    online: bool | None  # None: no status yet
    status_at: float | None
    last_reading_iv: int | None
    last_reading_at: float | None
    queue_depth: int | None  # the meter's outbox (status counter q_depth)
    modbus_errors: int | None  # status counter mb_err
    firmware: str | None  # the status does not carry a version today
    link_issued: bool


@dataclass
class OperatorView:
    meters: list[MeterHealth]
    leaves: int
    checkpoint: Checkpoint | None
    intervals: dict[str, int]


def operator_view(conn: sqlite3.Connection, community: str) -> OperatorView:
    meters = []
    for meter, web, body, received, online in conn.execute(
            "SELECT m.meter, m.web_hash, s.body, s.received, s.online FROM meters m"
            " LEFT JOIN meter_status s ON s.meter = m.meter WHERE m.community = ? ORDER BY m.meter", (community,)):
        last = conn.execute("SELECT iv, received FROM readings WHERE meter=? ORDER BY boot DESC, seq DESC LIMIT 1",
                            (meter,)).fetchone()
        counters = _counters(body)
        meters.append(MeterHealth(
            meter, None if online is None else bool(online), received, last[0] if last else None,
            last[1] if last else None, counters.get("q_depth"), counters.get("mb_err"),
            _firmware(body), web is not None))
    return OperatorView(
        meters, conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM leaves").fetchone()[0], latest_checkpoint(conn),
        dict(conn.execute("SELECT state, COUNT(*) FROM intervals GROUP BY state").fetchall()))


def _status(body: str | None) -> dict[str, Any]:
    try:
        doc = json.loads(body) if body else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _counters(body: str | None) -> dict[str, int]:
    c = _status(body).get("c")
    return {k: v for k, v in c.items() if isinstance(v, int)} if isinstance(c, dict) else {}


def _firmware(body: str | None) -> str | None:
    fw = _status(body).get("fw")  # a field a later status schema may add; none today
    return fw if isinstance(fw, str) else None


def age(at: float | None, now: float | None = None) -> str:
    if at is None:
        return "never"
    s = max(0, int((now if now is not None else time.time()) - at))
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= n:
            return f"{s // n} {unit} ago"
    return f"{s} s ago"
