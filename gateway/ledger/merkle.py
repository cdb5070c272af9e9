"""Merkle tree hashing and proofs of RFC 6962 section 2.1 (algorithms as restated in RFC 9162
section 2.1): leaf hash SHA-256(0x00 || leaf), interior node SHA-256(0x01 || left || right),
the root of n leaves splitting at the largest power of two smaller than n.

Everything here is pure and works on lists of 32-byte leaf hashes, so the ledger, the verifier
and the `tmeter ledger` commands share one implementation, and a third party can re-implement it
from the RFC alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_LEN = 32


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 2.1: MTH({d0}) = SHA-256(0x00 || d0)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 2.1: interior node SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 6962 2.1: MTH({}) = SHA-256()


def _split(n: int) -> int:
    """The largest power of two k with k < n <= 2k (RFC 6962 2.1), for n >= 2."""
    return 1 << ((n - 1).bit_length() - 1)


class Frontier:
    """The right edge of a growing tree: one root per perfect subtree, largest first.

    Appending is O(1) amortised and the root is O(log n), so the daemon can sign a checkpoint
    without rehashing the whole log. Because RFC 6962 puts every left subtree at a power-of-two
    size, folding these perfect subtrees from the right gives exactly MTH(D[n]).
    """

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []  # (height, hash)

    def append(self, hashed_leaf: bytes) -> None:
        height, node = 0, hashed_leaf
        while self._stack and self._stack[-1][0] == height:
            _, left = self._stack.pop()
            node = node_hash(left, node)
            height += 1
        self._stack.append((height, node))
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            node = node_hash(left, node)
        return node

    def copy(self) -> Frontier:
        other = Frontier()
        other.size, other._stack = self.size, list(self._stack)
        return other


def root(hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of already leaf-hashed entries."""
    frontier = Frontier()
    for h in hashes:
        frontier.append(h)
    return frontier.root()


def inclusion_proof(index: int, hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 2.1.1: the audit path of leaf ``index``."""
    n = len(hashes)
    if not 0 <= index < n:
        raise ValueError(f"leaf {index} is not in a tree of {n}")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return inclusion_proof(index, hashes[:k]) + [root(hashes[k:])]
    return inclusion_proof(index - k, hashes[k:]) + [root(hashes[:k])]


def _chop_trailing(fn: int, sn: int) -> tuple[int, int]:
    # RFC 9162 2.1.3.2 step 5.2 / 2.1.4.2: right-shift both until LSB(fn) is set or fn is 0.
    while fn and not fn & 1:
        fn >>= 1
        sn >>= 1
    return fn, sn


def root_from_inclusion(index: int, size: int, hashed_leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """RFC 9162 2.1.3.2: the root an audit path leads to, or None if the path is malformed."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, hashed_leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            fn, sn = _chop_trailing(fn, sn)
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(index: int, size: int, hashed_leaf: bytes, path: Sequence[bytes], expected_root: bytes) -> bool:
    return root_from_inclusion(index, size, hashed_leaf, path) == expected_root


def _subproof(m: int, hashes: Sequence[bytes], complete: bool) -> list[bytes]:
    # SUBPROOF(m, D[n], b) of RFC 6962 2.1.2.
    n = len(hashes)
    if m == n:
        return [] if complete else [root(hashes)]
    k = _split(n)
    if m <= k:
        return _subproof(m, hashes[:k], complete) + [root(hashes[k:])]
    return _subproof(m - k, hashes[k:], False) + [root(hashes[:k])]


def consistency_proof(old_size: int, hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 6962 2.1.2, for 0 < m <= n (empty for m == n or m == 0)."""
    n = len(hashes)
    if not 0 <= old_size <= n:
        raise ValueError(f"cannot prove {old_size} against a tree of {n}")
    if old_size in (0, n):
        return []
    return _subproof(old_size, hashes, True)


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2: does ``proof`` show the tree of ``old_size`` is a prefix of the new one?"""
    if old_size > new_size or old_size < 0:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof  # every tree extends the empty one
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # exact power of two: the old root is a node of the path
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            fn, sn = _chop_trailing(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


class Pruned:
    """A tree whose first ``base.size`` leaves are gone and known only by the frontier of that
    prefix (its compact range [0, base.size): one root per perfect subtree), with the leaf hashes
    from there on. Proofs of RFC 6962 2.1.1/2.1.2 for leaves and sizes at or after the cut need no
    pruned leaf: every node they use lies after the cut, is a run of the frontier's subtrees, or
    is split (at the RFC's power of two) into such pieces. A node inside one of the frontier's
    subtrees cannot be computed: ValueError."""

    def __init__(self, base: Frontier, hashes: Sequence[bytes]) -> None:
        self.cut = base.size
        self.base = base.copy()
        self.hashes = hashes
        self.spans: list[tuple[int, int, bytes]] = []
        at = 0
        for h, node in base._stack:  # noqa: SLF001 - (height, root), left to right
            self.spans.append((at, at + (1 << h), node))
            at += 1 << h

    @property
    def size(self) -> int:
        return self.cut + len(self.hashes)

    def node(self, a: int, b: int) -> bytes:
        """MTH(D[a:b])."""
        if a >= self.cut:
            return root(self.hashes[a - self.cut:b - self.cut])
        run = [(s, e, r) for s, e, r in self.spans if a <= s and e <= b]
        if b <= self.cut and run and run[0][0] == a and run[-1][1] == b:
            acc = run[-1][2]
            for _, _, r in reversed(run[:-1]):
                acc = node_hash(r, acc)
            return acc
        if b - a < 2 or any(s <= a and b <= e and (s, e) != (a, b) for s, e, _ in self.spans):
            raise ValueError(f"node {a}..{b} lies inside the pruned prefix (0..{self.cut - 1})")
        k = _split(b - a)
        return node_hash(self.node(a, a + k), self.node(a + k, b))

    def root(self, size: int | None = None) -> bytes:
        n = self.size if size is None else size
        return EMPTY_ROOT if n == 0 else self.node(0, n)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[size]) (RFC 6962 2.1.1) for a leaf at or after the cut."""
        if not self.cut <= index < size <= self.size:
            raise ValueError(f"leaf {index} is not in the kept part {self.cut}..{self.size - 1} of a tree of {size}")

        def path(lo: int, hi: int) -> list[bytes]:
            if hi - lo == 1:
                return []
            k = _split(hi - lo)
            if index < lo + k:
                return path(lo, lo + k) + [self.node(lo + k, hi)]
            return path(lo + k, hi) + [self.node(lo, lo + k)]

        return path(0, size)

    def consistency_proof(self, old_size: int, size: int) -> list[bytes]:
        """PROOF(old_size, D[size]) (RFC 6962 2.1.2) for an old size at or after the cut."""
        if not self.cut <= old_size <= size <= self.size:
            raise ValueError(f"cannot prove size {old_size} against {size} with leaves {self.cut}..{self.size - 1}")
        if old_size in (0, size):
            return []

        def sub(m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
            if m == hi - lo:
                return [] if complete else [self.node(lo, hi)]
            k = _split(hi - lo)
            if m <= k:
                return sub(m, lo, lo + k, complete) + [self.node(lo + k, hi)]
            return sub(m - k, lo + k, hi, False) + [self.node(lo, lo + k)]

        return sub(old_size, 0, size, True)
