"""A bid's cost as the papers define it (issue 18, item 5): a quadratic bid costs exactly
a q^2/2 + b q + d (Moret & Pinson 2019; Sorin, Bobo & Pinson 2019) whatever its range; a curve
keeps C(0) = 0; the constant moves objectives and member costs, never prices or awards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.market import Bid, BidBook, BidError, CommunityTerms, clear, parse_bid_file
from gateway.market.errors import InfeasibleMarket
from tmeter.cli import main

from .strategies import communities, curve_bids, examples, prices, quantities

GRID = CommunityTerms(import_price=0.30, export_price=0.08)


def closed_form(a: float, b: float, d: float, q: float) -> float:
    return a * q * q / 2 + b * q + d


def test_the_issue_example_costs_what_its_formula_says() -> None:
    # Issue 18 measured 2016.45 here: the curve integrated from 0, flat at 198 below q_min = 7.3.
    book = BidBook.from_bids([Bid.quadratic("x", 10, 125, 7.3, 14.9)])
    assert book.cost([10.0])[0] == pytest.approx(1750.0, rel=1e-12)


@pytest.mark.parametrize("q", [7.3, 8.0, 10.0, 12.5, 14.9])
@pytest.mark.parametrize("d", [0.0, 40.0, -3.5])
def test_quadratic_with_d_costs_the_closed_form(q: float, d: float) -> None:
    bid = Bid.quadratic("x", 10, 125, 7.3, 14.9, d=d)
    by_bid = BidBook.from_bids([bid]).cost([q])[0]
    by_arrays = BidBook.from_quadratic(["x"], [10.0], [125.0], [7.3], [14.9], [d]).cost([q])[0]
    assert by_bid == pytest.approx(closed_form(10, 125, d, q), rel=1e-12)
    assert by_arrays == pytest.approx(by_bid, rel=1e-12)


def test_a_consumer_range_away_from_zero_costs_the_closed_form() -> None:
    # A load that must take 2..5 kWh: its (negative) cost is its value, a q^2/2 + b q + d.
    book = BidBook.from_bids([Bid.quadratic("load", 0.04, 0.35, -5.0, -2.0, d=1.0)])
    for q in (-5.0, -3.0, -2.0):
        assert book.cost([q])[0] == pytest.approx(closed_form(0.04, 0.35, 1.0, q), rel=1e-12)


def test_a_bad_d_is_named() -> None:
    with pytest.raises(BidError, match="'x'.*d must be a finite number"):
        Bid.quadratic("x", 1, 0, 0, 1, d=float("nan"))
    with pytest.raises(BidError, match="'y'.*d must be a finite number"):
        BidBook.from_quadratic(["x", "y"], [1, 1], [0, 0], [0, 0], [1, 1], [0, float("inf")])
    with pytest.raises(BidError, match="cost_at_q_min must be a finite number"):
        Bid.curve("z", [(0, 0.1), (1, 0.2)], cost_at_q_min=float("nan"))
    with pytest.raises(BidError, match="'w'.*cost_at_q_min must be a finite number"):
        BidBook.from_points(["w"], [[0, 1]], [[0.1, 0.2]], [float("inf")])


@st.composite
def quadratic(draw: st.DrawFn, meter: str = "m") -> tuple[Bid, tuple[float, float, float]]:
    lo, hi = sorted(draw(st.lists(quantities, min_size=2, max_size=2)))
    a = draw(st.floats(0.0, 0.2))
    b = draw(prices)
    d = draw(st.floats(-5.0, 5.0))
    return Bid.quadratic(meter, a, b, lo, hi, d=d), (a, b, d)


@settings(max_examples=examples(200), deadline=None)
@given(quadratic(), st.floats(0.0, 1.0))
def test_random_quadratics_cost_the_closed_form(drawn, where: float) -> None:
    bid, (a, b, d) = drawn
    q = bid.q_min + where * (bid.q_max - bid.q_min)
    got = BidBook.from_bids([bid]).cost([q])[0]
    want = closed_form(a, b, d, q)
    assert abs(got - want) <= 1e-9 * (1 + abs(want)), (got, want)


@st.composite
def quadratic_markets(draw: st.DrawFn) -> tuple[list[Bid], list[Bid], np.ndarray]:
    """The same market twice: the quadratics without d, then with; and the d's."""
    n = draw(st.integers(1, 6))
    drawn = [draw(quadratic(f"m{i}")) for i in range(n)]
    plain = [Bid.quadratic(b.meter, a, bb, b.q_min, b.q_max) for b, (a, bb, _) in drawn]
    return plain, [b for b, _ in drawn], np.array([d for _, (_, _, d) in drawn])


