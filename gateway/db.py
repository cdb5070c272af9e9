"""The gateway's SQLite database: one file in WAL mode holding the registry, the records, the
ledger and the settlement. Schema and connection set-up live here so every module (and every
process: daemon, provision, ledger tools) opens the file the same way."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

SCHEMA = """
-- x_km, y_km: the meter's position (NULL: none provisioned); preference: its c_n for the
-- peer-to-peer market, micro-currency per kWh per km (gateway/market/p2p.py).
CREATE TABLE IF NOT EXISTS meters (
    meter TEXT PRIMARY KEY, community TEXT NOT NULL, created INTEGER NOT NULL,
    mqtt_hash TEXT NOT NULL, feeder INTEGER NOT NULL DEFAULT 0,
    x_km REAL, y_km REAL, preference INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS meter_keys (
    meter TEXT NOT NULL REFERENCES meters(meter), kid INTEGER NOT NULL, key BLOB NOT NULL,
    created INTEGER NOT NULL, retired INTEGER, PRIMARY KEY (meter, kid));
-- Each meter's own ECDSA P-256 public keys (issue 15, gateway/meterkeys.py): pub is the 65-byte
-- uncompressed point, skid the enrolment number the meter's signature line names. A meter with
-- a row here must sign its readings; enrolling a new key (a replaced board) retires the older.
CREATE TABLE IF NOT EXISTS meter_signing_keys (
    meter TEXT NOT NULL REFERENCES meters(meter), skid INTEGER NOT NULL, pub BLOB NOT NULL,
    enrolled INTEGER NOT NULL, retired INTEGER, PRIMARY KEY (meter, skid));

-- Ledger: the commitment of every leaf, in log order. The salt and the record bytes that open
-- a commitment live in `openings`, so erasing a member deletes openings and keeps the tree.
CREATE TABLE IF NOT EXISTS leaves (
    idx INTEGER PRIMARY KEY, commitment BLOB NOT NULL, kind TEXT NOT NULL, meter TEXT,
    iv INTEGER, erased INTEGER NOT NULL DEFAULT 0);
-- Interval first (issue 14): a batch stores one interval's records of every meter, so its index
-- entries are neighbours and the batch dirties a few pages. Meter first (the old leaves_meter),
-- each of 100 meters' entries landed on its own page: two pages per message written to the WAL
-- and checkpointed, and ingest slowed as the index outgrew the page cache. `meter=? AND iv=?`
-- uses either order; the meter-only lookups (erasure, the member page's proof list) are rare.
CREATE INDEX IF NOT EXISTS leaves_iv ON leaves (iv, meter);
CREATE TABLE IF NOT EXISTS openings (idx INTEGER PRIMARY KEY, salt BLOB NOT NULL, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY, root BLOB NOT NULL, note BLOB NOT NULL, created REAL NOT NULL);
-- The right edge of the tree each checkpoint signs (merkle.Frontier: one root per perfect subtree,
-- largest first, concatenated): `tmeter ledger verify --since` folds it to the signed root and
-- extends it with the new leaves alone, so checking a day does not rehash the year before it.
CREATE TABLE IF NOT EXISTS frontiers (size INTEGER PRIMARY KEY, nodes BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS erasures (meter TEXT PRIMARY KEY, at REAL NOT NULL, leaf INTEGER NOT NULL);
-- Retention (`tmeter ledger prune`, deploy/README.md): the leaves before `cut` were archived and
-- removed; `nodes` is the frontier of those `cut` leaves (as in frontiers), which the next
-- checkpoint's signed root proves. `through`: the archived period's last checkpoint, kept with
-- its note and frontier, from which `ledger verify` starts. No row: nothing pruned.
CREATE TABLE IF NOT EXISTS pruned (
    one INTEGER PRIMARY KEY CHECK (one = 1), cut INTEGER NOT NULL, nodes BLOB NOT NULL,
    through INTEGER NOT NULL, archive_sha256 TEXT NOT NULL, at REAL NOT NULL);
-- What `tmeter ledger archive` wrote (retention): the period first..last (checkpoint sizes), its
-- leaves start..last-1 and intervals first_iv..last_iv, the file and its SHA-256 when written.
-- `tmeter ledger prune --before` prunes only what a row here holds, from a file that still hashes so.
CREATE TABLE IF NOT EXISTS archives (
    path TEXT NOT NULL, sha256 TEXT NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
    start INTEGER NOT NULL, first_iv INTEGER, last_iv INTEGER, bytes INTEGER NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (first, last));

CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY, meter TEXT NOT NULL, boot INTEGER NOT NULL, seq INTEGER NOT NULL,
    iv INTEGER NOT NULL, imp_wh INTEGER NOT NULL, exp_wh INTEGER NOT NULL,
    cnt_imp_wh INTEGER NOT NULL, cnt_exp_wh INTEGER NOT NULL, flags INTEGER NOT NULL,
    leaf INTEGER NOT NULL UNIQUE, received REAL NOT NULL, UNIQUE (meter, boot, seq));
CREATE INDEX IF NOT EXISTS readings_iv ON readings (iv, meter);
CREATE TABLE IF NOT EXISTS bids (
    meter TEXT NOT NULL, iv INTEGER NOT NULL, boot INTEGER NOT NULL, n INTEGER NOT NULL,
    curve TEXT NOT NULL, leaf INTEGER NOT NULL UNIQUE, PRIMARY KEY (iv, meter, boot, n));
CREATE TABLE IF NOT EXISTS meter_status (
    meter TEXT PRIMARY KEY, body TEXT NOT NULL, received REAL NOT NULL);

-- Interval life cycle: open -> cleared -> settled. `reading_mark` is the last readings.id
-- settled, so readings above it for a settled interval are late and settled as adjustments.
CREATE TABLE IF NOT EXISTS intervals (
    iv INTEGER PRIMARY KEY, state TEXT NOT NULL, mech TEXT, price INTEGER, result TEXT,
    leaf INTEGER, settled_at REAL, reading_mark INTEGER NOT NULL DEFAULT 0,
    balanced INTEGER, feeder_diff_wh INTEGER);
CREATE TABLE IF NOT EXISTS awards (
    iv INTEGER NOT NULL, meter TEXT NOT NULL, q_wh INTEGER NOT NULL, price INTEGER NOT NULL,
    trades TEXT NOT NULL, leaf INTEGER NOT NULL UNIQUE, PRIMARY KEY (iv, meter));
-- One line per member, interval and revision: revision 0 is the settlement, later ones are
-- adjustments for late readings. The primary key is what makes settling twice impossible.
CREATE TABLE IF NOT EXISTS settlements (
    iv INTEGER NOT NULL, meter TEXT NOT NULL, rev INTEGER NOT NULL, award_wh INTEGER NOT NULL,
    metered_wh INTEGER, award_amount INTEGER NOT NULL, deviation_amount INTEGER NOT NULL,
    amount INTEGER NOT NULL, leaf INTEGER NOT NULL UNIQUE, share_amount INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (iv, meter, rev));

-- InfluxDB outbox: points written in the same transaction as the data they describe, deleted
-- once the database has them, so an outage buffers on disk and a crash loses nothing.
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, line TEXT NOT NULL);

-- Ingest plausibility (gateway/ingest/store.py): authentic readings of intervals before the
-- meter's provisioning, before the community's first interval or older than the settlement
-- window are kept aside here (ledgered as kind 'quarantined'), never settled.
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY, meter TEXT NOT NULL, boot INTEGER NOT NULL, seq INTEGER NOT NULL,
    iv INTEGER NOT NULL, t0 INTEGER NOT NULL, t1 INTEGER NOT NULL, imp_wh INTEGER NOT NULL,
    exp_wh INTEGER NOT NULL, flags INTEGER NOT NULL, reason TEXT NOT NULL, leaf INTEGER NOT NULL UNIQUE,
    received REAL NOT NULL, UNIQUE (meter, boot, seq));
