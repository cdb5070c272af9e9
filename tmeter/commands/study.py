"""`tmeter study collective`: the energy collective against business as usual on simulated
households (sim_hardware/harness/study.py), as a table and a plot."""

from __future__ import annotations

import argparse
import calendar
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("design", choices=["collective"], help="the market design to study")
    parser.add_argument("--days", type=_positive_int, default=1, help="days to simulate (default 1)")
    parser.add_argument("--profile", choices=["synthetic", "simbench"], default="synthetic",
                        help="household profiles (simbench needs the [simbench] extra)")
    parser.add_argument("--members", type=_positive_int, default=20, help="households (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="community seed (default 0)")
    parser.add_argument("--start", default="2024-06-01", help="first day, UTC (default 2024-06-01)")
    parser.add_argument("--import-price", type=float, default=0.30, help="per kWh (default 0.30)")
    parser.add_argument("--export-price", type=float, default=0.08, help="per kWh (default 0.08)")
    parser.add_argument("--coalitions", type=_positive_int, default=None,
                        help="random coalitions the least core checks besides singletons and "
                             "every all-but-one (default: as many as households)")
    parser.add_argument("--out", type=Path, default=Path("out"),
                        help="folder for the plot (default ./out)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def run(args: argparse.Namespace) -> int:
    from gateway.market import MarketInputError
    from sim_hardware.harness.study import Household, plot_study, simulate

    try:
        start = _start_time(args.start)
        households = [Household.make(i, args.seed, args.profile) for i in range(args.members)]
        study = simulate(households, start, args.days, args.import_price, args.export_price,
                         coalitions=args.coalitions)
    except (ValueError, RuntimeError, MarketInputError) as exc:  # bad dates, profile source
        print(f"tmeter study: {exc}", file=sys.stderr)
        return 2
    print_table(study)
    plot = plot_study(study, args.out)
    print(f"plot: {plot}")
    return 0


def _start_time(text: str) -> int:
    import datetime as dt

    day = dt.date.fromisoformat(text)
    return calendar.timegm(day.timetuple())


def print_table(study: Any) -> None:
    from rich.console import Console

    console = Console()
    console.print(_rule_table(study))
    console.print(
        "in/out: the community's grid import and export, kWh; cost: money paid plus the value "
        "of flexible load given up, summed over households; alone: the same with every household "
        "alone with the grid; saving: alone minus cost; worse / loss: households worse off than "
        "alone, the largest loss; dq: the largest change of one award against marginal, kWh"
    )
    lc = study.least_core
    if lc is not None:
        console.print(
            f"least-core: welfare-optimal dispatch, the period's cost shared so that no coalition "
            f"of the {lc.coalitions} checked (singletons, every all-but-one, random) pays more "
            f"than alone by over {max(lc.epsilon, 0.0):.4f}; largest excess {lc.epsilon:.4f}"
        )
    console.print(_member_table(study))
    console.print(
        f"energy matched inside the community (marginal): {study.matched_kwh:.1f} kWh (spread "
        f"between import and export price: {study.import_price - study.export_price:.2f} per kWh)"
    )


def _rule_table(study: Any) -> Any:
    from rich.table import Table

    bau = study.bau_cost
    from rich import box

    table = Table(title=f"Collective vs alone: {len(study.times)} intervals, {len(bau)} households",
                  box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))
    # Short headers, so the table reads whole at 80 columns (the caption says what they mean).
    columns = ("rule", "in", "out", "dq", "cost", "alone", "saving", "%", "worse", "loss")
    for col in columns:
        table.add_column(col, justify="left" if col == "rule" else "right")
    total_bau = float(bau.sum())
    for rule, cost in study.cost.items():
        total = float(cost.sum())
        gain = study.saving(rule)
        grid_in, grid_out = study.grid_kwh[rule]
        table.add_row(
            rule, f"{grid_in:.1f}", f"{grid_out:.1f}", f"{study.max_dq[rule]:.2f}",
            f"{total:.2f}", f"{total_bau:.2f}", f"{total_bau - total:.2f}",
            f"{100 * (total_bau - total) / abs(total_bau):.1f}" if total_bau else "-",
            f"{int((gain < -1e-9).sum())}/{len(bau)}", f"{max(0.0, -float(gain.min())):.2f}",
        )
    return table


def _member_table(study: Any) -> Any:
    from rich.table import Table

    table = Table(title="Saving of each household against alone, per rule")
    table.add_column("household")
    table.add_column("alone", justify="right")
    for rule in study.cost:
        table.add_column(rule, justify="right")
    savings = {rule: study.saving(rule) for rule in study.cost}
    for i, meter in enumerate(study.meters):
        table.add_row(meter, f"{study.bau_cost[i]:.2f}", *(f"{savings[r][i]:.2f}" for r in study.cost))
    return table
