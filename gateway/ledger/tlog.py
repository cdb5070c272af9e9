"""The append-only ledger: an RFC 6962 Merkle log over salted commitments, and its checkpoints.

Leaf i of the tree is the 32-byte commitment SHA-256(salt_i || record_i), hashed into the tree as
RFC 6962 leaf SHA-256(0x00 || commitment). ``record`` is canonical JSON: the exact body a meter
signed for readings and bids, the gateway's own canonical encoding for clearings, awards and
settlement lines, stored compressed (gateway/ledger/records.py: the exact bytes come back). Salts
and records are kept apart from commitments (table ``openings``), so
erasing a member removes what identifies them while every root and proof stays valid; the
random salt stops anyone from confirming a guessed record against a bare commitment.

Each checkpoint is itself a leaf (kind ``checkpoint``, naming the previous checkpoint's size and
root) and the last leaf of the tree it signs, so the log records its own checkpoints; an
erasure leaf names the leaves it erased and is signed in the same transaction (docs §9).

All writes go through ``Ledger.transaction()``: the leaves become part of the in-memory tree only
when the SQLite transaction that stored them commits.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway import db
from gateway.ledger import merkle, note, records
from protocols import canonical, signature
from protocols.errors import ProtocolError

SALT_LEN = 16


def commitment(salt: bytes, record: bytes) -> bytes:
    return hashlib.sha256(salt + record).digest()


def encode_record(kind: str, fields: dict[str, Any]) -> bytes:
    """Canonical JSON of a gateway-made ledger record (same encoding as the wire protocol)."""
    return canonical.encode(dict(fields, type=kind))


def signature_line(skid: int, sig: bytes) -> str:
    """How ``openings.sig`` keeps a meter's signature: its signature line without the newline,
    ``sig <skid>:<128 lowercase hex r || s>`` (protocols/signature.py)."""
    return signature.attach(b"", skid, sig)[1:].decode()


def parse_signature_line(text: str) -> tuple[int, bytes]:
    """(skid, r || s) of ``signature_line``'s text; ProtocolError("bad_frame") for any other."""
    rest, skid, sig = signature.split(b"\n" + text.encode("ascii", "replace"))
    if rest or skid is None or sig is None:
        raise ProtocolError("bad_frame", "not a signature line")
    return skid, sig


def load_hashes(conn: sqlite3.Connection, start: int = 0, end: int | None = None) -> list[bytes]:
    """The RFC 6962 leaf hashes of leaves ``start`` .. ``end - 1`` (default: to the log's end), in order."""
    rows = conn.execute("SELECT commitment FROM leaves WHERE idx >= ? AND idx < ? ORDER BY idx",
                        (start, (1 << 62) if end is None else end))
    return [merkle.leaf_hash(bytes(r[0])) for r in rows]


def pruned_base(conn: sqlite3.Connection) -> merkle.Frontier:
    """The frontier of the leaves `tmeter ledger prune` removed (empty: none removed). A database
    from before retention has no ``pruned`` table, which means the same."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name='pruned'").fetchone() is None:
        return merkle.Frontier()
    row = conn.execute("SELECT cut, nodes FROM pruned").fetchone()
    if row is None:
        return merkle.Frontier()
    base = unpack_frontier(row[0], bytes(row[1])) if isinstance(row[1], bytes) and isinstance(row[0], int) else None
    if base is None:
        raise ValueError("the pruned table's frontier is malformed (edited)")
    return base


def tree(conn: sqlite3.Connection, size: int | None = None) -> merkle.Pruned:
    """The log's first ``size`` leaves (default: all) for proofs: the pruned prefix's frontier and
    the kept leaves' hashes. An archive file (`tmeter ledger archive`) has no pruned row and no
    leaf 0: its start checkpoint's stored frontier is the base, the leaves after it its own."""
    base = pruned_base(conn)
    if base.size == 0:
        first = conn.execute("SELECT MIN(idx) FROM leaves").fetchone()[0]
        if first:
            row = conn.execute("SELECT size, nodes FROM frontiers WHERE size >= ? ORDER BY size LIMIT 1",
                               (first,)).fetchone()
            start = unpack_frontier(row[0], bytes(row[1])) if row else None
            if start is None:
                raise ValueError(f"the database starts at leaf {first} and holds no frontier to prove from")
            base = start
    return merkle.Pruned(base, load_hashes(conn, base.size, size))


def pack_frontier(tree: merkle.Frontier) -> bytes:
    """The frontier's subtree roots, largest first; their heights are the set bits of its size."""
    return b"".join(node for _, node in tree._stack)  # noqa: SLF001 - the frontier's own state, stored


def unpack_frontier(size: int, nodes: bytes) -> merkle.Frontier | None:
    """The frontier of a tree of ``size`` leaves from ``pack_frontier``; None if the bytes cannot be
    one (its roots are still unverified: fold it and compare with a signed root)."""
    heights = [h for h in range(size.bit_length() - 1, -1, -1) if size >> h & 1]
    if len(nodes) != merkle.HASH_LEN * len(heights):
        return None
    tree = merkle.Frontier()
    tree.size = size
    tree._stack = [(h, nodes[i * merkle.HASH_LEN:(i + 1) * merkle.HASH_LEN])  # noqa: SLF001
                   for i, h in enumerate(heights)]
    return tree


