"""The normal equations of the interior-point QP, assembled and factorised fast.

K = B diag(d) B^T + ridge I changes only in d from one interior-point iteration to the next, and
every column of B (a segment fill, an elastic slack, an edge flow) has one or two entries. So
the pattern of K, the position of every column's contribution in it, the split of K's rows into
sparse ones and the few dense ones (the grid's nodes, linked to every member) and the sparse
block's fill-reducing ordering are worked out once; each iteration then only sums d into K's
entries (one bincount), factorises the sparse block in the precomputed order (sparse LU with
diagonal pivots, K being positive definite) and the dense rows by a small Schur complement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Solve = Callable[[FloatArray], FloatArray]
DENSE_MAX = 300  # up to this many rows K is factorised dense
DENSE_DEGREE = 64  # rows with more entries (and 8x the median) go to the Schur complement


class NormalEquations:
    """Factorises B diag(d) B^T + ridge I for the fixed sparse matrix B (columns of <= 2)."""

    def __init__(self, B: Any, ridge: float) -> None:
        Bc = B.tocsc()
        counts = np.diff(Bc.indptr)
        if counts.max(initial=0) > 2:
            raise ValueError("every column of B must have at most two entries")
        self.m = B.shape[0]
        self.ridge = ridge
        rows, cols, coef, self.pair_cols = _pairs(Bc, counts)
        self.dense = self.m <= DENSE_MAX
        order = self._order(rows, cols)  # position of each row in the factorised matrix
        self._map(order[rows], order[cols], coef)
        self.order = order

    def _order(self, rows: IntArray, cols: IntArray) -> IntArray:
        """Rows renumbered: sparse rows in fill-reducing order, then the dense rows."""
        if self.dense:
            return np.arange(self.m)
        degree = np.bincount(rows, minlength=self.m)
        heavy = degree > max(DENSE_DEGREE, 8 * float(np.median(degree)))
        sparse_rows = np.flatnonzero(~heavy)
        self.ns = len(sparse_rows)
        fill = _fill_order(rows, cols, sparse_rows, self.m)
        order = np.empty(self.m, dtype=np.int64)
        order[sparse_rows] = fill  # SuperLU's perm_c: the new position of each column
        order[np.flatnonzero(heavy)] = self.ns + np.arange(int(heavy.sum()))
        return order

    def _map(self, r: IntArray, c: IntArray, coef: FloatArray) -> None:
        """Where each (column, pair) contribution lands; the diagonal gets the ridge."""
        m = self.m
        diag = np.arange(m)
        key = np.concatenate([c * m + r, diag * m + diag])  # column-major: CSC order
        keys, self.slot = np.unique(key, return_inverse=True)
        self.nkeys = len(keys)
        self.ridge_slots = self.slot[len(r):]
        self.slot = self.slot[: len(r)]
        self.coef = coef
        self.kr, self.kc = keys % m, keys // m
        if self.dense:
            return
        ns = self.ns
        ss = (self.kr < ns) & (self.kc < ns)
        self.ss = np.flatnonzero(ss)
        self.ss_indices = self.kr[ss]
        self.ss_indptr = np.concatenate([[0], np.cumsum(np.bincount(self.kc[ss], minlength=ns))])
        sd = (self.kr < ns) & (self.kc >= ns)
        self.sd, self.sd_at = np.flatnonzero(sd), (self.kr[sd], self.kc[sd] - ns)
        dd = (self.kr >= ns) & (self.kc >= ns)
        self.dd, self.dd_at = np.flatnonzero(dd), (self.kr[dd] - ns, self.kc[dd] - ns)

    def values(self, d: FloatArray, cols: IntArray) -> FloatArray:
        data = np.bincount(self.slot, weights=self.coef * d[cols], minlength=self.nkeys)
        data[self.ridge_slots] += self.ridge
        return data

    def factor(self, d: FloatArray) -> Solve:
        """A solver of (B diag(d) B^T + ridge I) y = r."""
        data = self.values(d, self.pair_cols)
        solve = self._dense(data) if self.dense else self._sparse(data)
        order = self.order
        return lambda r: solve(_scatter(r, order))[order]

    def _dense(self, data: FloatArray) -> Solve:
        import scipy.linalg

        K = np.zeros((self.m, self.m))
        K[self.kr, self.kc] = data
        try:
            factor = scipy.linalg.cho_factor(K, check_finite=False)
            return lambda r: scipy.linalg.cho_solve(factor, r, check_finite=False)
        except np.linalg.LinAlgError:  # rounding made it indefinite: pivoting LU still solves
            lu = scipy.linalg.lu_factor(K, check_finite=False)
            return lambda r: scipy.linalg.lu_solve(lu, r, check_finite=False)

    def _sparse(self, data: FloatArray) -> Solve:
        import scipy.linalg
        import scipy.sparse as sp
        import scipy.sparse.linalg

        ns, nd = self.ns, self.m - self.ns
        Kss = sp.csc_matrix((data[self.ss], self.ss_indices, self.ss_indptr), shape=(ns, ns))
        lu = scipy.sparse.linalg.splu(
            Kss, permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True}
        )
        if nd == 0:
            return lu.solve
        Ksd = np.zeros((ns, nd))
        Ksd[self.sd_at] = data[self.sd]
        Kdd = np.zeros((nd, nd))
        Kdd[self.dd_at] = data[self.dd]
        X = lu.solve(Ksd)
        schur = scipy.linalg.cho_factor(Kdd - Ksd.T @ X, check_finite=False)

        def solve(r: FloatArray) -> FloatArray:
            a = lu.solve(r[:ns])
            yd = scipy.linalg.cho_solve(schur, r[ns:] - Ksd.T @ a, check_finite=False)
            return np.concatenate([a - X @ yd, yd])

        return solve


def _pairs(Bc: Any, counts: IntArray) -> tuple[IntArray, IntArray, FloatArray, IntArray]:
    """(row, col, B[row,j] * B[col,j], j) for every pair of entries of every column j."""
    n = len(counts)
    start = Bc.indptr[:-1]
    first_r, first_v = Bc.indices[start], Bc.data[start]
    two = counts == 2
    second = np.where(two, start + 1, start)
    second_r, second_v = Bc.indices[second], Bc.data[second]
    cols = np.arange(n)
    has = counts > 0
    r = [first_r[has], second_r[two], first_r[two], second_r[two]]
    c = [first_r[has], second_r[two], second_r[two], first_r[two]]
    v = [first_v[has] ** 2, second_v[two] ** 2, (first_v * second_v)[two], (first_v * second_v)[two]]
    j = np.concatenate([cols[has], cols[two], cols[two], cols[two]])
    return np.concatenate(r), np.concatenate(c), np.concatenate(v), j


def _fill_order(rows: IntArray, cols: IntArray, sparse_rows: IntArray, m: int) -> IntArray:
    """A fill-reducing order of the sparse block: SuperLU's minimum degree on its pattern."""
    import scipy.sparse as sp
    import scipy.sparse.linalg

    local = np.full(m, -1)
    local[sparse_rows] = np.arange(len(sparse_rows))
    keep = (local[rows] >= 0) & (local[cols] >= 0)
    ns = len(sparse_rows)
    pattern = sp.csc_matrix(
        (np.ones(int(keep.sum())), (local[rows[keep]], local[cols[keep]])), shape=(ns, ns)
    )
    pattern = pattern + sp.identity(ns, format="csc") * (1.0 + abs(pattern).sum(axis=1).max())
    lu = scipy.sparse.linalg.splu(pattern.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0)
    return np.asarray(lu.perm_c)


def _scatter(r: FloatArray, order: IntArray) -> FloatArray:
    out = np.empty_like(r)
    out[order] = r
    return out
