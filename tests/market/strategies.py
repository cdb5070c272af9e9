"""Hypothesis strategies for random markets, and a plain-Python reading of bids for KKT checks."""

from __future__ import annotations

import os

from hypothesis import strategies as st

from gateway.market.bids import Bid
from gateway.market.terms import ALLOCATIONS, CommunityTerms

# MARKET_EXAMPLES=20 runs every property test with 20 times its examples (a longer soak).
SCALE = int(os.environ.get("MARKET_EXAMPLES", "1"))


def examples(n: int) -> int:
    return n * SCALE


prices = st.floats(0.0, 0.5, allow_nan=False).map(lambda v: round(v, 4))
quantities = st.floats(-3.0, 3.0, allow_nan=False).map(lambda v: round(v, 3))


@st.composite
def curve_bids(draw: st.DrawFn, meter: str, sloped_only: bool = False) -> Bid:
    """A random bid: a quadratic, or a curve of 1..5 points (blocks, steps and slopes)."""
    if sloped_only or draw(st.booleans()):
        lo, hi = sorted(draw(st.lists(quantities, min_size=2, max_size=2)))
        if sloped_only and hi - lo < 0.01:
            hi = lo + 0.5
        a = draw(st.floats(0.01 if sloped_only else 0.0, 0.2))
        return Bid.quadratic(meter, a, draw(prices), lo, hi)
    n = draw(st.integers(1, 5))
    qs = sorted(draw(st.lists(quantities, min_size=n, max_size=n)))
    ps = sorted(draw(st.lists(prices, min_size=n, max_size=n)))
    return Bid.curve(meter, list(zip(qs, ps)))


@st.composite
def markets(draw: st.DrawFn, max_members: int = 8, sloped_only: bool = False) -> list[Bid]:
    n = draw(st.integers(0 if not sloped_only else 1, max_members))
    return [draw(curve_bids(f"m{i}", sloped_only)) for i in range(n)]


@st.composite
def communities(draw: st.DrawFn, allow_islanded: bool = True, capacities: bool = True) -> CommunityTerms:
    imp = draw(st.one_of(st.none(), prices.map(lambda p: p + 0.2))) if allow_islanded else 0.3
    exp = draw(st.one_of(st.none(), prices)) if allow_islanded else 0.05
    if imp is not None and exp is not None and exp > imp:
        exp = imp
    cap = st.one_of(st.none(), st.floats(0.0, 4.0).map(lambda v: round(v, 2)))
    return CommunityTerms(
        import_price=imp,
        export_price=exp,
        import_capacity=draw(cap) if capacities else None,
        export_capacity=draw(cap) if capacities else None,
        allocation=draw(st.sampled_from(ALLOCATIONS)),
    )


def supply(bid: Bid, price: float) -> tuple[float, float]:
    """Least and greatest optimal net export of ``bid`` at ``price`` (read from the points)."""
    lo = hi = bid.points[0][0]
    for (q0, p0), (q1, p1) in zip(bid.points, bid.points[1:]):
        width = q1 - q0
        if width <= 0:
            continue
        if p1 == p0:
            lo += width if price > p0 else 0.0
            hi += width if price >= p0 else 0.0
        else:
            frac = 0.0 if price <= p0 else 1.0 if price >= p1 else (price - p0) / (p1 - p0)
            lo += frac * width
            hi += frac * width
    return lo, hi


def cost(bid: Bid, q: float) -> float:
    """C(q): the bid's C(q_min) plus the integral from q_min to q, or with no C(q_min) given,
    the integral from 0 to q (the curve extended flat), by summing trapezoids."""
    if bid.cost_at_q_min is None:
        return integral_from_zero(bid, q)
    return bid.cost_at_q_min + integral_from_zero(bid, q) - integral_from_zero(bid, bid.q_min)


def integral_from_zero(bid: Bid, q: float) -> float:
    """Integral of the curve from 0 to q, extended flat, by summing trapezoids."""
    pts = list(bid.points)
    knots = sorted({0.0, q, *(p[0] for p in pts)})
    lo, hi = min(0.0, q), max(0.0, q)
    total = 0.0
    for a, b in zip(knots, knots[1:]):
        if a >= lo and b <= hi and b > a:
            total += 0.5 * (b - a) * (_mc_right(pts, a) + _mc_left(pts, b))
    return total if q >= 0 else -total


def _mc_right(pts: list[tuple[float, float]], q: float) -> float:
    """Marginal price just above q (flat beyond the ends)."""
    if q >= pts[-1][0]:
        return pts[-1][1]
    if q < pts[0][0]:
        return pts[0][1]
    for (q0, p0), (q1, p1) in zip(pts, pts[1:]):
        if q0 <= q < q1:
            return p0 + (p1 - p0) * (q - q0) / (q1 - q0)
    raise AssertionError("unreachable")


def _mc_left(pts: list[tuple[float, float]], q: float) -> float:
    """Marginal price just below q (flat beyond the ends)."""
    if q <= pts[0][0]:
        return pts[0][1]
    if q > pts[-1][0]:
        return pts[-1][1]
    for (q0, p0), (q1, p1) in zip(pts, pts[1:]):
        if q0 < q <= q1:
            return p0 + (p1 - p0) * (q - q0) / (q1 - q0)
    raise AssertionError("unreachable")
