"""Distributed solvers reach the exact engines' solutions: ADMM (mechanism 1), C+I (mechanism 2)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings

from gateway.market.admm import Stopping, admm_uniform
from gateway.market.allocation import clear_allocated, potential
from gateway.market.bids import Bid, BidBook
from gateway.market.terms import CommunityTerms
from gateway.market.consensus import consensus_p2p
from gateway.market.errors import InfeasibleMarket
from gateway.market.p2p import clear_p2p

from .checks import close, scale_of
from .strategies import communities, examples, markets
from .test_p2p import p2p_markets, params_for

AWARD_TOL = 1e-5  # of the market's size: the distributed solvers stop at residuals ~1e-9


def assert_same_solution(bids: list[Bid], exact, distributed, unique: bool) -> None:
    assert distributed.convergence is not None and distributed.convergence.converged
    assert distributed.convergence.iterations >= (1 if bids else 0)
    assert close(distributed.objective, exact.objective, scale_of(bids)), (
        distributed.objective, exact.objective)
    if unique:
        assert np.allclose(distributed.q, exact.q, atol=AWARD_TOL * scale_of(bids), rtol=0)


def check_admm(bids: list[Bid], community: CommunityTerms, unique: bool) -> None:
    """ADMM with each member's share of the grid bill in its x-update reaches the exact
    equilibrium of the rule: the same potential (and awards where they are unique)."""
    book = BidBook.from_bids(bids)
    try:
        exact = clear_allocated(book, community)
    except InfeasibleMarket:
        return
    admm = admm_uniform(book, community)
    assert admm.convergence is not None and admm.convergence.converged
    phi_exact, phi_admm = potential(book, community, exact.q), potential(book, community, admm.q)
    assert close(phi_admm, phi_exact, scale_of(bids) / min(1.0, _least_share(exact))), (phi_admm, phi_exact)
    if unique:
        assert np.allclose(admm.q, exact.q, atol=AWARD_TOL * scale_of(bids), rtol=0)
    if exact.price_interval is not None and exact.price is not None:
        lo, hi = exact.price_interval
        assert lo - 1e-5 <= admm.price <= hi + 1e-5


def _least_share(res) -> float:
    shares = res.extra.get("shares")
    return min(shares.values()) if shares else 1.0


def check_consensus(market, community: CommunityTerms, unique: bool) -> None:
    bids, positions, prefs, k = market
    book = BidBook.from_bids(bids)
    params = params_for(bids, positions, prefs, k)
    try:
        exact = clear_p2p(book, community, params)
    except InfeasibleMarket:
        return
    assert_same_solution(bids, exact, consensus_p2p(book, community, params), unique)


@settings(max_examples=examples(40), deadline=None)
@given(markets(6), communities())
def test_admm_reaches_the_collective_optimum(bids: list[Bid], community: CommunityTerms) -> None:
    check_admm(bids, community, unique=False)


@settings(max_examples=examples(30), deadline=None)
@given(markets(6, sloped_only=True), communities(allow_islanded=False))
def test_admm_awards_match_when_unique(bids: list[Bid], community: CommunityTerms) -> None:
    check_admm(bids, community, unique=True)


@settings(max_examples=examples(25), deadline=None)
@given(p2p_markets(max_members=5), communities())
def test_consensus_reaches_the_p2p_optimum(market, community: CommunityTerms) -> None:
    check_consensus(market, community, unique=False)


@settings(max_examples=examples(20), deadline=None)
@given(p2p_markets(sloped_only=True, max_members=5), communities(allow_islanded=False))
def test_consensus_awards_match_when_unique(market, community: CommunityTerms) -> None:
    check_consensus(market, community, unique=True)


def test_iteration_limit_is_reported_not_hidden() -> None:
    bids = [Bid.quadratic(f"m{i}", 0.1, 0.1 * i, -2, 2) for i in range(5)]
    book = BidBook.from_bids(bids)
    grid = CommunityTerms(import_price=0.3, export_price=0.05)
    res = admm_uniform(book, grid, Stopping(max_iter=3))
    assert res.convergence.iterations == 3 and not res.convergence.converged
    assert res.to_json()["convergence"]["iterations"] == 3