-- The community's first interval: the one current at the scheduler's (or ingest's) first run.
CREATE TABLE IF NOT EXISTS community_start (
    one INTEGER PRIMARY KEY CHECK (one = 1), first_iv INTEGER NOT NULL, at REAL NOT NULL);
"""


def connect(path: str | Path, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open (creating) the database in WAL mode with autocommit; use ``transaction`` to write."""
    if synchronous not in ("FULL", "NORMAL", "EXTRA", "OFF"):
        raise ValueError("synchronous must be FULL, NORMAL, EXTRA or OFF")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _private(Path(path))
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(SCHEMA)
    _add_columns(conn)
    # Replaced by leaves_iv (built by SCHEMA once); an older bids table keeps its meter-first key.
    conn.execute("DROP INDEX IF EXISTS leaves_meter")
    return conn


# Columns a table gained after it first shipped: a database made by an older version gets them
# (with their default, which is what that version meant) when it is next opened for writing.
ADDED_COLUMNS = (("settlements", "share_amount", "INTEGER NOT NULL DEFAULT 0"),
                 ("meters", "x_km", "REAL"), ("meters", "y_km", "REAL"),
                 ("meters", "preference", "INTEGER NOT NULL DEFAULT 0"),
                 ("awards", "share_ppm", "INTEGER"), ("meter_status", "online", "INTEGER"),
                 # SHA-256 of the member's web secret (gateway/registry.py); NULL: no member link issued
                 ("meters", "web_hash", "TEXT"),
                 # The meter's signature line on a reading (`sig <skid>:<hex>`, issue 15); NULL: unsigned
                 ("openings", "sig", "TEXT"))


def _add_columns(conn: sqlite3.Connection) -> None:
    for table, column, definition in ADDED_COLUMNS:
        if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:  # noqa: S608 - fixed names
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def connect_readonly(path: str | Path) -> sqlite3.Connection:
    """The database as an auditor (or a start-up check) opens it: read-only, creating nothing,
    not even the schema. The path is quoted: it goes into a URI, where "?" and "#" mean more."""
    return sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=30)


def _private(path: Path) -> None:
    """Create the database file owner-only (it holds every meter's HMAC key), whatever the
    umask; SQLite gives the -wal and -shm files the database file's mode (its unix VFS,
    robust_open via findCreateFileMode). Files of ours that others could read (a database
    created before this rule) are narrowed."""
    if str(path) == ":memory:":
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            st = name.stat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(name, 0o600)


@contextmanager
def transaction(conn: sqlite3.Connection, on_commit: list[Callable[[], None]] | None = None) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception. Callbacks in ``on_commit`` run
    after the commit succeeded, so in-memory state follows the database and never leads it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    for callback in on_commit or ():
        callback()
