"""The bid file: one interval's bids and community parameters as JSON (``tmeter clear``).

    {"community": {"import_price": 0.30, "export_price": 0.08,
                   "import_capacity": null, "export_capacity": null, "allocation": "none"},
     "bids": [{"meter": "m1", "quadratic": {"a": 4.0, "b": 0.13, "q_min": -2.0, "q_max": 0.0,
                                            "d": 0.0}},
              {"meter": "m2", "curve": [[-1.0, 0.05], [0.0, 0.05], [0.0, 0.10], [3.0, 0.20]],
               "cost_at_q_min": null}],
     "p2p": {"k": 10, "positions": {"m1": [0, 0]}, "preferences": {"m1": 0.01}}}

Energy in kWh per interval, prices per kWh, floats. A quadratic bid costs a q^2/2 + b q + d
on [q_min, q_max] (``d`` optional, default 0); a curve bid costs the integral of its price
from 0, or from q_min plus ``cost_at_q_min`` when given (optional; see `bids`). Keys not
listed here are ignored (the format may grow). Every error names what is wrong and, for a
bid, its index and meter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .bids import Bid, BidBook, check_meter_ids
from .terms import CommunityTerms
from .errors import BidError, MarketInputError
from .network import P2PParams


@dataclass(frozen=True)
class BidFile:
    community: CommunityTerms
    bids: tuple[Bid, ...]
    p2p: P2PParams | None

    @property
    def book(self) -> BidBook:
        return BidBook.from_bids(self.bids)


def parse_bid_file(data: Any) -> BidFile:
    """Validate a decoded bid file; raises `MarketInputError` (or its `BidError`)."""
    if not isinstance(data, Mapping):
        raise MarketInputError("the bid file must be a JSON object with 'community' and 'bids'")
    community = _community(data.get("community"))
    raw_bids = data.get("bids")
    if not isinstance(raw_bids, list):
        raise MarketInputError("'bids' must be a list of bids")
    bids = tuple(_bid(i, raw) for i, raw in enumerate(raw_bids))
    check_meter_ids([b.meter for b in bids])
    return BidFile(community, bids, _p2p(data.get("p2p")))


def _community(raw: Any) -> CommunityTerms:
    if not isinstance(raw, Mapping):
        raise MarketInputError("'community' must be an object (import_price, export_price, ...)")
    return CommunityTerms(
        import_price=raw.get("import_price"),
        export_price=raw.get("export_price"),
        import_capacity=raw.get("import_capacity"),
        export_capacity=raw.get("export_capacity"),
        allocation=raw.get("allocation", "none"),
    )


def _bid(index: int, raw: Any) -> Bid:
    if not isinstance(raw, Mapping):
        raise BidError(f"#{index}", "a bid must be an object with 'meter' and 'curve' or 'quadratic'", index)
    meter = raw.get("meter")
    if not isinstance(meter, str) or not meter:
        raise BidError(str(meter), "'meter' must be a non-empty string", index)
    kinds = [k for k in ("curve", "quadratic") if k in raw]
    if len(kinds) != 1:
        raise BidError(meter, "a bid needs exactly one of 'curve' or 'quadratic'", index)
    try:
        if kinds == ["curve"]:
            return _curve(meter, raw["curve"], _optional_number(meter, raw, "cost_at_q_min"))
        return _quadratic(meter, raw["quadratic"])
    except BidError as exc:
        raise BidError(meter, exc.reason, index) from None


def _optional_number(meter: str, raw: Mapping, key: str) -> float | None:
    """``raw[key]`` as a float; absent or null gives None."""
    value = raw.get(key)
    if value is None:
        return None
    if not _is_number(value):
        raise BidError(meter, f"{key!r} must be a number, got {value!r}")
    return float(value)


def _curve(meter: str, raw: Any, cost_at_q_min: float | None = None) -> Bid:
    if not isinstance(raw, list) or not raw:
        raise BidError(meter, "'curve' must be a non-empty list of [q, price] points")
    points = []
    for j, point in enumerate(raw):
        if not (isinstance(point, list) and len(point) == 2 and all(_is_number(v) for v in point)):
            raise BidError(meter, f"curve point {j} must be [q, price] with two numbers, got {point!r}")
        points.append((float(point[0]), float(point[1])))
    return Bid.curve(meter, points, cost_at_q_min)


def _quadratic(meter: str, raw: Any) -> Bid:
    if not isinstance(raw, Mapping):
        raise BidError(meter, "'quadratic' must be an object with a, b, q_min, q_max (and d)")
    values = {}
    for key in ("a", "b", "q_min", "q_max"):
        if not _is_number(raw.get(key)):
            raise BidError(meter, f"quadratic {key!r} must be a number, got {raw.get(key)!r}")
        values[key] = float(raw[key])
    d = raw.get("d", 0.0)
    if not _is_number(d):  # null is not a number here: d has a default, so omit it instead
        raise BidError(meter, f"quadratic 'd' must be a number, got {d!r}")
    return Bid.quadratic(meter, **values, d=float(d))


def _p2p(raw: Any) -> P2PParams | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise MarketInputError("'p2p' must be an object (k, positions, preferences)")
    for key in ("positions", "preferences"):
        if raw.get(key) is not None and not isinstance(raw[key], Mapping):
            raise MarketInputError(f"p2p: {key!r} must be an object keyed by meter")
    positions = raw.get("positions")
    return P2PParams(
        k=raw.get("k"),
        positions={m: tuple(p) if isinstance(p, list) else p for m, p in positions.items()}
        if positions is not None
        else None,
        preferences=raw.get("preferences"),
        grid_distance=raw.get("grid_distance"),
    )


def _is_number(value: Any) -> bool:
    """An int or float (NaN and infinities included: the curve checks reject them by name)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
