"""The least-core allocation over a billing period (gateway/market/cooperative.py): nobody pays
more than alone, the costs add up to the community's, coalition values agree with cvxpy, and on
small communities (every coalition sampled) the excess is the least core's."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from gateway.market import Bid, BidBook, CommunityTerms, InfeasibleMarket
from gateway.market.cooperative import (coalition_costs, community_cost, cooperative_allocation,
                                        sample_coalitions, sub_book)

from .reference import solve_uniform
from .strategies import curve_bids, examples

GRID = CommunityTerms(import_price=0.30, export_price=0.08)


@st.composite
def periods(draw: st.DrawFn, max_members: int = 6, max_intervals: int = 4) -> list[BidBook]:
    """A few intervals of the same members' random bids."""
    n = draw(st.integers(1, max_members))
    t = draw(st.integers(1, max_intervals))
    return [BidBook.from_bids([draw(curve_bids(f"m{i}")) for i in range(n)]) for _ in range(t)]


@settings(max_examples=examples(40), deadline=None)
@given(periods(), st.integers(0, 20))
def test_nobody_pays_more_than_alone_and_costs_add_up(books: list[BidBook], samples: int) -> None:
    lc = cooperative_allocation(books, GRID, samples=samples)
    assert lc.individually_rational
    assert (lc.cost <= lc.alone).all(), lc.saving  # exactly, not to a tolerance
    assert abs(float(lc.cost.sum()) - lc.grand) <= 1e-9 * (1.0 + abs(lc.grand))
    assert lc.grand <= float(lc.alone.sum()) + 1e-9 * (1.0 + abs(lc.grand))


@settings(max_examples=examples(30), deadline=None)
@given(periods(max_members=5, max_intervals=1), st.sampled_from([GRID, CommunityTerms(0.3, 0.08, 2.0, 1.0)]))
def test_coalition_values_are_the_sub_communities_optimum(books: list[BidBook], community: CommunityTerms) -> None:
    """Against cvxpy on each coalition's own book; the closed form (no capacity) and the
    clearing (capacities) alike."""
    book = books[0]
    masks = np.array([m for m in itertools.product([False, True], repeat=len(book)) if any(m)])
    try:
        got = coalition_costs(book, community, masks)
    except InfeasibleMarket:
        return
    for mask, value in zip(masks, got):
        ref = solve_uniform(sub_book(book, mask), community)
        assert ref.status in ("optimal", "optimal_inaccurate")
        assert value == pytest.approx(ref.objective, abs=1e-6 * (1 + abs(ref.objective)))
        assert value == pytest.approx(community_cost(sub_book(book, mask), community), abs=1e-9 * (1 + abs(value)))


def exhaustive_least_core(books: list[BidBook]) -> tuple[float, dict[tuple[int, ...], float]]:
    """eps of the least core with every coalition, singletons as hard caps (own LP, own values)."""
    n = len(books[0])
    coalitions = [c for r in range(2, n) for c in itertools.combinations(range(n), r)]
    value = {c: sum(solve_uniform(sub_book(b, np.isin(np.arange(n), c)), GRID).objective for b in books)
             for c in coalitions + [tuple(range(n))] + [(i,) for i in range(n)]}
    rows = [np.append(np.isin(np.arange(n), c).astype(float), -1.0) for c in coalitions]
    rows += [np.append(np.eye(n)[i], 0.0) for i in range(n)]
    rhs = [value[c] for c in coalitions] + [value[(i,)] for i in range(n)]
    res = linprog(np.append(np.zeros(n), 1.0), np.array(rows), rhs, np.append(np.ones(n), 0.0)[None, :],
                  [value[tuple(range(n))]], bounds=[(None, None)] * (n + 1), method="highs")
    return float(res.x[-1]), value


@settings(max_examples=examples(10), deadline=None)
@given(periods(max_members=5, max_intervals=2).filter(lambda b: len(b[0]) >= 4))
def test_with_every_coalition_sampled_it_is_the_least_core(books: list[BidBook]) -> None:
    n = len(books[0])
    assert len(sample_coalitions(n, 100)) == 2 ** n - 2 - n  # all but singletons and the whole
    lc = cooperative_allocation(books, GRID, samples=100)
    eps, value = exhaustive_least_core(books)
    assert lc.epsilon == pytest.approx(eps, abs=1e-6)
    for c, v in value.items():
        if 1 < len(c) < n:
            assert lc.cost[list(c)].sum() <= v + eps + 1e-6


def test_a_generous_member_is_paid_for_what_it_brings() -> None:
    """PV next to a home: alone the PV sells at 0.08 and the home buys at 0.30; together they
    save 0.22 per kWh, and the least core splits it so that neither is worse off."""
    books = [BidBook.from_bids([Bid.curve("pv", [(0, 0), (2, 0)]), Bid.curve("home", [(-2, 0.5), (0, 0.5)])])]
    lc = cooperative_allocation(books, GRID)
    assert lc.grand == pytest.approx(2 * (-0.5))  # the home's value, no grid bill
    assert lc.saving.sum() == pytest.approx(2 * 0.22)
    assert (lc.saving >= 0).all()
    assert lc.saving == pytest.approx([0.22, 0.22])  # the equal split is in the core here
