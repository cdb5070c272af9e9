"""Retention by date or checkpoint: `tmeter ledger prune --before DATE|SIZE` (deploy/README.md,
"Retention and archive").

`tmeter ledger archive` records each file it writes in the table ``archives`` (its period, its
leaves and intervals, its SHA-256). ``--before`` resolves to a signed checkpoint (the one given,
or the last one signed at or before the date) and plans the prune up to it: the archives that
hold the leaves from the Pi's first kept leaf to the cut (``archive.period_start``), in order,
each file still hashing to what was recorded. Refused, nothing deleted, when a leaf is in no
archive, an archive file is missing or changed, or an interval to remove is not settled or was
settled less than the settlement window ago (``[ingest] settlement_window_s``: a late reading
within the window still adjusts it, gateway/ingest/store.py). The plan says what would go, in
leaves, rows and bytes; ``execute`` prunes it one archive at a time (``archive.prune``: each
archive verified, a signed prune leaf) and VACUUMs the file, so the Pi's database shrinks.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.ledger import archive, tlog
from gateway.ledger.tlog import Ledger

DATE_FORMS = "YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM], UTC unless it says otherwise"


class Refusal(ValueError):
    """Why nothing is pruned, in one line, with what to do."""


@dataclass(frozen=True)
class Archived:
    """A row of ``archives``: a file `tmeter ledger archive` wrote."""

    path: Path
    sha256: str
    first: int
    last: int
    start: int
    first_iv: int | None
    last_iv: int | None


@dataclass
class Plan:
    bound: int  # the checkpoint pruned up to (kept, with its note)
    base: int  # the first leaf the Pi keeps now
    cut: int  # the first leaf it keeps after the prune
    steps: list[tuple[Archived, int]] = field(default_factory=list)  # (archive, through) in order
    kinds: dict[str, int] = field(default_factory=dict)  # leaves removed by kind
    rows: int = 0  # readings, bids, awards, settlements and quarantine rows removed
    intervals: int = 0
    file_bytes: int = 0  # database + WAL now
    estimate: int = 0  # bytes the removed leaves take, in proportion to the leaves


@dataclass(frozen=True)
class Done:
    removed: int
    before: int  # database + WAL bytes before
    after: int  # after the prune and VACUUM
    prune_s: float
    vacuum_s: float


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record(conn: sqlite3.Connection, period: archive.Period) -> Archived:
    """Note in ``archives`` the file ``archive.export`` just wrote (a period archived again
    replaces its row: the newer file is the one to keep)."""
    path = period.path.resolve()
    ivs = conn.execute("SELECT MIN(iv), MAX(iv) FROM leaves WHERE idx >= ? AND idx < ? AND iv IS NOT NULL",
                       (period.start, period.last)).fetchone()
    row = Archived(path, file_sha256(path), period.first, period.last, period.start, ivs[0], ivs[1])
    conn.execute("INSERT OR REPLACE INTO archives(path, sha256, first, last, start, first_iv, last_iv, bytes, at)"
                 " VALUES (?,?,?,?,?,?,?,?,?)", (str(path), row.sha256, row.first, row.last, row.start,
                                                 row.first_iv, row.last_iv, path.stat().st_size, time.time()))
    return row


def archives(conn: sqlite3.Connection) -> list[Archived]:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name='archives'").fetchone() is None:
        return []  # a database from before the table: nothing recorded
    rows = conn.execute("SELECT path, sha256, first, last, start, first_iv, last_iv FROM archives ORDER BY last")
    return [Archived(Path(r[0]), r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]


def resolve(conn: sqlite3.Connection, bound: str, now: float) -> int:
    """The checkpoint ``--before`` names: a size (digits), or the last one signed at or before a date."""
    text = bound.strip()
    if text.isdigit():
        size = int(text) if len(text) < 19 else -1  # SQLite integers end at 2**63
        if conn.execute("SELECT 1 FROM checkpoints WHERE size=?", (size,)).fetchone() is None:
            latest = [str(r[0]) for r in conn.execute("SELECT size FROM checkpoints ORDER BY size DESC LIMIT 3")]
            raise Refusal(f"no checkpoint of size {text[:24]} (latest: {', '.join(latest) or 'none'})")
        return size
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise Refusal(f"--before {text[:40]!r} is neither a date ({DATE_FORMS}) nor a checkpoint size") from None
    at = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    if at > now:
        raise Refusal(f"--before {iso(at)} is in the future (now {iso(now)}): give a past date or a checkpoint")
    row = conn.execute("SELECT MAX(size) FROM checkpoints WHERE created <= ?", (at,)).fetchone()
    if row[0] is None:
        first = conn.execute("SELECT MIN(created) FROM checkpoints").fetchone()[0]
        since = f"the first was signed {iso(first)}" if first is not None else "the log has none"
        raise Refusal(f"no checkpoint signed at or before {iso(at)} ({since})")
    return int(row[0])


def window_guard(now: float, window_s: float) -> archive.Guard:
    """``archive.prune``'s guard: refuse leaves of an interval that a late reading could still adjust."""

    def check(conn: sqlite3.Connection, base: int, cut: int) -> None:
        # The intervals the prune removes: their result leaf is before the cut. The one the cut is
        # made for keeps its row, result, awards and settlement (what a late reading adjusts);
        # only its bids, received before its result, may go with the period (archived).
        row = conn.execute(
            "SELECT iv, state, settled_at FROM intervals WHERE iv IN (SELECT DISTINCT iv FROM leaves"
            " WHERE idx >= ? AND idx < ? AND iv IS NOT NULL) AND leaf < ? AND (state != 'settled'"
            " OR settled_at IS NULL OR settled_at + ? > ?) ORDER BY iv LIMIT 1",
            (base, cut, cut, window_s, now)).fetchone()
        if row is None:
            return
        iv, state, settled = row
        if state != "settled" or not isinstance(settled, int | float):
            raise Refusal(f"interval {iv} is {state}, not settled: its leaves stay until a settlement window"
                          f" after it settles; prune --before an earlier checkpoint or date")
        raise Refusal(f"interval {iv} settled {iso(settled)}, inside the settlement window ({window_s / 86400:g}"
                      f" days: late readings still adjust it until {iso(settled + window_s)}): prune --before"
                      f" an earlier date or checkpoint, or after that")

    return check


