"""The battery agent (firmware/bidding.py) against its two references, on the same households
and days (issue 18 item 3):

- alone: each household by itself, its battery in self-consumption (sim_hardware/simulator/
  alone.py), paying the import price and earning the feed-in price on what its meter counts;
- agent: a real community run (sim_hardware.harness.community.run_scenario, firmware on CPython),
  the members' bills from the gateway's settlement (sim_hardware/harness/bills.py);
- optimum: perfect foresight of every household's load and PV over the whole period, one LP
  over all batteries (capacity, power, charge and discharge efficiency, initial and minimum SoC
  as the simulator builds them: sim_hardware/simulator/household.py household_params)
  minimising the community's grid bill at the connection point, import price x import -
  feed-in price x export (cvxpy). No agent can beat it.

Churn (sim_hardware/harness/churn.py): energy some batteries charge while others discharge in the
same interval, from the simulated batteries' AC counters sampled during the run.

    .venv/bin/python bench/battery_agent.py [--hours 48] [--meters 10] [--allocation marginal]
"""

from __future__ import annotations

import argparse
import bisect
import sys
import tempfile
from pathlib import Path

import cvxpy as cp
import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim_hardware.harness.bills import DemoBills  # noqa: E402
from sim_hardware.harness.churn import churn_from_flows_wh  # noqa: E402
from sim_hardware.harness.community import CommunityRun, run_scenario  # noqa: E402
from sim_hardware.harness.scenario import Scenario  # noqa: E402
from sim_hardware.simulator.household import household_params  # noqa: E402
from sim_hardware.simulator.profiles import household_profile  # noqa: E402

SOC_MIN = 0.05  # the simulated inverter's floor (sim_hardware/simulator/battery.py soc_min_centi)


def optimum_bill(sc: Scenario, stored_end_wh: float) -> tuple[np.ndarray, float, float]:
    """(community grid bill per interval in micro-currency, total stored Wh at the end, its churn
    in Wh over the period) with perfect
    foresight: the LP over every interval and battery, ending with at least ``stored_end_wh``
    in the batteries together (what the agent's run left in them), so the optimum cannot
    look better by selling the last stored energy at the feed-in price."""
    n_iv = (sc.end - sc.start) // sc.interval_s
    net = np.zeros((sc.meters, n_iv))  # pv - load per household and interval, Wh
    specs = []
    for i in range(sc.meters):
        profile = household_profile(i, sc.seed, sc.profile)
        for k in range(n_iv):
            t0 = sc.start + k * sc.interval_s
            load, pv = profile.interval_energy_wh(t0, t0 + sc.interval_s)
            net[i, k] = pv - load
        specs.append(household_params(i, sc.seed)[:2])
    h = sc.interval_s / 3600
    c = cp.Variable((sc.meters, n_iv), nonneg=True)  # AC charge, Wh
    d = cp.Variable((sc.meters, n_iv), nonneg=True)  # AC discharge, Wh
    e = cp.Variable((sc.meters, n_iv + 1))           # stored, Wh
    imp = cp.Variable(n_iv, nonneg=True)
    exp = cp.Variable(n_iv, nonneg=True)
    cons = []
    for i, (spec, soc) in enumerate(specs):
        cap = spec.capacity_wh
        cons += [e[i, 0] == cap * soc / 10000,
                 e[i, 1:] == e[i, :-1] + spec.eta_charge * c[i] - d[i] / spec.eta_discharge,
                 e[i, 1:] >= cap * SOC_MIN, e[i, 1:] <= cap,
                 c[i] <= spec.max_charge_w * h, d[i] <= spec.max_discharge_w * h]
    cons.append(exp - imp == cp.sum(net + d - c, axis=0))
    cons.append(cp.sum(e[:, -1]) >= stored_end_wh)
    bill = (sc.import_price * imp - sc.export_price * exp) / 1000
    cp.Problem(cp.Minimize(cp.sum(bill)), cons).solve()
    churn = churn_from_flows_wh(c.value.T.tolist(), d.value.T.tolist())
    return np.asarray(bill.value), float(np.sum(e.value[:, -1])), churn


