"""The energy collective against business as usual on simulated households, interval by
interval (the comparison of Moret & Pinson 2019, "Energy collectives"), behind ``tmeter study
collective``.

Every household (``sim_hardware.simulator.profiles``) bids, each 15-minute interval, from
its metered load and PV energy: its PV at marginal cost 0 (curtailed only at negative prices), its
inflexible load (a share of the load) at any price, and a flexible share of its load that it
gives up if the price exceeds its value, a ramp from v_lo to v_hi per kWh. The collective is
cleared by mechanism 1 under each allocation rule; business as usual (BAU) is every household
alone with the grid. Costs are money paid plus the value of flexible load given up, so that a
household that changes nothing pays exactly its electricity bill.

Because the allocation rules only move money between members, the community's total cost is the
same under all of them; what differs is who gains, which the table shows (members better off
than BAU, the largest individual loss).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.market import Bid, BidBook, CommunityTerms, clear
from gateway.market.result import ClearingResult
from gateway.market.terms import ALLOCATIONS

FloatArray = npt.NDArray[np.float64]
INTERVAL_S = 900


@dataclass(frozen=True)
class Household:
    """A profile and the preferences the household bids with."""

    meter: str
    profile: Any  # sim_hardware.simulator.profiles.Profile (imported only when a study runs)
    flexible_share: float
    value_low: float
    value_high: float

    @classmethod
    def make(cls, index: int, seed: int, source: str) -> Household:
        from sim_hardware.simulator.profiles import household_profile

        rng = np.random.default_rng([seed, index, 7])
        low = float(rng.uniform(0.10, 0.22))
        return cls(
            meter=f"h{index:03d}",
            profile=household_profile(index, seed=seed, source=source),
            flexible_share=float(rng.uniform(0.1, 0.3)),
            value_low=low,
            value_high=low + float(rng.uniform(0.05, 0.2)),
        )

    def curve(self, t0: int) -> list[tuple[float, float]]:
        """The bid for [t0, t0 + INTERVAL_S): PV at 0, then flexible load by its value."""
        load_wh, pv_wh = self.profile.interval_energy_wh(t0, t0 + INTERVAL_S)
        load, pv = load_wh / 1000.0, pv_wh / 1000.0
        shed = self.flexible_share * load
        return [(-load, 0.0), (pv - load, 0.0), (pv - load, self.value_low),
                (pv - load + shed, self.value_high)]


@dataclass
class Study:
    """Per-interval series and per-rule totals."""

    times: list[int] = field(default_factory=list)
    price: list[float] = field(default_factory=list)
    sold: list[float] = field(default_factory=list)
    bought: list[float] = field(default_factory=list)
    grid_import: list[float] = field(default_factory=list)
    grid_export: list[float] = field(default_factory=list)
    bau_cost: FloatArray | None = None  # per member, summed over intervals
    cost: dict[str, FloatArray] = field(default_factory=dict)  # rule -> per member
    import_price: float = 0.0
    export_price: float = 0.0
    matched_kwh: float = 0.0


def simulate(households: list[Household], start: int, days: int, imp: float, exp: float) -> Study:
    base = CommunityTerms(import_price=imp, export_price=exp)
    study = Study(import_price=imp, export_price=exp)
    n = len(households)
    study.bau_cost = np.zeros(n)
    study.cost = {rule: np.zeros(n) for rule in ALLOCATIONS}
    for t0 in range(start, start + days * 86400, INTERVAL_S):
        curves = [h.curve(t0) for h in households]
        book = BidBook.from_bids(Bid.curve(h.meter, c) for h, c in zip(households, curves))
        # Costs relative to doing nothing (all PV used, all load served): money + value shed.
        offset = book.cost(np.array([c[1][0] for c in curves]))
        for rule in ALLOCATIONS:
            res = clear(book, dataclasses.replace(base, allocation=rule))
            study.cost[rule] += res.member_cost - offset
        study.bau_cost += res.bau_member_cost - offset
        _record(study, t0, res)
    return study


def _record(study: Study, t0: int, res: ClearingResult) -> None:
    q = res.q
    study.times.append(t0)
    study.price.append(float(res.price))
    study.sold.append(float(np.maximum(q, 0).sum()))
    study.bought.append(float(np.maximum(-q, 0).sum()))
    study.grid_import.append(res.grid_import)
    study.grid_export.append(res.grid_export)
    study.matched_kwh += min(study.sold[-1], study.bought[-1])


def plot_study(study: Study, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    hours = (np.array(study.times) - study.times[0]) / 3600.0
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    top.step(hours, study.price, where="post", label="community price")
    top.axhline(study.import_price, color="tab:red", ls="--", label="import price")
    top.axhline(study.export_price, color="tab:green", ls="--", label="export price")
    top.set_ylabel("price per kWh")
    top.legend(loc="upper right")
    bottom.step(hours, study.sold, where="post", label="members selling")
    bottom.step(hours, -np.array(study.bought), where="post", label="members buying")
    bottom.step(hours, study.grid_import, where="post", label="grid import")
    bottom.step(hours, -np.array(study.grid_export), where="post", label="grid export")
    bottom.axhline(0, color="black", lw=0.5)
    bottom.set_xlabel("hours from start")
    bottom.set_ylabel("kWh per interval")
    bottom.legend(loc="upper right")
    fig.suptitle("Energy collective: clearing price and net positions")
    fig.tight_layout()
    path = out / "study_collective.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
