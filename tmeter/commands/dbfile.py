"""The gateway database as the operator's and auditor's commands open it (`tmeter ledger`,
`tmeter gateway quarantine`): an existing file only, read-only unless the command writes, and
their errors as one line with exit code 2."""

from __future__ import annotations

import sqlite3
from pathlib import Path


class UsageError(Exception):
    """A bad path, key, size or name: one line, exit code 2."""


def open_database(path: str | Path, writable: bool = False) -> sqlite3.Connection:
    """The database at ``path``, which must exist: opening a missing one would create it (or,
    read-only, fail with SQLite's vaguer "unable to open database file")."""
    from gateway import db  # noqa: PLC0415 - only the commands that open a database need it

    if not Path(path).is_file():
        raise UsageError(f"no database {path}" + (" (a directory)" if Path(path).is_dir() else ""))
    return db.connect(path) if writable else db.connect_readonly(path)


def one_line(exc: Exception) -> str:
    """SQLite quotes the undecodable cell in its message: escaped, so the answer stays one line."""
    return str(exc).encode("unicode_escape").decode("ascii")[:300]
