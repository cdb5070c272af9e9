"""The bridge between the scheduler and the clearing engines of ``gateway.market``.

The wire speaks integers (Wh, micro-currency per kWh); the engines speak floats (kWh,
currency per kWh). For the peer-to-peer market each bid carries its meter's provisioned place
(gateway/registry.py: position in km, preference c_n in micro-currency per kWh per km) and the
clearing runs on the k-nearest graph of ``[market.p2p] k``; a meter without a position has no
peers and trades with the grid only (``Clearing.unplaced`` names them).

Bids are converted on the way in; on the way out prices are rounded to integers and awards back
to whole Wh with the largest-remainder method, so rounded awards sum to the rounded total and
the same inputs give the same integers on every run. With trades (p2p)
each trade is rounded to whole Wh and a member's award is the sum of its trades, so every Wh
awarded is priced by a trade.
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
    position: tuple[float, float] | None = None  # km, as provisioned (p2p); None: none provisioned
    preference: int = 0  # c_n, micro-currency per kWh per km (p2p)


@dataclass
class Clearing:
    mech: str
    price: int  # micro-currency per kWh
    awards: dict[str, int]  # meter -> awarded net export Wh
    trades: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)
    community_cost: int = 0  # micro-currency
    bau_cost: int = 0
    unplaced: tuple[str, ...] = ()  # p2p: bidders without a position, cleared with the grid only
    # Uniform under a sharing rule (equal, proportional): the share of the grid bill each member's
    # own problem carried in the clearing, parts per million; settlement bills exactly that.
    shares: dict[str, int] = field(default_factory=dict)

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


def warm_up(market: MarketConfig) -> None:
    """Clear a tiny p2p market once, so the first interval's clearing does not pay for the
    engine's imports and first calls (scipy, the k-d tree: about 0.7 s, measured in the demo,
    longer than the gate budget of an accelerated run). Uniform needs numpy only: nothing to do."""
    if market.mechanism != "p2p":
        return
    bids = [Bid("a", [(0, 10_000), (1000, 10_000)], (0.0, 0.0), 1), Bid("b", [(-1000, 400_000), (0, 400_000)],
                                                                      (1.0, 0.0), 1), Bid("c", [(-500, 350_000)], (0.0, 1.0))]
    market_clear(0, bids, market.model_copy(update={"p2p": market.p2p.model_copy(update={"k": 1})}))


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
    p2p = p2p_params(bids, market) if market.mechanism == "p2p" else None
    result = _clear(engine, engine_bids, community, market.mechanism, p2p)
    trades = trade_lists(result.trades)
    awards = round_awards(result.awards)
    if trades:
        # A member's award is the sum of its trades in whole Wh, so settlement (which prices
        # each trade, and the rest at the clearing price: none in p2p) leaves no Wh unpriced.
        awards = {m: sum(q for _, q, _ in trades.get(m, ())) for m in awards}
    price = result.price if result.price is not None else 0.0
    bau = result.bau_cost if result.bau_cost is not None else 0.0
    unplaced = tuple(b.meter for b in bids if b.position is None) if p2p is not None else ()
    shares = {m: round(x * 1_000_000) for m, x in result.extra.get("shares", {}).items()}
    return Clearing(market.mechanism, to_price(price), awards, trades,
                    round(result.community_cost * MICRO), round(bau * MICRO), unplaced, shares)


def trade_lists(engine_trades: Any) -> dict[str, list[tuple[str, int, int]]]:
    """Each side's (peer, Wh, price) list, + sold; trades that round to 0 Wh are none."""
    trades: dict[str, list[tuple[str, int, int]]] = {}
    for t in engine_trades:
        q, price = round(t.quantity * 1000), to_price(t.price)
        if q == 0:
            continue
        trades.setdefault(t.seller, []).append((t.buyer, q, price))
        trades.setdefault(t.buyer, []).append((t.seller, -q, price))
    return trades


def p2p_params(bids: list[Bid], market: MarketConfig) -> Any:
    """The engine's P2PParams from the bidders' provisioned places: gamma_nm is the Euclidean
    distance in km, c_n in currency per kWh per km, each member's k nearest peers."""
    from gateway.market.network import P2PParams  # noqa: PLC0415

    return P2PParams(k=market.p2p.k, positions={b.meter: b.position for b in bids if b.position is not None},
                     preferences={b.meter: b.preference / MICRO for b in bids if b.preference},
                     grid_distance=market.p2p.grid_distance_km, unplaced="grid")


def _clear(engine: Any, bids: list[Any], community: Any, mechanism: str, p2p: Any = None) -> Any:
    # The engine's one entry point; until it is exported, the uniform engine directly.
    if hasattr(engine, "clear"):
        if p2p is not None:
            return engine.clear(bids, community, mechanism=mechanism, p2p=p2p)
        return engine.clear(bids, community, mechanism=mechanism)
    if mechanism != "uniform":
        raise RuntimeError(f"gateway.market has no {mechanism!r} engine yet")
    from gateway.market.bids import BidBook  # noqa: PLC0415
    from gateway.market.uniform import clear_uniform  # noqa: PLC0415

    return clear_uniform(BidBook.from_bids(bids), community)
