"""Independent reference: the market problems written for a general convex solver (cvxpy).

Deliberately a different formulation from the engines': the primal problem over segment fills
(each segment's cost p0 x + (p1 - p0) x^2 / (2 dq)), grid import and export as their own
variables, per-pair trades P_nm and P_mn as separate variables tied by reciprocity, and prices
read from the solver's duals. Used by the property tests and by bench/clearing.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from gateway.market.bids import BidBook
from gateway.market.terms import CommunityTerms

# Clarabel at high accuracy: its duals (our prices) at degenerate optima need gaps near 1e-13.
SOLVER_OPTS = {
    "tol_gap_abs": 1e-13,
    "tol_gap_rel": 1e-13,
    "tol_feas": 1e-13,
    "tol_ktratio": 1e-10,
    "max_iter": 400,
    "reduced_tol_gap_abs": 1e-9,
    "reduced_tol_gap_rel": 1e-9,
    "reduced_tol_feas": 1e-9,
}
FALLBACK_OPTS = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 400}
OK = ("optimal", "optimal_inaccurate")


OSQP_OPTS = {"eps_abs": 1e-11, "eps_rel": 1e-11, "max_iter": 200000, "polish": True}


def solve(prob: cp.Problem, solver: str = "CLARABEL") -> None:
    """Solve ``prob``; ``solver`` "CLARABEL" (tight), "OSQP" (polished) or "CLARABEL-DEFAULT"
    (Clarabel's own default tolerances, 1e-8: what the benchmark times, the fastest fair
    setting)."""
    if solver == "CLARABEL-DEFAULT":
        prob.solve(solver=cp.CLARABEL)
        return
    _solve_accurate(prob, solver)


def _solve_accurate(prob: cp.Problem, solver: str) -> None:
    """Clarabel at the tightest tolerances it reaches (on a few degenerate problems the
    tightest settings stall, and the merely high-accuracy ones still answer), or OSQP with
    solution polishing, whose active-set polish gives exact duals where an interior point's
    are off by ~1e-6 (prices exactly at a kink)."""
    if solver == "OSQP":
        prob.solve(solver=cp.OSQP, **OSQP_OPTS)
        return
    try:
        prob.solve(solver=cp.CLARABEL, **SOLVER_OPTS)
    except cp.error.SolverError:
        prob.solve(solver=cp.CLARABEL, **FALLBACK_OPTS)


@dataclass
class Reference:
    status: str
    objective: float
    q: np.ndarray
    price: float | None  # uniform: dual of the balance
    grid_import: float
    grid_export: float
    trade_prices: dict[tuple[int, int], float] | None = None  # p2p: (seller, buyer) -> lambda


def _member_costs(book: BidBook) -> tuple[cp.Variable, cp.Expression, cp.Expression, list]:
    """Segment fills x, members' q = q_min + A x, and the members' total cost."""
    s = len(book.seg_dq)
    dq = book.seg_dq if s else np.zeros(1)  # no flexible member: one fill pinned at zero
    x = cp.Variable(len(dq))
    a = sp.csr_matrix((np.ones(s), (book.seg_owner, np.arange(s))), shape=(len(book), len(dq)))
    curvature = (book.seg_p1 - book.seg_p0) / book.seg_dq if s else np.zeros(1)
    p0 = book.seg_p0 if s else np.zeros(1)
    constant = float(book.cost(book.q_min).sum())  # C_n(q_min), checked on its own in the tests
    cost = p0 @ x + 0.5 * cp.sum(cp.multiply(curvature, cp.square(x))) + constant
    q = book.q_min + a @ x
    return x, q, cost, [x >= 0, x <= dq]


def _grid(community: CommunityTerms, book: BidBook) -> tuple[cp.Variable, cp.Variable, cp.Expression, list]:
    imp, exp = cp.Variable(), cp.Variable()
    cons = [imp >= 0, exp >= 0]
    cons.append(imp <= 0 if community.import_price is None else imp >= 0)
    cons.append(exp <= 0 if community.export_price is None else exp >= 0)
    if community.import_capacity is not None:
        cons.append(imp <= community.import_capacity)
    if community.export_capacity is not None:
        cons.append(exp <= community.export_capacity)
    bill = (community.import_price or 0.0) * imp - (community.export_price or 0.0) * exp
    return imp, exp, bill, cons


def solve_uniform(book: BidBook, community: CommunityTerms, solver: str = "CLARABEL") -> Reference:
    x, q, cost, cons = _member_costs(book)
    imp, exp, bill, grid_cons = _grid(community, book)
    balance = cp.sum(q) + imp - exp == 0
    prob = cp.Problem(cp.Minimize(cost + bill), cons + grid_cons + [balance])
    solve(prob, solver)
    if prob.status not in OK:
        return Reference(prob.status, np.nan, np.array([]), None, np.nan, np.nan)
    return Reference(
        prob.status,
        float(prob.value),
        np.asarray(q.value, dtype=float).reshape(-1),
        -float(balance.dual_value),
        float(imp.value),
        float(exp.value),
    )


def nearest_pairs(pos: np.ndarray, k: int | None) -> list[tuple[int, int]]:
    """The trading graph by brute force: every pair, or each member's k nearest (either side)."""
    n = len(pos)
    if k is None or k >= n - 1:
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=2)
    np.fill_diagonal(dist, np.inf)
    pairs = set()
    for i in range(n):
        for j in np.argsort(dist[i], kind="stable")[:k]:
            pairs.add((min(i, int(j)), max(i, int(j))))
    return sorted(pairs)


