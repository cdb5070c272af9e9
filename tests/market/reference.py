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
from gateway.market.community import Community

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


def solve(prob: cp.Problem) -> None:
    """Clarabel at the tightest tolerances it reaches: on a few degenerate problems the
    tightest settings stall, and the merely high-accuracy ones still answer."""
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
    x = cp.Variable(s)
    a = sp.csr_matrix((np.ones(s), (book.seg_owner, np.arange(s))), shape=(len(book), s))
    curvature = (book.seg_p1 - book.seg_p0) / book.seg_dq
    constant = float(book.cost(book.q_min).sum())  # C_n(q_min), checked on its own in the tests
    cost = book.seg_p0 @ x + 0.5 * cp.sum(cp.multiply(curvature, cp.square(x))) + constant
    q = book.q_min + a @ x
    return x, q, cost, [x >= 0, x <= book.seg_dq]


def _grid(community: Community, book: BidBook) -> tuple[cp.Variable, cp.Variable, cp.Expression, list]:
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


def solve_uniform(book: BidBook, community: Community) -> Reference:
    if len(book.seg_dq) == 0:
        return _solve_uniform_fixed(book, community)
    x, q, cost, cons = _member_costs(book)
    imp, exp, bill, grid_cons = _grid(community, book)
    balance = cp.sum(q) + imp - exp == 0
    prob = cp.Problem(cp.Minimize(cost + bill), cons + grid_cons + [balance])
    solve(prob)
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


def _solve_uniform_fixed(book: BidBook, community: Community) -> Reference:
    """No flexible member: the grid takes the net position (if it can); no dual to read."""
    net = -float(book.q_min.sum())
    imp, exp = max(net, 0.0), max(-net, 0.0)
    cap_ok = (community.import_capacity is None or imp <= community.import_capacity) and (
        community.export_capacity is None or exp <= community.export_capacity
    )
    side_ok = (imp == 0 or community.import_price is not None) and (
        exp == 0 or community.export_price is not None
    )
    if not (cap_ok and side_ok):
        return Reference("infeasible", np.nan, np.array([]), None, np.nan, np.nan)
    bill = (community.import_price or 0.0) * imp - (community.export_price or 0.0) * exp
    return Reference("optimal", float(book.cost(book.q_min).sum()) + bill, book.q_min.copy(), None, imp, exp)