def plan(conn: sqlite3.Connection, bound: int, now: float, window_s: float) -> Plan:
    """What pruning up to checkpoint ``bound`` removes, with the archives that hold it; Refusal if
    it may not (a leaf archived nowhere, a missing or changed archive, the settlement window)."""
    base = tlog.pruned_base(conn).size
    cut = archive.period_start(conn, bound)
    if cut <= base:
        raise Refusal(f"nothing to prune before checkpoint {bound}: the Pi keeps leaves from {base} already")
    window_guard(now, window_s)(conn, base, cut)
    p = Plan(bound, base, cut, _chain(conn, base, bound))
    for a, _ in p.steps:
        _check_file(a)
    span = (base, cut)
    within = "WHERE idx >= ? AND idx < ?"
    p.kinds = dict(conn.execute(f"SELECT kind, COUNT(*) FROM leaves {within} GROUP BY kind", span))  # noqa: S608
    for table in archive.ROW_TABLES:
        sql = f"SELECT COUNT(*) FROM {table} WHERE leaf >= ? AND leaf < ?"  # noqa: S608 - fixed names
        p.rows += conn.execute(sql, span).fetchone()[0]
    sql = f"SELECT COUNT(DISTINCT iv) FROM leaves {within} AND kind='interval'"  # noqa: S608
    p.intervals = conn.execute(sql, span).fetchone()[0]
    p.file_bytes = db_bytes(conn)
    total = conn.execute("SELECT COUNT(*) FROM leaves").fetchone()[0]
    p.estimate = p.file_bytes * sum(p.kinds.values()) // max(1, total)
    return p


def _chain(conn: sqlite3.Connection, base: int, bound: int) -> list[tuple[Archived, int]]:
    """The recorded archives that hold leaves ``base`` to the cut of ``bound``, in order: each
    starts at or before the first leaf the previous one leaves on the Pi."""
    done = conn.execute("SELECT through FROM pruned").fetchone()
    through, leaf, steps = (done[0] if done else 0), base, []
    known = archives(conn)
    while through < bound:
        fits = [a for a in known if a.start <= leaf and a.last > through]
        if not fits:
            row = conn.execute("SELECT iv FROM leaves WHERE idx >= ? AND iv IS NOT NULL ORDER BY idx LIMIT 1",
                               (leaf,)).fetchone()
            iv = f" (interval {row[0]})" if row else ""
            raise Refusal(f"leaves from {leaf}{iv} are in no archive: run `tmeter ledger archive --from {through}"
                          f" --to {bound} --out FILE` first, then prune")
        best = max(fits, key=lambda a: a.last)
        through = min(best.last, bound)
        steps.append((best, through))
        leaf = archive.period_start(conn, through)
    return steps


def _check_file(a: Archived) -> None:
    if not a.path.is_file():
        raise Refusal(f"archive {a.path} (checkpoints {a.first}..{a.last}) is missing: put it back, or archive"
                      f" the period again")
    sha = file_sha256(a.path)
    if sha != a.sha256:
        raise Refusal(f"archive {a.path} changed since `tmeter ledger archive` wrote it (SHA-256 {sha[:16]}...,"
                      f" recorded {a.sha256[:16]}...): restore it, or archive the period again")


def execute(ledger: Ledger, p: Plan, key: Ed25519PublicKey, now: float, window_s: float) -> Done:
    """Prune what ``p`` planned, one archive after the other (each verified again, the window
    checked inside its write transaction), then VACUUM: the freed pages leave the file."""
    before = db_bytes(ledger.conn)
    t0 = time.perf_counter()
    removed = 0
    for a, through in p.steps:
        _check_file(a)
        removed += archive.prune(ledger, a.path, key, through, window_guard(now, window_s)).removed
    t1 = time.perf_counter()
    ledger.conn.execute("VACUUM")
    t2 = time.perf_counter()
    return Done(removed, before, db_bytes(ledger.conn), t1 - t0, t2 - t1)


def db_bytes(conn: sqlite3.Connection) -> int:
    """The main database file and its WAL after a checkpoint: what the SD card holds."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path = Path(conn.execute("PRAGMA database_list").fetchone()[2])
    wal = Path(f"{path}-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def where_pruned(conn: sqlite3.Connection, iv: int) -> Archived | None:
    """The archive holding interval ``iv``, if the Pi pruned it."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name='pruned'").fetchone() is None:
        return None
    if conn.execute("SELECT 1 FROM pruned").fetchone() is None:
        return None
    held = [a for a in archives(conn) if a.first_iv is not None and a.first_iv <= iv <= (a.last_iv or -1)]
    return held[-1] if held else None
