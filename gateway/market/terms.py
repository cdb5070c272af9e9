"""The terms a community trades under (grid prices, capacities, cost allocation), and the
grid as one more bid.

The grid sells any amount at the import price and buys any amount at the export (feed-in)
price, optionally up to a transformer capacity each way; a null price means that side does not
exist (both null: an islanded community). Seen from the community, that is exactly a bid curve
of the grid's net export into the community g (g > 0 the community imports):

    [(-E, export_price), (0, export_price), (0, import_price), (I, import_price)]

non-decreasing as long as export_price <= import_price, which is required (a feed-in price
above the retail price would let the community buy and resell without limit). Its cost
integral is the community's grid bill, import_price * import - export_price * export. Treating
the grid as a bid lets every engine handle it with the members' code; an unlimited side gets a
finite capacity one kWh above anything the members could ever need, so it never binds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .bids import GRID, BidBook
from .errors import MarketInputError

# How the grid bill is shared, and so what each member's own problem contains (`allocation`):
# "marginal" the welfare optimum priced at the community's marginal price; "equal" and
# "proportional" the equilibrium with each member carrying its share of the grid bill.
# "none" is the old name of "marginal", still accepted because deployed gateway.toml files and
# bid files say it.
RULES = ("marginal", "equal", "proportional")
ALLOCATIONS = RULES + ("none",)
ALIASES = {"none": "marginal"}


@dataclass(frozen=True)
class CommunityTerms:
    """Grid prices (currency/kWh, None = no such side), capacities (kWh per interval,
    None = unlimited) and the rule that shares the grid bill among members."""

    import_price: float | None = None
    export_price: float | None = None
    import_capacity: float | None = None
    export_capacity: float | None = None
    allocation: str = "marginal"

    def __post_init__(self) -> None:
        for name in ("import_price", "export_price", "import_capacity", "export_capacity"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not _finite(value)):
                raise MarketInputError(f"community: {name} must be a finite number or null")
        for name in ("import_capacity", "export_capacity"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise MarketInputError(f"community: {name} must be >= 0, got {value:g}")
        if self.import_price is not None and self.export_price is not None:
            if self.export_price > self.import_price:
                raise MarketInputError(
                    f"community: export_price ({self.export_price:g}) above import_price "
                    f"({self.import_price:g}) would allow unbounded arbitrage through the grid"
                )
        if self.allocation not in ALLOCATIONS:
            raise MarketInputError(
                f"community: allocation must be one of {', '.join(ALLOCATIONS)}, "
                f"got {self.allocation!r}"
            )

    @property
    def rule(self) -> str:
        """The allocation rule under its canonical name ("none" is "marginal")."""
        return ALIASES.get(self.allocation, self.allocation)

    @property
    def islanded(self) -> bool:
        return self.import_price is None and self.export_price is None

    def capacities(self, book: BidBook) -> tuple[float, float]:
        """(import, export) limits, an unlimited side replaced by more than members can use."""
        need_import = float(np.maximum(-book.q_min, 0).sum()) + 1.0
        need_export = float(np.maximum(book.q_max, 0).sum()) + 1.0
        imp = _limit(self.import_price, self.import_capacity, need_import)
        exp = _limit(self.export_price, self.export_capacity, need_export)
        return imp, exp

    def grid_bid(self, book: BidBook) -> BidBook | None:
        """The grid as a one-row book named GRID (None when islanded)."""
        if self.islanded:
            return None
        imp, exp = self.capacities(book)
        points: list[tuple[float, float]] = []
        if self.export_price is not None:
            points += [(-exp, self.export_price), (0.0, self.export_price)]
        if self.import_price is not None:
            points += [(0.0, self.import_price), (imp, self.import_price)]
        q = np.array([[pt[0] for pt in points]])
        p = np.array([[pt[1] for pt in points]])
        return BidBook._from_valid((GRID,), q, p)

    def with_grid(self, book: BidBook) -> BidBook:
        """Members then the grid (last row) when there is one."""
        grid = self.grid_bid(book)
        return book if grid is None else book.concat(grid)

    def grid_bill(self, grid_import: float, grid_export: float) -> float:
        bill = 0.0
        if grid_import and self.import_price is not None:
            bill += self.import_price * grid_import
        if grid_export and self.export_price is not None:
            bill -= self.export_price * grid_export
        return bill


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _limit(price: float | None, capacity: float | None, need: float) -> float:
    if price is None:
        return 0.0
    return need if capacity is None else min(capacity, need)
