"""RFC 6962 hashing and proofs against a direct transcription of the RFC's recursive definitions."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ledger import merkle


def mth(entries: list[bytes]) -> bytes:
    """MTH(D[n]) exactly as RFC 6962 2.1 writes it, over raw entries."""
    n = len(entries)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(entries[:k]) + mth(entries[k:])).digest()


def entries(n: int) -> list[bytes]:
    return [i.to_bytes(4, "big") for i in range(n)]


def test_empty_and_single_leaf_roots() -> None:
    assert merkle.root([]) == hashlib.sha256(b"").digest()
    assert merkle.root([merkle.leaf_hash(b"x")]) == hashlib.sha256(b"\x00x").digest()


@given(st.integers(0, 70))
def test_frontier_root_equals_rfc_definition(n: int) -> None:
    data = entries(n)
    assert merkle.root([merkle.leaf_hash(d) for d in data]) == mth(data)


@settings(max_examples=150)
@given(st.integers(1, 70).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_inclusion_proofs_verify_and_bind_the_leaf(case: tuple[int, int]) -> None:
    n, i = case
    data = entries(n)
    hashes = [merkle.leaf_hash(d) for d in data]
    root = mth(data)
    path = merkle.inclusion_proof(i, hashes)
    assert merkle.verify_inclusion(i, n, hashes[i], path, root)
    assert not merkle.verify_inclusion(i, n, merkle.leaf_hash(b"other"), path, root)
    if n > 1:
        assert not merkle.verify_inclusion((i + 1) % n, n, hashes[i], path, root)
    if path:
        bad = list(path)
        bad[0] = bytes(32)
        assert not merkle.verify_inclusion(i, n, hashes[i], bad, root)


@settings(max_examples=150)
@given(st.integers(1, 70).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_consistency_proofs_verify_and_detect_rewrites(case: tuple[int, int]) -> None:
    m, n = case
    data = entries(n)
    hashes = [merkle.leaf_hash(d) for d in data]
    proof = merkle.consistency_proof(m, hashes)
    assert merkle.verify_consistency(m, n, mth(data[:m]), mth(data), proof)
    if 0 < m < n:
        rewritten = list(data)
        rewritten[m - 1] = b"rewritten"
        assert not merkle.verify_consistency(m, n, mth(rewritten[:m]), mth(data), proof)
        assert not merkle.verify_consistency(m, n, mth(data[:m]), mth(rewritten), proof)