class Sampler:
    """The simulated batteries' AC counters (charged, discharged Wh) and stored energy, sampled
    on every tick of the run, read back at the interval boundaries by linear interpolation."""

    def __init__(self) -> None:
        self.t: list[float] = []
        self.rows: list[list[tuple[float, float, float]]] = []

    def __call__(self, run: CommunityRun) -> None:
        assert run.sim is not None
        t = run.now()
        row = []
        for hh in run.sim.neighbourhood.households:
            v = hh.battery.values(t)
            row.append((float(v["charged_energy"]), float(v["discharged_energy"]),
                        float(v["energy"])))
        self.t.append(t)
        self.rows.append(row)

    def at(self, t: float) -> np.ndarray:
        k = min(max(bisect.bisect_left(self.t, t), 1), len(self.t) - 1)
        t0, t1 = self.t[k - 1], self.t[k]
        a, b = np.array(self.rows[k - 1]), np.array(self.rows[k])
        w = 0.0 if t1 == t0 else min(max((t - t0) / (t1 - t0), 0.0), 1.0)
        return a + (b - a) * w

    def flows(self, sc: Scenario) -> tuple[list[list[float]], list[list[float]]]:
        marks = [self.at(sc.start + k * sc.interval_s)
                 for k in range((sc.end - sc.start) // sc.interval_s + 1)]
        dc = [list(b[:, 0] - a[:, 0]) for a, b in zip(marks, marks[1:])]
        dd = [list(b[:, 1] - a[:, 1]) for a, b in zip(marks, marks[1:])]
        return dc, dd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--meters", type=int, default=10)
    ap.add_argument("--hours", type=float, default=48.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speed", type=float, default=720.0)
    ap.add_argument("--allocation", default="marginal",
                    help="the market's cost-sharing rule (default: marginal, the welfare rule)")
    ap.add_argument("--out", type=Path, default=None, help="run folder (default: a new temporary one)")
    args = ap.parse_args(argv)
    sc = Scenario(meters=args.meters, hours=args.hours, seed=args.seed, speed=args.speed,
                  runtime="cpython", allocation=args.allocation)
    out = args.out or Path(tempfile.mkdtemp(prefix="battery-agent-"))
    console = Console()
    console.print(f"battery agent: {sc.meters} households, {sc.hours:g} h from {sc.start}, "
                  f"allocation {sc.allocation}, run in {out}")
    bills = DemoBills(sc)  # alone, simulated before the run
    sampler = Sampler()
    result = run_scenario(sc, out, on_tick=sampler)
    members = bills.bills(result.community.db_path)
    per_iv = bills.by_interval(result.community.db_path)  # (iv, community, alone) micro
    stored_end = float(np.sum(sampler.at(sc.end)[:, 2]))
    opt_iv, opt_stored, opt_churn = optimum_bill(sc, stored_end)
    dc, dd = sampler.flows(sc)
    with (out / "battery_flows.csv").open("w") as f:  # per interval: charged, discharged Wh
        f.write("k,charged_wh,discharged_wh\n")
        for k, (a, b) in enumerate(zip(dc, dd)):
            f.write(f"{k},{' '.join(f'{x:.0f}' for x in a)},{' '.join(f'{x:.0f}' for x in b)}\n")
    first_iv = sc.start // sc.interval_s
    settled = {iv for iv, _c, _a in per_iv}
    per_day = 86400 // sc.interval_s
    n_days = max(1, -(-len(opt_iv) // per_day))
    table = Table(title=f"Community grid bill, {sc.meters} households ({min(b.intervals for b in members)}"
                        f"..{max(b.intervals for b in members)} settled intervals each)")
    for col in ("period", "alone", "agent", "optimum", "agent's saving / optimum's", "churn kWh/day"):
        table.add_column(col, justify="right")

    def row(name: str, lo: int, hi: int) -> None:
        """Intervals [lo, hi) from the scenario's start."""
        alone = sum(a for iv, _c, a in per_iv if lo <= iv - first_iv < hi) / 1e6
        agent = sum(c for iv, c, _a in per_iv if lo <= iv - first_iv < hi) / 1e6
        # over the intervals settled for the members, as their bills are
        opt = sum(float(opt_iv[k]) for k in range(lo, hi) if first_iv + k in settled) / 1e6
        churn = churn_from_flows_wh(dc[lo:hi], dd[lo:hi]) / 1000 / ((hi - lo) / per_day)
        share = (alone - agent) / (alone - opt) if alone != opt else float("nan")
        table.add_row(name, f"{alone:.2f}", f"{agent:.2f}", f"{opt:.2f}", f"{share:.0%}", f"{churn:.2f}")

    for day in range(n_days):
        lo, hi = day * per_day, min((day + 1) * per_day, len(opt_iv))
        row(f"day {day + 1}" + (" (no history: safe rule)" if day == 0 else ""), lo, hi)
    row("all", 0, len(opt_iv))
    console.print(table)
    console.print(f"stored at the end: agent {stored_end / 1000:.1f} kWh, optimum {opt_stored / 1000:.1f} kWh "
                  f"(at least the agent's); the optimum's churn {opt_churn / 1000 / n_days:.2f} kWh/day; "
                  f"alone per member from the settled lines' alternative")
    failed = "; ".join(f"{c.name}: {c.detail}" for c in result.report.failures())
    console.print(f"invariants: {failed or 'ok'}; drained: {result.drained}; "
                  f"per-interval battery flows: {out / 'battery_flows.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
