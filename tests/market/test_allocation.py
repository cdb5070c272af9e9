"""Cost allocation inside the members' problems (gateway/market/allocation.py): the rule changes
the dispatch, the dispatch is every member's best response, payments add up to the grid bill,
and the exact engine agrees with an independent cvxpy formulation and with ADMM."""

from __future__ import annotations

import dataclasses

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.market import Bid, BidBook, CommunityTerms, InfeasibleMarket, clear
from gateway.market.allocation import potential
from gateway.market.terms import RULES

from .checks import scale_of
from .reference import solve
from .strategies import communities, cost, examples, markets, supply

# The DTU CEE summer school 2018 community case (A-Eltved/peer-2-peer-markets, admm_community.py):
# 11 consumers with some renewables, 3 producers; costs a p^2/2 + b p, grid at gamma = 40
# (export) and gamma + tau = 70 (import).
DTU_PMIN = [-21.7, -94.2, -47.8, -7.6, -11.2, -29.5, -9.0, -3.5, -6.1, -13.5, -14.9, 0, 0, 0]
DTU_PMAX = [0] * 11 + [20.0, 50.0, 10.0]
DTU_PREN = [0, 0, 0, 14.9, 9.0, 10.0, 18.5, 2.0, 7.0, 5.0, 5.0, 0, 0, 0]
DTU_A = [4, 1, 2, 10, 8, 4, 9, 15, 18, 7, 6, 7, 2, 8]
DTU_B = [130, 120, 135, 125, 140, 145, 150, 135, 140, 125, 120, 25, 10, 20]


def dtu_bids() -> list[Bid]:
    """Net export p in [Pmin + Pren, Pmax + Pren] with cost a p^2/2 + b p (the course's model)."""
    return [Bid.quadratic(f"a{i + 1}", a, b, lo + r, hi + r)
            for i, (a, b, lo, hi, r) in enumerate(zip(DTU_A, DTU_B, DTU_PMIN, DTU_PMAX, DTU_PREN))]


def dtu_terms(rule: str) -> CommunityTerms:
    return CommunityTerms(import_price=70.0, export_price=40.0, allocation=rule)


def test_the_rule_changes_the_dispatch_on_the_dtu_case() -> None:
    """Moret & Pinson: allocation schemes impact individual dispatch. A member that carries only
    1/N of the import price consumes more than one that carries all of it."""
    q = {rule: clear(dtu_bids(), dtu_terms(rule)).q for rule in RULES}
    assert np.abs(q["equal"] - q["marginal"]).max() > 1.0
    assert np.abs(q["proportional"] - q["marginal"]).max() > 1.0
    assert q["equal"].sum() < q["marginal"].sum()  # more imported under equal sharing
    totals = {rule: clear(dtu_bids(), dtu_terms(rule)).community_cost for rule in RULES}
    assert totals["marginal"] < min(totals["equal"], totals["proportional"])  # welfare optimum


def test_none_is_marginal() -> None:
    a, b = clear(dtu_bids(), dtu_terms("none")), clear(dtu_bids(), dtu_terms("marginal"))
    assert np.array_equal(a.q, b.q) and np.array_equal(a.member_payment, b.member_payment)


def test_equal_sharing_pays_a_pv_seller_nothing_for_energy_its_neighbours_use() -> None:
    """The documented choice: under a sharing rule the member's whole bill is its share of G."""
    bids = [Bid.curve("pv", [(0, 0), (2, 0)]), Bid.curve("home", [(-3, 0.5), (0, 0.5)])]
    res = clear(bids, CommunityTerms(0.30, 0.08, allocation="equal"))
    assert res.awards == pytest.approx({"pv": 2.0, "home": -3.0})
    assert res.payments == pytest.approx({"pv": 0.15, "home": 0.15})  # 1 kWh at 0.30, halved


# --- properties on random instances -----------------------------------------------------------


def bau_position(bid: Bid, community: CommunityTerms) -> float:
    """The member alone (read from its points): sells down to its supply at the export price
    if that is positive, buys up to its supply at the import price if negative, else 0."""
    if community.export_price is not None and supply(bid, community.export_price)[0] > 0:
        return supply(bid, community.export_price)[0]
    if community.import_price is not None and supply(bid, community.import_price)[1] < 0:
        return supply(bid, community.import_price)[1]
    return 0.0


def shares_of(bids: list[Bid], community: CommunityTerms) -> np.ndarray:
    """The documented shares, recomputed: 1/N, or |q_BAU| + 1 Wh normalised (1/N where some
    member cannot be alone: a side of the grid it needs is missing); marginal: 1."""
    n = len(bids)
    if community.rule == "marginal":
        return np.ones(n)
    alone = all((community.export_price is not None or b.q_min <= 0)
                and (community.import_price is not None or b.q_max >= 0) for b in bids)
    if community.rule == "proportional" and alone:
        w = np.array([abs(bau_position(b, community)) for b in bids]) + 1e-3
        return w / w.sum()
    return np.full(n, 1.0 / n)


def grid_bill(community: CommunityTerms, net_export: float) -> float:
    """G of the members' net export (inf where the grid cannot take or give it)."""
    imp, exp = max(-net_export, 0.0), max(net_export, 0.0)
    imp_cap = np.inf if community.import_capacity is None else community.import_capacity
    exp_cap = np.inf if community.export_capacity is None else community.export_capacity
    if imp > 1e-9 and (community.import_price is None or imp > imp_cap + 1e-9):
        return np.inf
    if exp > 1e-9 and (community.export_price is None or exp > exp_cap + 1e-9):
        return np.inf
    return (community.import_price or 0.0) * imp - (community.export_price or 0.0) * exp


