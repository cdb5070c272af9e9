"""Market clearing for the energy collective (docs/architecture.md §7): exact, verified, fast.

The gateway's API, one interval at a time (energy in kWh per interval, prices per kWh)::

    from gateway.market import Bid, BidBook, CommunityTerms, P2PParams, clear, parse_bid_file

    bids = [Bid.quadratic("m1", a=4.0, b=0.13, q_min=-2.0, q_max=0.0),
            Bid.curve("m2", [(-1.0, 0.05), (0.0, 0.05), (0.0, 0.10), (3.0, 0.20)])]
    community = CommunityTerms(import_price=0.30, export_price=0.08, allocation="equal")
    result = clear(bids, community)                          # mechanism 1
    result = clear(bids, community, mechanism="p2p",
                   p2p=P2PParams(k=10, positions={...}, preferences={...}))
    result.price, result.awards, result.trades, result.objective, result.grid_import,
    result.grid_export, result.bau_cost, result.community_cost, result.savings,
    result.member_costs, result.payments, result.to_json()

Signatures:

- ``clear(bids: BidBook | Iterable[Bid], community: CommunityTerms, mechanism: str = "uniform",
  p2p: P2PParams | None = None, solver: str = "exact") -> ClearingResult``; mechanism
  ``"uniform"`` (one community price, `uniform`) or ``"p2p"`` (bilateral trades with product
  differentiation, `p2p`); solver ``"exact"`` or ``"distributed"`` (ADMM, `admm`; consensus +
  innovation, `consensus`; the result then carries ``.convergence``).
- ``parse_bid_file(data: dict) -> BidFile`` with ``.community``, ``.bids``, ``.book``, ``.p2p``:
  the JSON of ``tmeter clear`` (`bidfile`).
- ``Bid.curve(meter, points, cost_at_q_min=None)``, ``Bid.quadratic(meter, a, b, q_min, q_max,
  d=0.0)`` (cost exactly a q^2/2 + b q + d; how a curve's cost is defined: `bids`),
  ``Bid.fixed(meter, q)``; ``BidBook.from_bids(bids)`` and, for many meters at once,
  ``BidBook.from_points(meters, q, p, cost_at_q_min=None)`` /
  ``BidBook.from_quadratic(meters, a, b, q_min, q_max, d=0.0)``.
- ``CommunityTerms(import_price, export_price, import_capacity=None, export_capacity=None,
  allocation="marginal" | "equal" | "proportional")`` ("none" = "marginal"); a None price = no
  such side of the grid. Under ``equal`` / ``proportional`` each member carries its share of
  the grid bill in its own problem and the dispatch is that equilibrium (`allocation`); the
  mechanism ``p2p`` ignores the rule. A billing period's cooperative allocation that leaves no
  member worse off than alone: `cooperative`.
- Errors: ``MarketInputError`` (bad community or p2p parameters), its subclass ``BidError``
  (``.meter``, ``.reason``, ``.index``: one bid is invalid) and ``InfeasibleMarket`` (nothing
  balances: e.g. an islanded community short of supply).

Determinism where the optimum is not unique is documented in `uniform` (price in the middle of
the clearing interval; ties shared in proportion to each member's indifferent range; members
before the grid), `p2p` and `duals` (node prices in the middle of the certifying set).

This module imports numpy only; scipy (p2p only) is imported when first needed.
"""

from __future__ import annotations

from collections.abc import Iterable

from .bidfile import BidFile, parse_bid_file
from .bids import GRID, Bid, BidBook
from .terms import ALLOCATIONS, RULES, CommunityTerms
from .errors import BidError, InfeasibleMarket, MarketInputError
from .network import P2PParams
from .result import ClearingResult, Convergence, Trade

MECHANISMS = ("uniform", "p2p")
SOLVERS = ("exact", "distributed")

__all__ = [
    "ALLOCATIONS", "GRID", "RULES", "MECHANISMS", "SOLVERS", "Bid", "BidBook", "BidError", "BidFile",
    "ClearingResult", "CommunityTerms", "Convergence", "InfeasibleMarket", "MarketInputError",
    "P2PParams", "Trade", "clear", "parse_bid_file",
]


def clear(
    bids: BidBook | Iterable[Bid],
    community: CommunityTerms,
    mechanism: str = "uniform",
    p2p: P2PParams | None = None,
    solver: str = "exact",
) -> ClearingResult:
    """Clear one interval (see the module docstring)."""
    book = bids if isinstance(bids, BidBook) else BidBook.from_bids(bids)
    if mechanism not in MECHANISMS:
        raise MarketInputError(f"mechanism must be one of {', '.join(MECHANISMS)}, got {mechanism!r}")
    if solver not in SOLVERS:
        raise MarketInputError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if mechanism == "uniform":
        if solver == "exact":
            from .allocation import clear_allocated

            return clear_allocated(book, community)
        from .admm import admm_uniform

        return admm_uniform(book, community)
    if solver == "exact":
        from .p2p import clear_p2p

        return clear_p2p(book, community, p2p)
    from .consensus import consensus_p2p

    return consensus_p2p(book, community, p2p)
