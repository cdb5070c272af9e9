"""merkle.Pruned: proofs of a log whose prefix is known only by its frontier (retention, issue 14)
equal the RFC 6962 proofs over the whole log, for every cut, leaf and size after the cut."""

import pytest

from gateway.ledger import merkle


def _hashes(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 33])
def test_pruned_proofs_equal_full_tree_proofs(n: int) -> None:
    hs = _hashes(n)
    for cut in range(n):
        base = merkle.Frontier()
        for h in hs[:cut]:
            base.append(h)
        tree = merkle.Pruned(base, hs[cut:])
        assert tree.root() == merkle.root(hs)
        for size in range(max(cut, 1), n + 1):
            for i in range(cut, size):
                assert tree.inclusion_proof(i, size) == merkle.inclusion_proof(i, hs[:size])
            for m in range(cut, size + 1):
                assert tree.consistency_proof(m, size) == merkle.consistency_proof(m, hs[:size])


def test_pruned_refuses_what_needs_a_removed_leaf() -> None:
    hs = _hashes(20)
    base = merkle.Frontier()
    for h in hs[:16]:
        base.append(h)
    tree = merkle.Pruned(base, hs[16:])
    with pytest.raises(ValueError):
        tree.inclusion_proof(3, 20)
    with pytest.raises(ValueError):
        tree.node(4, 8)  # inside the frontier's one subtree 0..15
    assert merkle.verify_inclusion(17, 20, hs[17], tree.inclusion_proof(17, 20), merkle.root(hs))