class Ledger:
    def __init__(self, conn: sqlite3.Connection, origin: str, signing_key: Ed25519PrivateKey | None = None) -> None:
        self.conn = conn
        self.origin = origin
        self.signing_key = signing_key
        self.frontier = self._load()
        self._pending: list[bytes] | None = None

    def _load(self) -> merkle.Frontier:
        # A pruned log resumes from the frontier of its removed prefix.
        tree = pruned_base(self.conn)
        for h in load_hashes(self.conn, tree.size):
            tree.append(h)
        return tree

    @property
    def size(self) -> int:
        return self.frontier.size

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction in which ``append`` may be called."""
        pending: list[bytes] = []
        self._pending = pending
        self._catch_up()

        def grow() -> None:
            for h in pending:
                self.frontier.append(h)

        try:
            with db.transaction(self.conn, on_commit=[grow]) as conn:
                yield conn
        finally:
            self._pending = None

    def _catch_up(self) -> None:
        # Another process (`tmeter ledger erase`) may have appended leaves: rebuild if so.
        n = self.conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM leaves").fetchone()[0]
        if n != self.frontier.size:
            self.frontier = self._load()

    def mark(self) -> int:
        """A position inside the open transaction, for ``rollback_to`` after a SAVEPOINT rollback."""
        return len(self._pending or ())

    def rollback_to(self, mark: int) -> None:
        if self._pending is not None:
            del self._pending[mark:]

    def append(self, kind: str, meter: str | None, iv: int | None, record: bytes, sig: str | None = None) -> int:
        """Add one leaf inside ``transaction()``; returns its index. ``sig``: the meter's
        signature line over ``record`` (``signature_line``), kept with the opening, outside
        the commitment: it proves who made the record, the commitment that the log holds it."""
        if self._pending is None:
            raise RuntimeError("Ledger.append outside Ledger.transaction()")
        idx = self.frontier.size + len(self._pending)
        salt = os.urandom(SALT_LEN)
        c = commitment(salt, record)
        self.conn.execute("INSERT INTO leaves(idx, commitment, kind, meter, iv) VALUES (?,?,?,?,?)",
                          (idx, c, kind, meter, iv))
        self.conn.execute("INSERT INTO openings(idx, salt, record, sig) VALUES (?,?,?,?)",
                          (idx, salt, records.pack(record), sig))
        self._pending.append(merkle.leaf_hash(c))
        return idx

    def latest_checkpoint(self) -> tuple[note.Checkpoint, bytes] | None:
        row = self.conn.execute("SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return note.Checkpoint(self.origin, row[0], bytes(row[1])), bytes(row[2])

    def checkpoint(self) -> tuple[note.Checkpoint, bytes]:
        """Sign the current tree (C2SP tlog-checkpoint) unless the latest checkpoint covers it."""
        with self.transaction() as conn:
            return self._checkpoint_in(conn)

    def _checkpoint_in(self, conn: sqlite3.Connection) -> tuple[note.Checkpoint, bytes]:
        """Inside ``transaction()``: append a checkpoint leaf, sign the tree it ends, store the note.

        The leaf (``{"type": "checkpoint", "size": n, "prev_size": p, "prev_root": r}``, n being
        the size it is the last leaf of) puts every checkpoint into the log itself, so a deleted
        checkpoint row is a signed leaf without its checkpoint, and the leaves chain the checkpoints."""
        if self.signing_key is None:
            raise RuntimeError("this ledger has no signing key")
        latest = self.latest_checkpoint()
        size = self.frontier.size + len(self._pending or ())
        if latest is not None and latest[0].size == size:
            return latest
        fields: dict[str, Any] = {"size": size + 1}
        if latest is not None:
            fields.update(prev_size=latest[0].size, prev_root=latest[0].root_b64)
        self.append("checkpoint", None, None, encode_record("checkpoint", fields))
        tree = self.frontier.copy()
        for h in self._pending or ():
            tree.append(h)
        cp = note.Checkpoint(self.origin, tree.size, tree.root())
        signed = note.sign_checkpoint(cp, self.signing_key)
        conn.execute("INSERT INTO checkpoints(size, root, note, created) VALUES (?,?,?,?)",
                     (cp.size, cp.root, signed, time.time()))
        conn.execute("INSERT OR REPLACE INTO frontiers(size, nodes) VALUES (?,?)", (cp.size, pack_frontier(tree)))
        return cp, signed

    def erase(self, meter: str) -> int:
        """GDPR-style erasure: delete the member's salts, records and the rows derived from them;
        the commitments stay, so the tree and every checkpoint still verify. Returns how many
        leaves were erased. The erasure leaf names the member and the erased leaf indices, and
        is signed by a checkpoint in the same transaction, so an erasure outside the signed log
        or one naming other leaves is a forgery `ledger verify` names."""
        if self.signing_key is None:
            raise RuntimeError("erasing needs the ledger's signing key")
        # Overwrite deleted content in the file too, not just unlink it from the b-trees.
        self.conn.execute("PRAGMA secure_delete=ON")
        with self.transaction() as conn:
            idxs = [r[0] for r in conn.execute("SELECT idx FROM leaves WHERE meter=? AND erased=0 ORDER BY idx",
                                               (meter,))]
            conn.executemany("DELETE FROM openings WHERE idx=?", [(i,) for i in idxs])
            conn.execute("UPDATE leaves SET erased=1 WHERE meter=?", (meter,))
            for table in ("readings", "bids", "awards", "settlements", "meter_status", "quarantine"):
                conn.execute(f"DELETE FROM {table} WHERE meter=?", (meter,))  # noqa: S608 - fixed names
            record = encode_record("erasure", {"member": meter, "leaves": len(idxs), "idxs": idxs})
            leaf = self.append("erasure", None, None, record)
            conn.execute("INSERT OR REPLACE INTO erasures(meter, at, leaf) VALUES (?,?,?)", (meter, time.time(), leaf))
            self._checkpoint_in(conn)
        return len(idxs)
