"""Deterministic node prices for the peer-to-peer optimum, where the optimum leaves them free.

Given the optimal trades, the prices y_n that certify optimality (with the trade prices
lambda_nm that follow from them) are exactly the solutions of a system of difference
constraints:

    a_n <= y_n <= b_n              [a_n, b_n] = marginal prices of n's own bid around its award
                                   (a_n = -inf at q_min, b_n = +inf at q_max)
    y_m - y_n <= w_nm              every direction n -> m a trade may take (else trading more
                                   would pay), with equality on the direction actually traded

(w_nm the pair's preference cost). Such a set is a lattice: it has a least and a greatest
element, the shortest-path distances of its constraint graph (Cormen et al., Introduction to
Algorithms, §24.4). We report the middle of the two, or the finite one where the other is
unbounded: mechanism 1's price rule, node by node (with no preferences and every pair
connected, every member gets mechanism 1's price); where the rule gives neighbours
inconsistent targets, the greatest certifying prices below the targets. An interior point's
multipliers are an arbitrary point of the set, so they serve only to make the edge weights
non-negative (Johnson's reweighting) for Dijkstra.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .network import Network

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
SLACK = 1e-11  # added to every constraint, relative to the price scale: rounding, not economics
AT_BOUND = 1e-7  # an award this close (relative) to a curve's end or kink is at it


def select_prices(net: Network, t: FloatArray, y: FloatArray, traded: npt.NDArray[np.bool_]) -> FloatArray:
    """Node prices: the middle of the least and greatest certifying prices (see the module
    docstring), made consistent where some of them are unbounded."""
    q = net.net(t)
    lo, hi = marginal_range(net, q)
    scale = 1.0 + float(np.abs(np.concatenate([net.nodes.p_first, net.nodes.p_last])).max(initial=0.0))
    u, v, c = _constraints(net, t, traded, lo, hi, SLACK * scale)
    n = len(q)
    potential = np.concatenate([y, [0.0]])  # node n == the zero node
    greatest = _distances(u, v, c, n, potential)
    least = -_distances(v, u, c, n, -potential)
    if (least > greatest + 1e-9 * scale).any():
        return y  # the solver's awards are too rough to read the constraints from: keep its prices
    target = _target(least, greatest, 0.5 * (net.nodes.p_first + net.nodes.p_last))
    # Where one side is unbounded the targets of neighbours need not be consistent (the middle
    # of one, the finite end of the other): take the greatest certifying prices at or below the
    # targets, which are the targets themselves whenever those certify.
    from_zero = u == n
    u2 = np.concatenate([u[~from_zero], np.full(n, n)])
    v2 = np.concatenate([v[~from_zero], np.arange(n)])
    c2 = np.concatenate([c[~from_zero], target])
    return _distances(u2, v2, c2, n, potential)


def _target(least: FloatArray, greatest: FloatArray, fallback: FloatArray) -> FloatArray:
    """Mechanism 1's rule per node: the middle, the finite end, or the node's own bid."""
    finite_g, finite_l = np.isfinite(greatest), np.isfinite(least)
    mid = 0.5 * (np.where(finite_g, greatest, 0.0) + np.where(finite_l, least, 0.0))
    one = np.where(finite_g, greatest, np.where(finite_l, least, fallback))
    return np.where(finite_g & finite_l, mid, one)


def marginal_range(net: Network, q: FloatArray) -> tuple[FloatArray, FloatArray]:
    """[mc(q-), mc(q+)] of every node's bid at its award (-inf/+inf at the ends of its range)."""
    book = net.nodes
    n = len(book)
    eps = AT_BOUND * (1.0 + np.abs(book.q_min) + np.abs(book.q_max))
    at = q[book.seg_owner]
    q0, q1 = book.seg_q0, book.seg_q0 + book.seg_dq
    frac = np.clip((at - q0) / book.seg_dq, 0.0, 1.0)
    price = book.seg_p0 + frac * (book.seg_p1 - book.seg_p0)
    e = eps[book.seg_owner]
    left = np.full(n, -np.inf)
    right = np.full(n, np.inf)
    in_left = (at > q0 + e) & (at <= q1 + e)  # segment ends at or after q, starts before it
    in_right = (at >= q0 - e) & (at < q1 - e)
    np.maximum.at(left, book.seg_owner[in_left], price[in_left])
    np.minimum.at(right, book.seg_owner[in_right], price[in_right])
    # Beyond or at a range end there is no constraint on that side.
    left = np.where(q <= book.q_min + eps, -np.inf, np.where(np.isfinite(left), left, book.p_first))
    right = np.where(q >= book.q_max - eps, np.inf, np.where(np.isfinite(right), right, book.p_last))
    return left, right


def _constraints(
    net: Network, t: FloatArray, traded: npt.NDArray[np.bool_], lo: FloatArray, hi: FloatArray,
    slack: float,
) -> tuple[IntArray, IntArray, FloatArray]:
    """Edges u -> v of weight c, one per constraint y_v - y_u <= c (node n = the zero node)."""
    n = len(lo)
    zero = n
    w = net.weight
    forward = net.upper > 0  # tail may sell to head: y_head - y_tail <= w
    backward = net.lower < 0
    sold_fwd = traded & (t > 0)
    sold_bwd = traded & (t < 0)
    nodes = np.arange(n)
    has_hi, has_lo = np.isfinite(hi), np.isfinite(lo)
    parts = [
        (net.tail[forward], net.head[forward], w[forward]),
        (net.head[backward], net.tail[backward], w[backward]),
        (net.head[sold_fwd], net.tail[sold_fwd], -w[sold_fwd]),  # ... and >= w where sold
        (net.tail[sold_bwd], net.head[sold_bwd], -w[sold_bwd]),
        (np.full(int(has_hi.sum()), zero), nodes[has_hi], hi[has_hi]),
        (nodes[has_lo], np.full(int(has_lo.sum()), zero), -lo[has_lo]),
    ]
    u = np.concatenate([p[0] for p in parts]).astype(np.int64)
    v = np.concatenate([p[1] for p in parts]).astype(np.int64)
    c = np.concatenate([p[2] for p in parts]) + slack
    return u, v, c


def _distances(u: IntArray, v: IntArray, c: FloatArray, n: int, potential: FloatArray) -> FloatArray:
    """Shortest distances from the zero node (index n) along u -> v of length c (inf where
    unreachable), by Dijkstra on the weights reduced by ``potential`` (Johnson). Edges out of
    the zero node may reduce below zero; since a shortest path leaves it once, they are all
    shifted by one constant and the shift is taken off again."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    reduced = c + potential[u] - potential[v]
    source = u == n
    shift = max(0.0, -float(reduced[source].min(initial=0.0)))
    reduced = np.where(source, reduced + shift, np.maximum(reduced, 0.0)) + 1e-300  # > 0: stored
    order = np.lexsort((reduced, v, u))
    u, v, reduced = u[order], v[order], reduced[order]
    first = np.ones(len(u), dtype=bool)
    first[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1])  # keep the tightest of parallel edges
    graph = csr_matrix((reduced[first], (u[first], v[first])), shape=(n + 1, n + 1))
    dist = dijkstra(graph, indices=n) - shift
    return (dist + potential - potential[n])[:n]
