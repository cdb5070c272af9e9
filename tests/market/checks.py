"""Optimality checks shared by the market tests: KKT conditions and comparisons with the reference."""

from __future__ import annotations

import numpy as np

from gateway.market.bids import Bid
from gateway.market.community import Community
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


def assert_uniform_kkt(bids: list[Bid], community: Community, res: ClearingResult) -> None:
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
    bids: list[Bid], res: ClearingResult, ref: Reference, unique_awards: bool
) -> None:
    scale = scale_of(bids)
    assert close(res.objective, ref.objective, scale), (res.objective, ref.objective)
    if ref.price is not None:
        lo, hi = res.price_interval or (-np.inf, np.inf)
        assert lo - 1e-6 <= ref.price <= hi + 1e-6, (ref.price, res.price_interval)
    if unique_awards:
        for i, b in enumerate(bids):
            assert abs(res.q[i] - ref.q[i]) <= 1e-6 * scale, (b.meter, res.q[i], ref.q[i])
