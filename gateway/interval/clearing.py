"""The bridge between the scheduler and the clearing engines of ``gateway.market``.

The wire speaks integers (Wh, micro-currency per kWh); the engines speak floats (kWh,
currency per kWh). Bids are converted on the way in; on the way out prices are rounded to
integers and awards back to whole Wh with the largest-remainder method, so rounded awards sum
to the rounded total and the same inputs give the same integers on every run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.config import MarketConfig

MICRO = 1_000_000


@dataclass(frozen=True)
class Bid:
    meter: str
    curve: list[tuple[int, int]]  # (q_wh, price micro/kWh), q > 0 sells


@dataclass
class Clearing:
    mech: str
    price: int  # micro-currency per kWh
    awards: dict[str, int]  # meter -> awarded net export Wh
    trades: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)
    community_cost: int = 0  # micro-currency
    bau_cost: int = 0

    @property
    def traded_wh(self) -> int:
        return sum(q for q in self.awards.values() if q > 0) - self.grid_export_wh

    @property
    def grid_import_wh(self) -> int:
        return max(0, -sum(self.awards.values()))

    @property
    def grid_export_wh(self) -> int:
        return max(0, sum(self.awards.values()))


ClearFn = Callable[[int, list[Bid], MarketConfig], Clearing]


def round_awards(awards: Mapping[str, float]) -> dict[str, int]:
    """kWh floats -> Wh integers whose sum is the rounded sum (largest remainder, ties by id)."""
    wh = {m: q * 1000.0 for m, q in awards.items()}
    floors = {m: math.floor(v) for m, v in wh.items()}
    target = round(sum(wh.values()))
    extra = target - sum(floors.values())
    order = sorted(wh, key=lambda m: (-(wh[m] - floors[m]), m))
    for m in order[:max(0, extra)]:
        floors[m] += 1
    return floors


def to_price(currency_per_kwh: float) -> int:
    return round(currency_per_kwh * MICRO)


def market_clear(iv: int, bids: list[Bid], market: MarketConfig) -> Clearing:
    """Clear with ``gateway.market`` (imported here: it pulls in numpy)."""
    from gateway import market as engine  # noqa: PLC0415 - heavy import, only when clearing

    return engine_clearing(engine, bids, market)


def engine_clearing(engine: Any, bids: list[Bid], market: MarketConfig) -> Clearing:
    from gateway.market.bids import Bid as EngineBid  # noqa: PLC0415
    from gateway.market.terms import CommunityTerms  # noqa: PLC0415

    capacity = None if market.capacity_wh is None else market.capacity_wh / 1000
    community = CommunityTerms(import_price=market.import_price / MICRO, export_price=market.export_price / MICRO,
                          import_capacity=capacity, export_capacity=capacity, allocation=market.allocation)
    engine_bids = [EngineBid.curve(b.meter, [(q / 1000, p / MICRO) for q, p in b.curve]) for b in bids]
    result = _clear(engine, engine_bids, community, market.mechanism)
    trades: dict[str, list[tuple[str, int, int]]] = {}
    for t in result.trades:
        q, price = round(t.quantity * 1000), to_price(t.price)
        trades.setdefault(t.seller, []).append((t.buyer, q, price))
        trades.setdefault(t.buyer, []).append((t.seller, -q, price))
    price = result.price if result.price is not None else 0.0
    bau = result.bau_cost if result.bau_cost is not None else 0.0
    return Clearing(market.mechanism, to_price(price), round_awards(result.awards), trades,
                    round(result.community_cost * MICRO), round(bau * MICRO))


def _clear(engine: Any, bids: list[Any], community: Any, mechanism: str) -> Any:
    # The engine's one entry point; until it is exported, the uniform engine directly.
    if hasattr(engine, "clear"):
        return engine.clear(bids, community, mechanism=mechanism)
    if mechanism != "uniform":
        raise RuntimeError(f"gateway.market has no {mechanism!r} engine yet")
    from gateway.market.bids import BidBook  # noqa: PLC0415
    from gateway.market.uniform import clear_uniform  # noqa: PLC0415

    return clear_uniform(BidBook.from_bids(bids), community)
