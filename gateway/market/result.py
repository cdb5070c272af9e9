"""What a clearing returns: awards, prices, trades, costs, and the BAU baseline beside them."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Trade:
    """``quantity`` kWh (> 0) sold by ``seller`` to ``buyer`` at ``price`` per kWh."""

    seller: str
    buyer: str
    quantity: float
    price: float


@dataclass(frozen=True)
class Convergence:
    """How a distributed solver stopped: residuals (kWh and currency/kWh) against its targets."""

    iterations: int
    converged: bool
    primal_residual: float
    dual_residual: float
    rho: float


@dataclass(frozen=True, eq=False)
class ClearingResult:
    """One interval's clearing. Arrays are in ``meters`` order; the dict views are built on use.

    objective      sum of member costs C_n(q_n) (as `bids` defines them) + grid bill
                   (+ preference terms for p2p)
    community_cost sum of member costs + grid bill = sum of ``member_costs`` (no preferences)
    bau_cost       sum of members' costs alone with the grid; None if undefined (islanded)
    price          uniform: the community price; under a sharing rule (``equal``,
                   ``proportional``) the grid's marginal price lambda of the equilibrium, of
                   which member n sees its share: ``member_price`` = s_n lambda, the shares s_n
                   in ``extra["shares"]`` (`allocation`)
    """

    mechanism: str
    meters: tuple[str, ...]
    q: FloatArray
    price: float | None
    price_interval: tuple[float, float] | None
    objective: float
    grid_import: float
    grid_export: float
    community_cost: float
    member_cost: FloatArray
    member_payment: FloatArray
    bau_q: FloatArray | None
    bau_member_cost: FloatArray | None
    allocation: str
    trades: tuple[Trade, ...] = ()
    member_price: FloatArray | None = None
    congestion_import: float = 0.0  # shadow price of the import capacity (price - import_price)
    congestion_export: float = 0.0  # shadow price of the export capacity (export_price - price)
    preference_cost: float = 0.0
    convergence: Convergence | None = None  # set by the distributed solvers
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def awards(self) -> dict[str, float]:
        return dict(zip(self.meters, self.q.tolist()))

    @property
    def member_costs(self) -> dict[str, float]:
        return dict(zip(self.meters, self.member_cost.tolist()))

    @property
    def payments(self) -> dict[str, float]:
        return dict(zip(self.meters, self.member_payment.tolist()))

    @property
    def bau_cost(self) -> float | None:
        return None if self.bau_member_cost is None else float(self.bau_member_cost.sum())

    @property
    def bau_costs(self) -> dict[str, float] | None:
        if self.bau_member_cost is None:
            return None
        return dict(zip(self.meters, self.bau_member_cost.tolist()))

    @property
    def savings(self) -> float | None:
        bau = self.bau_cost
        return None if bau is None else bau - self.community_cost

    @property
    def member_prices(self) -> dict[str, float] | None:
        if self.member_price is None:
            return None
        return dict(zip(self.meters, self.member_price.tolist()))

    def to_json(self) -> dict[str, Any]:
        """The machine-readable result (``tmeter clear --json``); infinities become null."""
        out: dict[str, Any] = {
            "mechanism": self.mechanism,
            "price": self.price,
            "price_interval": _pair(self.price_interval),
            "awards": self.awards,
            "objective": self.objective,
            "grid_import": self.grid_import,
            "grid_export": self.grid_export,
            "bau_cost": self.bau_cost,
            "community_cost": self.community_cost,
            "savings": self.savings,
            "allocation": self.allocation,
            "member_costs": self.member_costs,
            "payments": self.payments,
            "bau_awards": None if self.bau_q is None else dict(zip(self.meters, self.bau_q.tolist())),
            "congestion": {"import": self.congestion_import, "export": self.congestion_export},
        }
        if self.mechanism == "p2p":
            out["trades"] = [
                {"from": t.seller, "to": t.buyer, "quantity": t.quantity, "price": t.price}
                for t in self.trades
            ]
            out["member_prices"] = self.member_prices
            out["preference_cost"] = self.preference_cost
        if self.convergence is not None:
            out["convergence"] = dataclasses.asdict(self.convergence)
        out.update(self.extra)
        return out


def _pair(interval: tuple[float, float] | None) -> list[float | None] | None:
    if interval is None:
        return None
    return [v if math.isfinite(v) else None for v in interval]
