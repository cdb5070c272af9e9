"""The peer-to-peer trading graph (mechanism 2, `p2p`): members, the grid's import and export
nodes, and one edge per pair allowed to trade, with its distance, preference weight and flow
bounds. Shared by the exact engine (`p2p`), its price selection (`duals`) and the distributed
solver (`consensus`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .bids import GRID, BidBook
from .errors import BidError, MarketInputError
from .graph import member_pairs
from .terms import CommunityTerms

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


UNPLACED = ("error", "grid")


@dataclass(frozen=True)
class P2PParams:
    """k nearest peers (None: every pair), positions (x, y) and preferences c_n per meter,
    the grid's distance from every member (None: as far as the farthest trading pair).
    ``unplaced``: what a member missing from ``positions`` (when positions are given, or a
    k-nearest graph needs them) does: ``"error"`` (BidError), or ``"grid"``: it has no peers
    and trades with the grid only (the daemon's choice for meters provisioned without a
    position: they stay in the market at the tariff instead of failing everyone's clearing)."""

    k: int | None = None
    positions: Mapping[str, Sequence[float]] | None = None
    preferences: Mapping[str, float] | None = None
    grid_distance: float | None = None
    unplaced: str = "error"

    def __post_init__(self) -> None:
        if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1):
            raise MarketInputError(f"p2p: k must be a positive integer or null, got {self.k!r}")
        for meter, pos in (self.positions or {}).items():
            if not (isinstance(pos, Sequence) and len(pos) == 2 and all(_number(v) for v in pos)):
                raise BidError(meter, f"p2p: position must be two finite numbers [x, y], got {pos!r}")
        for meter, pref in (self.preferences or {}).items():
            if not (_number(pref) and pref >= 0):
                raise BidError(meter, f"p2p: preference must be a finite number >= 0, got {pref!r}")
        if self.grid_distance is not None and not (_number(self.grid_distance) and self.grid_distance >= 0):
            raise MarketInputError("p2p: grid_distance must be a finite number >= 0 or null")
        if self.unplaced not in UNPLACED:
            raise MarketInputError(f"p2p: unplaced must be one of {', '.join(UNPLACED)}, got {self.unplaced!r}")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, eq=False)
class Network:
    """The trading graph: nodes = members, then the grid's import and export nodes (if any).
    Edge e carries t_e from tail to head (t_e < 0: head sells to tail), lower <= t_e <= upper."""

    nodes: BidBook
    n_members: int
    import_node: int | None
    export_node: int | None
    tail: IntArray
    head: IntArray
    gamma: FloatArray
    pref: FloatArray
    lower: FloatArray
    upper: FloatArray

    @property
    def weight(self) -> FloatArray:
        """Preference cost per kWh of each edge: both sides' premiums."""
        return (self.pref[self.tail] + self.pref[self.head]) * self.gamma

    def is_grid(self, node: IntArray) -> npt.NDArray[np.bool_]:
        return node >= self.n_members

    def net(self, t: FloatArray) -> FloatArray:
        """Every node's net export for edge flows t."""
        n = len(self.nodes)
        return np.bincount(self.tail, t, n) - np.bincount(self.head, t, n)


def build_network(book: BidBook, community: CommunityTerms, params: P2PParams) -> Network:
    nodes, import_node, export_node = _with_grid_nodes(book, community)
    n = len(book)
    i, j, dist = _pairs(book, params)
    grid_gamma = params.grid_distance
    if grid_gamma is None:
        grid_gamma = float(dist.max()) if len(dist) else 0.0
    members = np.arange(n, dtype=np.int64)
    grid = [g for g in (import_node, export_node) if g is not None]
    tail = np.concatenate([i] + [members] * len(grid))
    head = np.concatenate([j] + [np.full(n, g, dtype=np.int64) for g in grid])
    gamma = np.concatenate([dist] + [np.full(n, grid_gamma)] * len(grid))
    pref = np.zeros(len(nodes))
    for row, meter in enumerate(book.meters):
        pref[row] = float((params.preferences or {}).get(meter, 0.0))
    lower, upper = _edge_bounds(nodes, tail, head)
    keep = (upper > 0) | (lower < 0)
    return Network(
        nodes, n, import_node, export_node,
        tail[keep], head[keep], gamma[keep], pref, lower[keep], upper[keep],
    )


def _with_grid_nodes(book: BidBook, community: CommunityTerms) -> tuple[BidBook, int | None, int | None]:
    imp_cap, exp_cap = community.capacities(book)
    nodes, import_node, export_node = book, None, None
    if community.import_price is not None:
        price = community.import_price
        nodes = nodes.concat(BidBook._from_valid((GRID,), np.array([[0.0, imp_cap]]), np.array([[price, price]])))
        import_node = len(nodes) - 1
    if community.export_price is not None:
        price = community.export_price
        nodes = nodes.concat(BidBook._from_valid((GRID,), np.array([[-exp_cap, 0.0]]), np.array([[price, price]])))
        export_node = len(nodes) - 1
    return nodes, import_node, export_node


def _pairs(book: BidBook, params: P2PParams) -> tuple[IntArray, IntArray, FloatArray]:
    """The member pairs that may trade, with their distances, among the placed members."""
    placed, pos = _positions(book, params)
    i, j, dist = member_pairs(pos, params.k)
    return placed[i], placed[j], dist


def _positions(book: BidBook, params: P2PParams) -> tuple[IntArray, FloatArray]:
    """Rows of the members on the graph, and their positions."""
    rows = np.arange(len(book), dtype=np.int64)
    if params.positions is None:
        if params.unplaced == "grid":
            return rows[:0], np.zeros((0, 2))
        if params.k is not None and len(book) > params.k + 1:
            raise MarketInputError("p2p: a k-nearest trading graph needs positions for the members")
        return rows, np.zeros((len(book), 2))
    missing = [row for row, meter in enumerate(book.meters) if meter not in params.positions]
    if missing and params.unplaced == "error":
        meter = book.meters[missing[0]]
        raise BidError(meter, "p2p: no position for this meter (positions are given for others)", missing[0])
    placed = np.setdiff1d(rows, np.asarray(missing, dtype=np.int64))
    pos = np.array([params.positions[book.meters[row]] for row in placed], dtype=float).reshape(-1, 2)
    return placed, pos


def _edge_bounds(nodes: BidBook, tail: IntArray, head: IntArray) -> tuple[FloatArray, FloatArray]:
    """Sign constraints and a bound no optimal flow needs to exceed on each edge."""
    sends = nodes.q_max > 0  # can export at all
    receives = nodes.q_min < 0  # can import at all
    pure = ~(sends & receives)
    # A prosumer may pass energy on; an acyclic optimal flow never moves more than all supply.
    # One kWh of margin keeps every bound slack at the optimum, so none of them has a price.
    total = float(np.maximum(nodes.q_max, 0).sum()) + 1.0
    cap = np.where(pure, np.maximum(nodes.q_max, -nodes.q_min) + 1.0, total)
    bound = np.minimum(cap[tail], cap[head])
    upper = np.where(sends[tail] & receives[head], bound, 0.0)
    lower = np.where(sends[head] & receives[tail], -bound, 0.0)
    return lower, upper


# --- the exact solution ---------------------------------------------------------------------
