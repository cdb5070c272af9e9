"""Mechanism 1 (uniform-price collective): exact against cvxpy/Clarabel, KKT, and the edge cases."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.market.bids import Bid, BidBook
from gateway.market.terms import CommunityTerms
from gateway.market.errors import InfeasibleMarket
from gateway.market.uniform import clear_uniform

from .checks import assert_matches_reference, assert_uniform_kkt
from .reference import OK, solve_uniform
from .strategies import communities, examples, cost, markets

GRID = CommunityTerms(import_price=0.30, export_price=0.08)


def clear(bids: list[Bid], community: CommunityTerms = GRID):
    return clear_uniform(BidBook.from_bids(bids), community)


def block(meter: str, q_from: float, q_to: float, price: float) -> Bid:
    return Bid.curve(meter, [(q_from, price), (q_to, price)])


def check_against_reference(bids: list[Bid], community: CommunityTerms, unique: bool) -> None:
    book = BidBook.from_bids(bids)
    ref = solve_uniform(book, community)
    try:
        res = clear_uniform(book, community)
    except InfeasibleMarket:
        assert "infeasible" in ref.status
        return
    assert ref.status in OK, ref.status
    polished = lambda: solve_uniform(book, community, "OSQP")  # noqa: E731
    assert_matches_reference(bids, res, ref, unique_awards=unique, polished=polished)
    assert_uniform_kkt(bids, community, res)


@settings(max_examples=examples(80), deadline=None)
@given(markets(), communities())
def test_matches_reference_on_random_markets(bids: list[Bid], community: CommunityTerms) -> None:
    check_against_reference(bids, community, unique=False)


@settings(max_examples=examples(40), deadline=None)
@given(markets(sloped_only=True), communities(allow_islanded=False))
def test_strictly_convex_awards_match_reference(bids: list[Bid], community: CommunityTerms) -> None:
    """With strictly increasing curves the awards are unique: they must agree one by one."""
    check_against_reference(bids, community, unique=True)


@settings(max_examples=examples(60), deadline=None)
@given(markets(), communities(capacities=False))
def test_bau_is_each_member_clearing_alone(bids: list[Bid], community: CommunityTerms) -> None:
    try:
        res = clear(bids, community)
    except InfeasibleMarket:
        return
    if res.bau_member_cost is None:
        assert community.islanded or community.import_price is None or community.export_price is None
        return
    for i, bid in enumerate(bids):
        alone = clear([bid], community)
        assert abs(res.bau_member_cost[i] - alone.community_cost) <= 1e-9 * (1 + abs(alone.community_cost))
    assert res.savings is not None and res.savings >= -1e-9


@settings(max_examples=examples(60), deadline=None)
@given(markets(), st.floats(-4, 4))
def test_cost_is_the_integral_of_the_curve(bids: list[Bid], q: float) -> None:
    book = BidBook.from_bids(bids)
    got = book.cost(np.full(len(bids), q))
    for i, bid in enumerate(bids):
        assert abs(got[i] - cost(bid, q)) <= 1e-9 * (1 + abs(got[i]))


@pytest.mark.parametrize("rule", ["none", "equal", "proportional"])
def test_allocation_rules_are_budget_balanced(rule: str) -> None:
    bids = [block("pv", 0, 2, 0.0), block("home", -3, 0, 0.40), block("flat", -1, 0, 0.40)]
    res = clear(bids, dataclasses.replace(GRID, allocation=rule))
    assert res.grid_import == pytest.approx(2.0)
    assert sum(res.payments.values()) == pytest.approx(0.30 * 2.0)
    assert sum(res.member_costs.values()) == pytest.approx(res.community_cost)


def test_allocation_rules_share_the_import_bill_as_documented() -> None:
    bids = [block("pv", 0, 2, 0.0), block("home", -3, 0, 0.40), block("flat", -1, 0, 0.40)]
    by_rule = {r: clear(bids, dataclasses.replace(GRID, allocation=r)).payments for r in ("none", "equal", "proportional")}
    # none: marginal pricing, every kWh at the import price
    assert by_rule["none"] == pytest.approx({"pv": -0.6, "home": 0.9, "flat": 0.3})
    # equal: the 0.60 import bill split three ways, and nothing else (allocation.py)
    assert by_rule["equal"] == pytest.approx({"pv": 0.2, "home": 0.2, "flat": 0.2})
    # proportional to grid use alone, |q_BAU| + 1 Wh: pv 2, home 3, flat 1 kWh
    assert by_rule["proportional"]["home"] == pytest.approx(0.6 * 3.001 / 6.003)


# --- edge cases ---------------------------------------------------------------------------


def test_single_sided_market_buys_everything_from_the_grid() -> None:
    res = clear([block("a", -2, 0, 0.5), Bid.quadratic("b", 0.1, 0.5, -1, 0)])
    assert res.price == pytest.approx(0.30)
    assert res.awards == pytest.approx({"a": -2.0, "b": -1.0})
    assert res.grid_import == pytest.approx(3.0)
    assert res.savings == pytest.approx(0.0)


def test_single_sided_sellers_sell_to_the_grid() -> None:
    res = clear([block("pv1", 0, 1.5, 0.0), block("pv2", 0, 0.5, 0.0)])
    assert res.price == pytest.approx(0.08)
    assert res.grid_export == pytest.approx(2.0)


def test_all_supply_at_one_price_is_split_in_proportion_to_range() -> None:
    bids = [block("s1", 0, 1, 0.1), block("s2", 0, 3, 0.1), block("d", -2, 0, 0.25)]
    res = clear(bids, CommunityTerms())  # islanded: the block at 0.1 sets the price
    assert res.price == pytest.approx(0.1)
    assert res.awards == pytest.approx({"s1": 0.5, "s2": 1.5, "d": -2.0})


def test_identical_curves_get_identical_awards() -> None:
    bids = [block(f"s{i}", 0, 1, 0.1) for i in range(5)] + [block("d", -2, 0, 0.2)]
    res = clear(bids, CommunityTerms())
    awards = [res.awards[f"s{i}"] for i in range(5)]
    assert awards == [awards[0]] * 5 and awards[0] == pytest.approx(0.4)


def test_members_come_before_the_grid_at_equal_price() -> None:
    """A seller asking exactly the import price still sells before the grid does."""
    res = clear([block("s", 0, 1, 0.30), block("d", -3, 0, 0.5)])
    assert res.price == pytest.approx(0.30)
    assert res.awards["s"] == pytest.approx(1.0)
    assert res.grid_import == pytest.approx(2.0)


def test_import_capacity_binds_and_is_priced() -> None:
    community = dataclasses.replace(GRID, import_capacity=1.0)
    bids = [Bid.quadratic("d", 0.2, 0.6, -3, 0)]  # would import 1.5 kWh at 0.30
    res = clear(bids, community)
    assert res.grid_import == pytest.approx(1.0)
    assert res.price > 0.30 and res.congestion_import == pytest.approx(res.price - 0.30)
    assert res.price == pytest.approx(0.6 + 0.2 * -1.0)
    ref = solve_uniform(BidBook.from_bids(bids), community)
    assert ref.price == pytest.approx(res.price, abs=1e-7)


def test_export_capacity_binds_and_is_priced() -> None:
    community = dataclasses.replace(GRID, export_capacity=0.5)
    bids = [Bid.quadratic("pv", 0.1, -0.1, 0, 2)]  # would export 2 kWh at 0.08
    res = clear(bids, community)
    assert res.grid_export == pytest.approx(0.5)
    assert res.price == pytest.approx(-0.1 + 0.1 * 0.5)
    assert res.congestion_export == pytest.approx(0.08 - res.price)


def test_zero_width_bids_are_fixed_positions() -> None:
    res = clear([Bid.fixed("load", -1.5, 0.3), Bid.fixed("pv", 0.5), block("flex", -1, 0, 0.2)])
    assert res.awards["load"] == -1.5 and res.awards["pv"] == 0.5
    assert res.awards["flex"] == pytest.approx(0.0)
    assert res.grid_import == pytest.approx(1.0)


def test_one_member_equals_business_as_usual() -> None:
    res = clear([Bid.quadratic("m", 1.0, 0.1, -2, 2)])
    assert res.community_cost == pytest.approx(res.bau_cost)
    assert res.awards["m"] == pytest.approx(0.0)  # mc(0) = 0.1: not worth selling at 0.08
    assert res.price == pytest.approx(0.1)  # nor buying at 0.30: its own marginal price


def test_empty_market() -> None:
    res = clear([])
    assert res.awards == {} and res.grid_import == 0 and res.community_cost == 0
    assert res.price == pytest.approx(0.19)  # middle of [export, import]
    assert clear([], CommunityTerms()).price is None


def test_islanded_market_clears_between_members() -> None:
    bids = [block("s", 0, 1.0, 0.1), block("b1", -0.7, 0, 0.2), block("b2", -0.3, 0, 0.2)]
    res = clear(bids, CommunityTerms())
    assert res.price == pytest.approx(0.15)  # the middle of the blocks' prices
    assert res.price_interval == pytest.approx((0.1, 0.2))
    assert res.grid_import == 0 and res.grid_export == 0
    assert res.bau_cost == 0.0  # alone and off-grid, each member stays at q = 0
    assert res.savings == pytest.approx(0.1)  # 1 kWh valued 0.2 by buyers, costing 0.1


def test_islanded_market_that_cannot_balance_is_infeasible() -> None:
    with pytest.raises(InfeasibleMarket, match="import at least 2"):
        clear([Bid.fixed("load", -2.0)], CommunityTerms())
