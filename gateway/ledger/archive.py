"""Closed periods of the ledger as files an auditor verifies later (deploy/README.md, "Retention
and archive"): the leaves of one period between two signed checkpoints, their openings, the rows
made from them, the intervals they belong to, every checkpoint note in the period and the
frontier of its first checkpoint. The file is a gateway database holding nothing else (no meter
keys, no MQTT logins, no statuses), so `tmeter ledger verify --db PERIOD --since START.note`
checks it with the code that checks the live log, and the period's last note, kept by the
auditor, is the next period's start: the archives chain like the checkpoints do."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway import db
from gateway.ledger import merkle, tlog
from gateway.ledger.tlog import Ledger

ROW_TABLES = ("readings", "bids", "awards", "settlements", "quarantine")


@dataclass(frozen=True)
class Period:
    first: int  # checkpoint size the period starts after (0: the log's start)
    last: int  # checkpoint size it ends at
    start: int  # first leaf exported: earlier than ``first`` when an interval began before it
    leaves: int
    path: Path


def period_start(conn: sqlite3.Connection, first: int) -> int:
    """The first leaf an interval touched after ``first`` began at (its result leaf), or
    ``first``: what `verify --since` reads, so the archive holds it too."""
    ivs = [r[0] for r in conn.execute("SELECT DISTINCT iv FROM leaves WHERE idx >= ? AND iv IS NOT NULL", (first,))]
    if not ivs:
        return first
    row = conn.execute("SELECT MIN(leaf) FROM intervals WHERE iv BETWEEN ? AND ? AND leaf IS NOT NULL",
                       (min(ivs), max(ivs))).fetchone()
    return min(first, row[0]) if row[0] is not None else first


def export(conn: sqlite3.Connection, first: int, last: int, out: Path) -> Period:
    """Write the period (first, last] of the log to a new database file ``out``."""
    sizes = {r[0] for r in conn.execute("SELECT size FROM checkpoints WHERE size IN (?, ?)", (first, last))}
    for size in (first, last):
        if size and size not in sizes:
            raise ValueError(f"no checkpoint of size {size}: a period starts and ends at signed checkpoints")
    if not 0 <= first < last:
        raise ValueError(f"the period must end after it starts ({first}..{last})")
    if out.exists():
        raise ValueError(f"{out} exists: an archive is written once")
    start = period_start(conn, first)
    kept = tlog.pruned_base(conn).size
    if start < kept:
        raise ValueError(f"leaves before {kept} were archived and pruned from this database: the period"
                         f" {first}..{last} starts before them (archive from a later checkpoint)")
    dst = db.connect(out, "FULL")
    try:
        with db.transaction(dst):
            _copy(conn, dst, start, first, last)
        return Period(first, last, start, last - start, out)
    finally:
        dst.close()


def _copy(src: sqlite3.Connection, dst: sqlite3.Connection, start: int, first: int, last: int) -> None:
    def rows(sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        return src.execute(sql, args).fetchall()

    def put(table: str, data: list[tuple[object, ...]]) -> None:
        if data:
            marks = ",".join("?" * len(data[0]))
            dst.executemany(f"INSERT INTO {table} VALUES ({marks})", data)  # noqa: S608 - fixed names

    span = (start, last)
    put("leaves", rows("SELECT idx, commitment, kind, meter, iv, erased FROM leaves WHERE idx >= ? AND idx < ?", span))
    # With the meter's signatures (issue 15): an archived reading proves who made it as it did here.
    put("openings", rows("SELECT idx, salt, record, sig FROM openings WHERE idx >= ? AND idx < ?", span))
    put("checkpoints", rows("SELECT size, root, note, created FROM checkpoints WHERE size >= ? AND size <= ?",
                            (first, last)))
    put("frontiers", rows("SELECT size, nodes FROM frontiers WHERE size = ?", (first,)))
    put("erasures", rows("SELECT meter, at, leaf FROM erasures WHERE leaf >= ? AND leaf < ?", span))
    for table in ROW_TABLES:
        cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]  # noqa: S608 - fixed names
        dst_cols = ",".join(cols)
        data = rows(f"SELECT {dst_cols} FROM {table} WHERE leaf >= ? AND leaf < ? ORDER BY rowid", span)  # noqa: S608
        if data:
            dst.executemany(f"INSERT INTO {table}({dst_cols}) VALUES ({','.join('?' * len(cols))})", data)  # noqa: S608
    _intervals(src, dst, start, last)


def _intervals(src: sqlite3.Connection, dst: sqlite3.Connection, start: int, last: int) -> None:
    """The intervals the period's leaves belong to, in the state the period's end left them: one
    cleared or settled after it is open or cleared in the archive (its later leaves are the next
    period's)."""
    ivs = {r[0] for r in src.execute("SELECT DISTINCT iv FROM leaves WHERE idx >= ? AND idx < ? AND iv IS NOT NULL",
                                     (start, last))}
    summaries = {r[0] for r in src.execute("SELECT DISTINCT iv FROM leaves WHERE kind='interval' AND idx >= ?"
                                           " AND idx < ?", (start, last))}
    cols = [r[1] for r in src.execute("PRAGMA table_info(intervals)")]
    for row in src.execute(f"SELECT {','.join(cols)} FROM intervals WHERE iv BETWEEN ? AND ?",  # noqa: S608
                           (min(ivs, default=0), max(ivs, default=-1))).fetchall():
        rec = dict(zip(cols, row, strict=True))
        if rec["iv"] not in ivs:
            continue
        if rec["leaf"] is None or rec["leaf"] >= last:
            rec.update(state="open", mech=None, price=None, result=None, leaf=None, settled_at=None)
        elif rec["state"] == "settled" and rec["iv"] not in summaries:
            rec.update(state="cleared", settled_at=None)
        dst.execute(f"INSERT INTO intervals({','.join(rec)}) VALUES ({','.join('?' * len(rec))})",  # noqa: S608
                    tuple(rec.values()))


# --- retention: removing an archived period from the Pi


@dataclass(frozen=True)
class Pruning:
    cut: int  # first leaf kept
    through: int  # the archived period's last checkpoint (kept: `ledger verify` starts there)
    removed: int  # leaves removed


def archive_period(arc: sqlite3.Connection) -> tuple[int, int, int]:
    """(first, last, start) of an archive file: the checkpoint it starts after (the size of its
    start frontier, 0 for the log's start), its last checkpoint, its first leaf."""
    row = arc.execute("SELECT MIN(size) FROM frontiers").fetchone()
    first = row[0] if row and row[0] is not None else 0
    last = arc.execute("SELECT MAX(size) FROM checkpoints").fetchone()[0]
    start = arc.execute("SELECT MIN(idx) FROM leaves").fetchone()[0]
    if last is None or start is None:
        raise ValueError("the archive holds no checkpoint or no leaves: not an archive of `tmeter ledger archive`")
    return first, last, start


Guard = Callable[[sqlite3.Connection, int, int], None]


def prune(ledger: Ledger, archive_file: Path, key: Ed25519PublicKey, through: int | None = None,
          guard: Guard | None = None) -> Pruning:
    """Remove from the Pi's database the period an archive file holds, once the archive is proven
    to hold it: it verifies (from its start note, which the Pi still has), it starts at or before
    the Pi's first kept leaf, its last checkpoint note is the Pi's, and its commitments are the
    Pi's. Kept: the leaves from the cut on (the first leaf an interval still open at the period's
    end began at), the frontier of the leaves before the cut (table pruned), the period's last
    checkpoint with its note and frontier (where `ledger verify` starts) and the one before the
    cut, each meter's latest reading row (ingest's counter baseline), erasure rows. Removed:
    leaves, openings, rows and intervals before the cut, the other checkpoints and frontiers
    before it. A prune leaf, signed by a checkpoint in the same transaction, records the cut, the
    period's end and the archive's SHA-256, so the log itself says what left it (`ledger verify`
    checks the pruned row against it). ``through``: a checkpoint inside the archive's period to
    prune up to instead of its end (`prune --before`); ``guard(conn, base, cut)`` runs inside the
    write transaction and raises ValueError to refuse the leaves base..cut-1 (the settlement
    window, gateway/ledger/retention.py). Refused (ValueError, nothing removed) otherwise."""
    conn = ledger.conn
    first, last, start, sha = _checked_archive(conn, archive_file, ledger.origin, key)
    if through is not None:
        if not first < through <= last:
            raise ValueError(f"checkpoint {through} is not in the archive's period {first}..{last}")
        last = through
    with ledger.transaction():
        # Inside the write lock: the daemon cannot add a leaf to an interval the cut is made for.
        base = tlog.pruned_base(conn)
        if start > base.size:
            raise ValueError(f"the archive starts at leaf {start} but the Pi keeps leaves from {base.size}:"
                             f" archive (and prune) the period before it first")
        cut = period_start(conn, last)
        if cut <= base.size:
            raise ValueError(f"nothing to prune: the Pi keeps leaves from {base.size}, the archive ends at {last}")
        if guard is not None:
            guard(conn, base.size, cut)
        mine = conn.execute("SELECT idx, commitment FROM leaves WHERE idx >= ? AND idx < ? ORDER BY idx",
                            (base.size, cut)).fetchall()
        arc = db.connect_readonly(archive_file)
        try:
            theirs = dict(arc.execute("SELECT idx, commitment FROM leaves WHERE idx >= ? AND idx < ?",
                                      (base.size, cut)))
        finally:
            arc.close()
        if len(mine) != cut - base.size or any(theirs.get(i) != c for i, c in mine):
            raise ValueError("the archive's leaves differ from the Pi's: not an archive of this log")
        tree = base.copy()
        for _, com in mine:
            tree.append(merkle.leaf_hash(bytes(com)))
        _remove(conn, cut, last)
        conn.execute("INSERT OR REPLACE INTO pruned(one, cut, nodes, through, archive_sha256, at) VALUES (1,?,?,?,?,?)",
                     (cut, tlog.pack_frontier(tree), last, sha, time.time()))
        record = tlog.encode_record("prune", {"cut": cut, "through": last, "archive_sha256": sha,
                                              "leaves": cut - base.size, "from": first})
        ledger.append("prune", None, None, record)
        ledger._checkpoint_in(conn)  # noqa: SLF001 - signed in the same transaction, as an erasure is
    return Pruning(cut, last, cut - base.size)


def _checked_archive(conn: sqlite3.Connection, archive_file: Path, origin: str,
                     key: Ed25519PublicKey) -> tuple[int, int, int, str]:
    """(first, last, start, sha256) of an archive file that verifies and ends at a checkpoint of
    this log; ValueError naming what is wrong otherwise."""
    from gateway.ledger import verify  # noqa: PLC0415

    if not archive_file.is_file():
        raise ValueError(f"no archive file {archive_file}")
    sha = hashlib.sha256(archive_file.read_bytes()).hexdigest()
    arc = db.connect_readonly(archive_file)
    try:
        try:
            tables = {r[0] for r in arc.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{archive_file} is not an archive (not a SQLite database: {exc})") from None
        if not {"leaves", "openings", "checkpoints", "frontiers"} <= tables:
            raise ValueError(f"{archive_file} is not an archive of `tmeter ledger archive` (tables missing)")
        first, last, start = archive_period(arc)
        done = conn.execute("SELECT through FROM pruned").fetchone()
        if done is not None and done[0] >= last:
            raise ValueError(f"nothing to prune: the Pi's log was pruned through checkpoint {done[0]} already"
                             f" and this archive ends at {last}")
        pi_note = conn.execute("SELECT note FROM checkpoints WHERE size=?", (last,)).fetchone()
        arc_note = arc.execute("SELECT note FROM checkpoints WHERE size=?", (last,)).fetchone()
        if pi_note is None or arc_note is None or bytes(pi_note[0]) != bytes(arc_note[0]):
            raise ValueError(f"the archive's last checkpoint (size {last}) is not one of the Pi's: an archive of"
                             f" another log, or of a period already pruned")
        if first:
            start_note = conn.execute("SELECT note FROM checkpoints WHERE size=?", (first,)).fetchone()
            if start_note is None:
                raise ValueError(f"the Pi has no checkpoint of size {first} to verify the archive from")
            report = verify.verify_since(arc, origin, key, bytes(start_note[0]))
        else:
            report = verify.verify(arc, origin, key, witnesses=False)
        if not report.ok:
            raise ValueError(f"the archive does not verify, nothing pruned: {report.problems[0]}")
    finally:
        arc.close()
    return first, last, start, sha


def _remove(conn: sqlite3.Connection, cut: int, through: int) -> None:
    kept_iv = conn.execute("SELECT MIN(iv) FROM leaves WHERE idx >= ? AND iv IS NOT NULL", (cut,)).fetchone()[0]
    anchor = conn.execute("SELECT MAX(size) FROM checkpoints WHERE size <= ?", (cut,)).fetchone()[0]
    conn.execute("DELETE FROM openings WHERE idx < ?", (cut,))
    conn.execute("DELETE FROM leaves WHERE idx < ?", (cut,))
    for table in ROW_TABLES:
        keep = (" AND rowid NOT IN (SELECT MAX(rowid) FROM readings GROUP BY meter)" if table == "readings" else "")
        conn.execute(f"DELETE FROM {table} WHERE leaf < ?{keep}", (cut,))  # noqa: S608 - fixed names
    if kept_iv is not None:
        conn.execute("DELETE FROM intervals WHERE iv < ? AND leaf < ?", (kept_iv, cut))
    for table in ("checkpoints", "frontiers"):
        conn.execute(f"DELETE FROM {table} WHERE size < ? AND size NOT IN (?, ?)",  # noqa: S608 - fixed names
                     (cut, anchor if anchor is not None else -1, through))
