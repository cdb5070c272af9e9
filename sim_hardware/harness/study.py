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

The rules enter each member's own problem (`gateway.market.allocation`): ``marginal`` is the
welfare-optimal dispatch priced at the community's marginal price; under ``equal`` and
``proportional`` every member carries its share of the grid bill, sees only that share of the
grid's price, and the dispatch (and so the community's total) is that equilibrium. ``least-core``
keeps the welfare-optimal dispatch and shares the period's cost by the least core of the
coalition game (`gateway.market.cooperative`): nobody pays more over the period than alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.market import Bid, BidBook, CommunityTerms, clear
from gateway.market.cooperative import LeastCore, cooperative_allocation
from gateway.market.result import ClearingResult
from gateway.market.terms import RULES

FloatArray = npt.NDArray[np.float64]
INTERVAL_S = 900
LEAST_CORE = "least-core"  # the cooperative rule of a billing period (the study's whole span)


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
    meters: tuple[str, ...] = ()
    bau_cost: FloatArray | None = None  # per member, summed over intervals
    cost: dict[str, FloatArray] = field(default_factory=dict)  # rule -> per member
    grid_kwh: dict[str, list[float]] = field(default_factory=dict)  # rule -> [import, export]
    max_dq: dict[str, float] = field(default_factory=dict)  # rule -> max |q - q_marginal|, kWh
    least_core: LeastCore | None = None
    import_price: float = 0.0
    export_price: float = 0.0
    matched_kwh: float = 0.0

    def saving(self, rule: str) -> FloatArray:
        """Each member's saving against alone under ``rule`` (negative: worse off)."""
        assert self.bau_cost is not None
        return self.bau_cost - self.cost[rule]


def simulate(
    households: list[Household], start: int, days: int, imp: float, exp: float,
    coalitions: int | None = None,
) -> Study:
    """Every rule on the same bids; ``coalitions`` random coalitions for the least core
    (default: as many as households, besides the singletons and every all-but-one)."""
    base = CommunityTerms(import_price=imp, export_price=exp)
    study = Study(meters=tuple(h.meter for h in households), import_price=imp, export_price=exp)
    n = len(households)
    study.bau_cost = np.zeros(n)
    study.cost = {rule: np.zeros(n) for rule in RULES}
    study.grid_kwh = {rule: [0.0, 0.0] for rule in RULES}
    study.max_dq = {rule: 0.0 for rule in RULES}
    books, offsets = [], np.zeros(n)
    for t0 in range(start, start + days * 86400, INTERVAL_S):
        curves = [h.curve(t0) for h in households]
        book = BidBook.from_bids(Bid.curve(h.meter, c) for h, c in zip(households, curves))
        # Costs relative to doing nothing (all PV used, all load served): money + value shed.
        offset = book.cost(np.array([c[1][0] for c in curves]))
        by_rule = {rule: clear(book, dataclasses.replace(base, allocation=rule)) for rule in RULES}
        for rule, res in by_rule.items():
            study.cost[rule] += res.member_cost - offset
            study.grid_kwh[rule][0] += res.grid_import
            study.grid_kwh[rule][1] += res.grid_export
            dq = float(np.abs(res.q - by_rule["marginal"].q).max(initial=0.0))
            study.max_dq[rule] = max(study.max_dq[rule], dq)
        marginal = by_rule["marginal"]
        study.bau_cost += marginal.bau_member_cost - offset
        _record(study, t0, marginal)
        books.append(book)
        offsets += offset
    if books:
        lc = cooperative_allocation(books, base, samples=coalitions)
        study.least_core = lc
        study.cost[LEAST_CORE] = lc.cost - offsets
        study.grid_kwh[LEAST_CORE] = list(study.grid_kwh["marginal"])
        study.max_dq[LEAST_CORE] = 0.0
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
