"""Closed periods of the ledger as files an auditor verifies later (deploy/README.md, "Retention
and archive"): the leaves of one period between two signed checkpoints, their openings, the rows
made from them, the intervals they belong to, every checkpoint note in the period and the
frontier of its first checkpoint. The file is a gateway database holding nothing else (no meter
keys, no MQTT logins, no statuses), so `tmeter ledger verify --db PERIOD --since START.note`
checks it with the code that checks the live log, and the period's last note, kept by the
auditor, is the next period's start: the archives chain like the checkpoints do."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway import db

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
    put("openings", rows("SELECT idx, salt, record FROM openings WHERE idx >= ? AND idx < ?", span))
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
