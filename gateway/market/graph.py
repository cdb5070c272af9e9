"""Trading graphs for the peer-to-peer market: who may trade with whom, and how far apart they are.

Sorin, Bobo & Pinson (2019) let every pair trade; at scale each member trades with its k
nearest peers instead (the sparse graphs of docs/architecture.md §7), found with a k-d tree in
O(N log N). A pair is an edge if either member counts the other among its k nearest, so the
graph is undirected and every member has at least k counterparts (when there are k others).
gamma_nm, the per-pair criterion of the product differentiation, is the Euclidean distance
between the members' positions.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def member_pairs(positions: FloatArray, k: int | None) -> tuple[IntArray, IntArray, FloatArray]:
    """(i, j, distance) for every edge i < j: all pairs, or the k-nearest-neighbour graph."""
    n = len(positions)
    if k is None or k >= n - 1:
        i, j = np.triu_indices(n, 1)
    else:
        i, j = _nearest(positions, k)
    i, j = i.astype(np.int64), j.astype(np.int64)
    dist = np.linalg.norm(positions[i] - positions[j], axis=1) if len(i) else np.zeros(0)
    return i, j, dist


def _nearest(positions: FloatArray, k: int) -> tuple[IntArray, IntArray]:
    """Each member's k nearest others, ties in distance broken by row (bid) order."""
    from scipy.spatial import cKDTree

    n = len(positions)
    dist, idx = cKDTree(positions).query(positions, k=k + 2)
    nearest = np.empty((n, k), dtype=np.int64)
    for row in range(n):
        # The tree orders equal distances arbitrarily: where a tie reaches the k-th place,
        # rank that row exactly by (distance, index).
        if dist[row, k] == dist[row, k + 1] or dist[row, 1] == 0.0:
            nearest[row] = _ranked(positions, row, k)
        else:
            others = idx[row][idx[row] != row]
            nearest[row] = others[:k]
    rows = np.repeat(np.arange(n), k)
    a, b = rows, nearest.reshape(-1)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    pairs = np.unique(lo * n + hi)
    return pairs // n, pairs % n


def _ranked(positions: FloatArray, row: int, k: int) -> IntArray:
    d = np.linalg.norm(positions - positions[row], axis=1)
    order = np.lexsort((np.arange(len(d)), d))
    return order[order != row][:k]
