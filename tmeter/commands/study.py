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
        study = simulate(households, start, args.days, args.import_price, args.export_price)
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
    from rich.table import Table

    bau = study.bau_cost
    table = Table(title=f"Energy collective vs business as usual: {len(study.times)} intervals, "
                        f"{len(bau)} households")
    for col in ("allocation", "community", "BAU", "savings", "%", "better off", "max loss"):
        table.add_column(col, justify="left" if col == "allocation" else "right")
    total_bau = float(bau.sum())
    for rule, cost in study.cost.items():
        total = float(cost.sum())
        gain = bau - cost
        table.add_row(
            rule, f"{total:.2f}", f"{total_bau:.2f}", f"{total_bau - total:.2f}",
            f"{100 * (total_bau - total) / abs(total_bau):.1f}" if total_bau else "-",
            f"{int((gain > 1e-9).sum())} / {len(bau)}", f"{max(0.0, -float(gain.min())):.2f}",
        )
    console = Console()
    console.print(table)
    console.print(
        "costs: money paid plus the value of flexible load given up, summed over households; "
        "better off / max loss: households against their own BAU cost"
    )
    console.print(
        f"energy matched inside the community: {study.matched_kwh:.1f} kWh (spread between "
        f"import and export price: {study.import_price - study.export_price:.2f} per kWh)"
    )