def assert_shifted_by_d(plain, with_d, d: np.ndarray) -> None:
    np.testing.assert_array_equal(with_d.q, plain.q)  # awards depend on mc only: bit for bit
    assert with_d.price == plain.price
    assert with_d.price_interval == plain.price_interval
    assert with_d.trades == plain.trades
    assert (with_d.grid_import, with_d.grid_export) == (plain.grid_import, plain.grid_export)
    np.testing.assert_array_equal(with_d.member_payment, plain.member_payment)
    tol = 1e-9 * (1 + np.abs(plain.member_cost).max(initial=0.0) + np.abs(d).sum())
    assert abs(with_d.objective - plain.objective - d.sum()) <= tol
    assert abs(with_d.community_cost - plain.community_cost - d.sum()) <= tol
    np.testing.assert_allclose(with_d.member_cost - plain.member_cost, d, atol=tol, rtol=0)
    assert (with_d.bau_member_cost is None) == (plain.bau_member_cost is None)
    if plain.bau_member_cost is not None:
        np.testing.assert_array_equal(with_d.bau_q, plain.bau_q)
        np.testing.assert_allclose(with_d.bau_member_cost - plain.bau_member_cost, d, atol=tol, rtol=0)
        assert abs(with_d.savings - plain.savings) <= tol  # d is paid alone and in the community


@settings(max_examples=examples(60), deadline=None)
@given(quadratic_markets(), communities())
def test_d_moves_the_uniform_objective_by_its_sum_and_nothing_else(market, community) -> None:
    plain_bids, bids, d = market
    try:
        plain = clear(plain_bids, community)
    except InfeasibleMarket:
        with pytest.raises(InfeasibleMarket):
            clear(bids, community)
        return
    assert_shifted_by_d(plain, clear(bids, community), d)


@settings(max_examples=examples(15), deadline=None)
@given(quadratic_markets(), communities(allow_islanded=False, capacities=False))
def test_d_moves_the_p2p_objective_by_its_sum_and_nothing_else(market, community) -> None:
    plain_bids, bids, d = market
    plain = clear(plain_bids, community, mechanism="p2p")
    assert_shifted_by_d(plain, clear(bids, community, mechanism="p2p"), d)


def integral_from_zero(points: list[tuple[float, float]], q: float) -> float:
    """Integral from 0 to q of the curve taken flat beyond its ends, by the midpoint rule on the
    pieces between knots (exact: the curve is linear inside each piece)."""
    knots = sorted({0.0, q, *(x for x, _ in points)})
    lo, hi = min(0.0, q), max(0.0, q)
    total = 0.0
    for u, v in zip(knots, knots[1:]):
        mid = 0.5 * (u + v)
        if lo <= u and v <= hi and u < mid < v:  # else a piece too narrow to hold a float
            total += (v - u) * price_inside(points, mid)
    return total if q >= 0 else -total


def price_inside(points: list[tuple[float, float]], x: float) -> float:
    """The curve's price at x, x not at a knot (so a vertical step is never hit)."""
    if x < points[0][0]:
        return points[0][1]
    if x > points[-1][0]:
        return points[-1][1]
    for (q0, p0), (q1, p1) in zip(points, points[1:]):
        if q0 < x < q1:
            return float(np.interp(x, [q0, q1], [p0, p1]))
    raise AssertionError(f"{x} is a knot")


