"""Optimality checks shared by the market tests: KKT conditions and comparisons with the reference."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gateway.market.bids import Bid
from gateway.market.terms import CommunityTerms
from gateway.market.result import ClearingResult

from .reference import Reference
from .strategies import supply

PRICE_EPS = 1e-7
REL = 1e-6


def scale_of(bids: list[Bid]) -> float:
    return 1.0 + sum(abs(b.q_min) + abs(b.q_max) for b in bids)


def close(a: float, b: float, scale: float = 1.0) -> bool:
    return abs(a - b) <= REL * max(abs(a), abs(b), scale * 1e-3)


def assert_on_supply(bid: Bid, q: float, price: float, eps: float) -> None:
    """KKT for a member: q is optimal for it at ``price`` (its supply function, loosened)."""
    lo = supply(bid, price - PRICE_EPS)[0]
    hi = supply(bid, price + PRICE_EPS)[1]
    assert lo - eps <= q <= hi + eps, (bid, q, price, lo, hi)


def assert_uniform_kkt(bids: list[Bid], community: CommunityTerms, res: ClearingResult) -> None:
    eps = 1e-8 * scale_of(bids)
    q = res.awards
    assert abs(sum(q.values()) + res.grid_import - res.grid_export) <= eps
    assert res.grid_import >= 0 and res.grid_export >= 0
    assert res.grid_import * res.grid_export == 0
    if res.price is None:
        return
    for bid in bids:
        assert_on_supply(bid, q[bid.meter], res.price, eps)
    _assert_grid_side(res.grid_import, community.import_price, community.import_capacity, res.price, eps, 1)
    _assert_grid_side(res.grid_export, community.export_price, community.export_capacity, res.price, eps, -1)
    assert abs(sum(res.member_costs.values()) - res.community_cost) <= eps


def _assert_grid_side(
    flow: float, grid_price: float | None, cap: float | None, price: float, eps: float, sign: int
) -> None:
    """Import (sign 1) is used only if price >= import price, and is at capacity above it."""
    if grid_price is None:
        assert flow <= eps
        return
    if flow > eps:
        assert sign * (price - grid_price) >= -PRICE_EPS
    if cap is None or flow < cap - eps:
        assert sign * (price - grid_price) <= PRICE_EPS


def assert_matches_reference(
    bids: list[Bid],
    res: ClearingResult,
    ref: Reference,
    unique_awards: bool,
    polished: Callable[[], Reference] | None = None,
) -> None:
    """Objective, price (the reference's dual is one of the clearing prices) and, where they
    are unique, awards agree. ``polished`` re-solves with OSQP's polish, whose active-set
    solution is exact where an interior point stops ~1e-6 short (an optimum at a kink)."""
    scale = scale_of(bids)
    assert close(res.objective, ref.objective, scale), (res.objective, ref.objective)
    lo, hi = res.price_interval or (-np.inf, np.inf)

    def price_ok(r: Reference) -> bool:
        p = r.price
        return p is None or lo - REL * (1 + abs(p)) <= p <= hi + REL * (1 + abs(p))

    def awards_ok(r: Reference) -> bool:
        return not unique_awards or bool(np.all(np.abs(res.q - r.q) <= REL * scale))

    if not (price_ok(ref) and awards_ok(ref)) and polished is not None:
        ref = polished()
    assert price_ok(ref), (ref.price, res.price_interval)
    assert awards_ok(ref), (res.q, ref.q)


def assert_p2p_kkt(
    bids: list[Bid],
    community: CommunityTerms,
    res: ClearingResult,
    positions: np.ndarray,
    prefs: np.ndarray,
    pairs: list[tuple[int, int]],
    grid_distance: float,
) -> None:
    """Optimality certificate of a p2p result: members on their supply at their own price,
    traded links tight, untraded links unprofitable, grid links priced by the tariff."""
    eps = 1e-7 * scale_of(bids)
    index = {b.meter: i for i, b in enumerate(bids)}
    pi = np.array([res.member_prices[b.meter] for b in bids]) if bids else np.zeros(0)
    q = np.array([res.awards[b.meter] for b in bids])
    assert abs(q.sum() + res.grid_import - res.grid_export) <= eps
    flows = np.zeros(len(bids))
    for t in res.trades:
        assert t.quantity > 0
        if t.seller in index:
            flows[index[t.seller]] += t.quantity
        if t.buyer in index:
            flows[index[t.buyer]] -= t.quantity
    assert np.allclose(flows, q, atol=eps)
    for i, bid in enumerate(bids):
        assert_on_supply(bid, q[i], pi[i], eps)
    gamma = {p: float(np.linalg.norm(positions[p[0]] - positions[p[1]])) for p in pairs}
    for t in res.trades:
        if t.seller in index and t.buyer in index:
            s, b = index[t.seller], index[t.buyer]
            g = gamma[(min(s, b), max(s, b))]
            assert abs(t.price - (pi[s] + prefs[s] * g)) <= 1e-6
            assert abs(t.price - (pi[b] - prefs[b] * g)) <= 1e-6
    for (i, j), g in gamma.items():
        for s, b in ((i, j), (j, i)):
            if bids[s].q_max > 0 and bids[b].q_min < 0:  # s may sell to b: no gain left
                assert pi[b] - pi[s] <= (prefs[s] + prefs[b]) * g + 1e-6, (s, b)
    _assert_grid_links(bids, community, res, pi, prefs, grid_distance)


def _assert_grid_links(
    bids: list[Bid], community: CommunityTerms, res: ClearingResult, pi: np.ndarray,
    prefs: np.ndarray, g: float,
) -> None:
    buys = {t.buyer for t in res.trades if t.seller == "grid"}
    sells = {t.seller for t in res.trades if t.buyer == "grid"}
    for i, bid in enumerate(bids):
        if community.import_price is not None and community.import_capacity != 0 and bid.q_min < 0:
            ceiling = community.import_price + res.congestion_import
            value = pi[i] - prefs[i] * g  # what the member would pay the grid, net of its premium
            assert value <= ceiling + 1e-6
            if bid.meter in buys:
                assert value >= ceiling - 1e-6
        if community.export_price is not None and community.export_capacity != 0 and bid.q_max > 0:
            floor = community.export_price - res.congestion_export
            value = pi[i] + prefs[i] * g
            assert value >= floor - 1e-6
            if bid.meter in sells:
                assert value <= floor + 1e-6