def solve_weighted(bids: list[Bid], community: CommunityTerms, weight: np.ndarray) -> float | None:
    """min sum_n weight_n C_n(q_n) + G, written for cvxpy over each bid's pieces: the potential."""
    fills, cons, costs, qs = [], [], [], []
    for bid, w in zip(bids, weight):
        q = bid.q_min
        for (q0, p0), (q1, p1) in zip(bid.points, bid.points[1:]):
            if q1 > q0:
                x = cp.Variable()
                fills.append(x)
                cons += [x >= 0, x <= q1 - q0]
                costs.append(w * (p0 * x + 0.5 * (p1 - p0) / (q1 - q0) * cp.square(x)))
                q = q + x
        costs.append(w * cost(bid, bid.q_min))
        qs.append(q)
    imp, exp = cp.Variable(), cp.Variable()
    cons += [imp >= 0, exp >= 0, sum(qs) + imp - exp == 0]
    for price, cap, var in ((community.import_price, community.import_capacity, imp),
                            (community.export_price, community.export_capacity, exp)):
        cons.append(var <= (0.0 if price is None else cap if cap is not None else 1e6))
    bill = (community.import_price or 0.0) * imp - (community.export_price or 0.0) * exp
    prob = cp.Problem(cp.Minimize(sum(costs) + bill), cons)
    try:
        solve(prob)
    except cp.error.SolverError:  # weights 1/s_n up to ~1e4 stall Clarabel on a few problems
        solve(prob, "OSQP")
    return float(prob.value) if prob.status in ("optimal", "optimal_inaccurate") else None


def cleared(bids: list[Bid], community: CommunityTerms, solver: str = "exact"):
    try:
        return clear(bids, community, solver=solver)
    except InfeasibleMarket:
        return None


@settings(max_examples=examples(60), deadline=None)
@given(markets(6), communities())
def test_payments_add_up_to_the_grid_bill_under_every_rule(bids: list[Bid], community: CommunityTerms) -> None:
    res = cleared(bids, community)
    if res is None:
        return
    bill = community.grid_bill(res.grid_import, res.grid_export)
    scale = 1.0 + abs(bill) + scale_of(bids)
    assert abs(float(res.member_payment.sum()) - bill) <= 1e-9 * scale
    assert abs(float(res.member_cost.sum()) - res.community_cost) <= 1e-9 * (scale + abs(res.community_cost))
    assert abs(res.community_cost - (sum(cost(b, q) for b, q in zip(bids, res.q)) + bill)) <= 1e-7 * scale


@settings(max_examples=examples(60), deadline=None)
@given(markets(5), communities())
def test_every_member_is_on_its_best_response(bids: list[Bid], community: CommunityTerms) -> None:
    """The equilibrium: no member lowers C_n(x) + s_n G(x + the others) by moving alone
    (searched on a fine grid of its own range)."""
    res = cleared(bids, community)
    if res is None or not bids:
        return
    s = shares_of(bids, community)
    total = float(res.q.sum())
    for n, bid in enumerate(bids):
        rest = total - res.q[n]
        here = cost(bid, res.q[n]) + s[n] * grid_bill(community, total)
        for x in np.linspace(bid.q_min, bid.q_max, 301):
            there = cost(bid, x) + s[n] * grid_bill(community, x + rest)
            assert here <= there + 1e-6 * (1.0 + abs(here)), (n, res.q[n], x, here, there)


@settings(max_examples=examples(40), deadline=None)
@given(markets(5), communities())
def test_the_exact_equilibrium_minimises_the_potential_as_cvxpy_finds_it(
    bids: list[Bid], community: CommunityTerms
) -> None:
    res = cleared(bids, community)
    if res is None or not bids:
        return
    s = shares_of(bids, community)
    got = potential(BidBook.from_bids(bids), community, res.q)
    want = solve_weighted(bids, community, 1.0 / s)
    assert want is not None
    assert abs(got - want) <= 1e-6 * (1.0 + abs(want)) * (1.0 + scale_of(bids)), (got, want)


@settings(max_examples=examples(25), deadline=None)
@given(markets(6, sloped_only=True), communities(allow_islanded=False),
       st.sampled_from(["equal", "proportional"]))
def test_admm_with_modified_x_updates_reaches_the_exact_equilibrium(
    bids: list[Bid], community: CommunityTerms, rule: str
) -> None:
    community = dataclasses.replace(community, allocation=rule)
    exact = cleared(bids, community)
    if exact is None:
        return
    admm = clear(bids, community, solver="distributed")
    assert admm.convergence is not None and admm.convergence.converged
    assert np.allclose(admm.q, exact.q, atol=1e-5 * scale_of(bids), rtol=0), (admm.q, exact.q)


@settings(max_examples=examples(40), deadline=None)
@given(markets(6), communities())
def test_marginal_is_the_cheapest_dispatch_for_the_community(bids: list[Bid], community: CommunityTerms) -> None:
    by_rule = {r: cleared(bids, dataclasses.replace(community, allocation=r)) for r in RULES}
    if by_rule["marginal"] is None:
        return
    best = by_rule["marginal"].community_cost
    for rule, res in by_rule.items():
        assert res.community_cost >= best - 1e-7 * (1.0 + abs(best) + scale_of(bids)), rule