@settings(max_examples=examples(200), deadline=None)
@given(st.data(), st.floats(-4, 4))
def test_curve_bids_keep_the_integral_from_zero(data, q: float) -> None:
    bid = data.draw(curve_bids("c"))
    if bid.cost_at_q_min is not None:  # a quadratic: the closed form above
        return
    got = BidBook.from_bids([bid]).cost([q])[0]
    want = integral_from_zero(list(bid.points), q)
    assert abs(got - want) <= 1e-9 * (1 + abs(want)), (got, want)


def test_a_curve_may_carry_its_cost_at_its_first_point() -> None:
    points = [(1.0, 0.10), (3.0, 0.30)]
    book = BidBook.from_bids([Bid.curve("c", points, cost_at_q_min=2.0), Bid.curve("z", points)])
    got = book.cost([2.0, 2.0])
    assert got[0] == pytest.approx(2.0 + 0.15)  # 2 at q = 1, then the trapezoid from 1 to 2
    assert got[1] == pytest.approx(0.10 + 0.15)  # C(0) = 0: flat at 0.10 from 0 to 1
    arrays = BidBook.from_points(["c", "z"], [[1, 3], [1, 3]], [[0.1, 0.3], [0.1, 0.3]], [2.0, np.nan])
    np.testing.assert_allclose(arrays.cost([2.0, 2.0]), got, rtol=1e-12)


FILE = {
    "community": {"import_price": 0.30, "export_price": 0.08},
    "bids": [
        {"meter": "gen", "quadratic": {"a": 0.1, "b": 0.05, "q_min": 1.0, "q_max": 4.0, "d": 0.5}},
        {"meter": "load", "curve": [[-3.0, 0.20], [-1.0, 0.40]], "cost_at_q_min": -1.0},
        {"meter": "pv", "curve": [[0.0, 0.0], [1.0, 0.0]]},
    ],
}


def test_the_bid_file_reads_d_and_cost_at_q_min() -> None:
    bids = parse_bid_file(FILE).bids
    assert bids[0] == Bid.quadratic("gen", 0.1, 0.05, 1.0, 4.0, d=0.5)
    assert bids[1].cost_at_q_min == -1.0 and bids[2].cost_at_q_min is None
    without = json.loads(json.dumps(FILE))
    del without["bids"][0]["quadratic"]["d"]
    assert parse_bid_file(without).bids[0] == Bid.quadratic("gen", 0.1, 0.05, 1.0, 4.0)


@pytest.mark.parametrize(
    ("bid", "message"),
    [
        ({"meter": "g", "quadratic": {"a": 1, "b": 0, "q_min": 0, "q_max": 1, "d": "big"}},
         "bid #0 'g': quadratic 'd' must be a number"),
        ({"meter": "c", "curve": [[0, 0.1]], "cost_at_q_min": "none"},
         "bid #0 'c': 'cost_at_q_min' must be a number"),
    ],
)
def test_the_bid_file_names_a_bad_constant(bid: dict, message: str) -> None:
    with pytest.raises(BidError) as err:
        parse_bid_file({"community": FILE["community"], "bids": [bid]})
    assert message in str(err.value)


def test_tmeter_clear_reports_the_objective_with_d(tmp_path: Path, capsys) -> None:
    def run(data: dict) -> dict:
        path = tmp_path / "bids.json"
        path.write_text(json.dumps(data))
        assert main(["clear", "--bids", str(path), "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    with_d = run(FILE)
    plain = json.loads(json.dumps(FILE))
    plain["bids"][0]["quadratic"]["d"] = 0.0
    without = run(plain)
    assert with_d["awards"] == without["awards"] and with_d["price"] == without["price"]
    assert with_d["objective"] == pytest.approx(without["objective"] + 0.5, abs=1e-12)
    assert with_d["member_costs"]["gen"] == pytest.approx(without["member_costs"]["gen"] + 0.5)
    # gen's own cost at its award is the closed form (plus what it is paid, minus nothing else)
    q = with_d["awards"]["gen"]
    own = with_d["member_costs"]["gen"] - with_d["payments"]["gen"]
    assert own == pytest.approx(closed_form(0.1, 0.05, 0.5, q), rel=1e-12)