def solve_p2p(book: BidBook, community: CommunityTerms, positions: np.ndarray, prefs: np.ndarray,
              k: int | None, grid_distance: float | None = None, solver: str = "CLARABEL") -> Reference:
    """Sorin et al.'s multi-bilateral dispatch with one variable per direction of every pair,
    reciprocity as constraints (their duals are the trade prices), the grid as a selling node
    and a buying node connected to every member."""
    n = len(book)
    pairs = nearest_pairs(positions, k)
    dist = [float(np.linalg.norm(positions[i] - positions[j])) for i, j in pairs]
    gdist = grid_distance if grid_distance is not None else (max(dist) if dist else 0.0)
    gi, ge = n, n + 1  # grid import node (only sells) and export node (only buys)
    links = [(i, j, d) for (i, j), d in zip(pairs, dist)]
    if community.import_price is not None:
        links += [(m, gi, gdist) for m in range(n)]
    if community.export_price is not None:
        links += [(m, ge, gdist) for m in range(n)]
    owner = [i for i, _, _ in links] + [j for _, j, _ in links]  # directed: (i->j), then (j->i)
    c = np.concatenate([prefs, [0.0, 0.0]])
    gamma = np.array([d for _, _, d in links] * 2)
    P = cp.Variable(len(owner))
    out = sp.csr_matrix((np.ones(len(owner)), (owner, np.arange(len(owner)))), shape=(n + 2, len(owner)))
    x, q, cost, cons = _member_costs(book)
    imp, exp, bill, grid_cons = _grid(community, book)
    net = out @ P
    cons += grid_cons + [net[:n] == q, net[gi] == imp, net[ge] == -exp]
    role = np.concatenate([book.q_min >= 0, [True, False]]), np.concatenate([book.q_max <= 0, [False, True]])
    sells_only, buys_only = role[0][owner], role[1][owner]
    if sells_only.any():
        cons.append(P[np.flatnonzero(sells_only)] >= 0)
    if buys_only.any():
        cons.append(P[np.flatnonzero(buys_only)] <= 0)
    m = len(links)
    reciprocity = P[:m] + P[m:] == 0
    preference = cp.sum(cp.multiply(c[owner] * gamma, cp.abs(P)))
    prob = cp.Problem(cp.Minimize(cost + bill + preference), cons + [reciprocity] if m else cons)
    solve(prob, solver)
    if prob.status not in OK:
        return Reference(prob.status, np.nan, np.array([]), None, np.nan, np.nan)
    duals = -np.asarray(reciprocity.dual_value).reshape(-1) if m else np.zeros(0)
    prices = {(i, j): float(duals[e]) for e, (i, j, _) in enumerate(links)}
    return Reference(prob.status, float(prob.value), np.asarray(q.value).reshape(-1), None,
                     float(imp.value), float(exp.value), prices)
