"""`tmeter bench run SCENARIO.toml`: run a scenario (simulated households, real firmware,
the gateway, faults over time), print each interval's result as it clears, then the invariant
report. Exit status 0 only when every invariant holds."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", metavar="ACTION", required=True)
    r = sub.add_parser("run", help="run a scenario file and check the invariants")
    r.add_argument("scenario", type=Path, help="scenario TOML (see bench/scenarios/)")
    r.add_argument("--out", type=Path, default=None, help="output folder (new or empty)")
    r.add_argument("--broker", default="mosquitto",
                   help="mosquitto (a private one, default), embedded (amqtt), or HOST:PORT")
    r.add_argument("--drain", type=float, default=120.0,
                   help="real seconds to wait for the last acks and settlements (%(default)s)")


class IntervalPrinter:
    """Prints each interval once, when its clearing result has arrived."""

    def __init__(self, console: object, interval_s: int) -> None:
        self.console = console
        self.interval_s = interval_s
        self.printed: set[int] = set()

    def __call__(self, community: object) -> None:
        from sim_hardware.harness.dashboard import money, price

        obs = community.observer  # type: ignore[attr-defined]
        for view in obs.cleared() if obs else []:
            if view.iv in self.printed:
                continue
            self.printed.add(view.iv)
            t = view.iv * self.interval_s
            self.console.print(  # type: ignore[attr-defined]
                f"iv {view.iv} {time.strftime('%H:%M', time.gmtime(t))} price {price(view.price)} "
                f"traded {view.traded_wh / 1000:.2f} kWh grid +{view.grid_import_wh / 1000:.2f}"
                f"/-{view.grid_export_wh / 1000:.2f} kWh welfare objective {money(view.community_cost)} "
                f"(alone on bids {money(view.bau_cost)}) bids {view.bids}")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sim_hardware.harness.community import log_to_file, run_scenario
    from sim_hardware.harness.scenario import Scenario, ScenarioError

    console = Console()
    try:
        scenario = Scenario.load(args.scenario)
    except ScenarioError as e:
        console.print(f"[red]tmeter bench: {e}[/]")
        return 2
    out = args.out or Path(f"tmeter-bench-{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    console.print(f"scenario {scenario.name}: {scenario.meters} meters on {scenario.runtime}, "
                  f"{scenario.hours:g} h at {scenario.speed:g}x, {len(scenario.faults)} faults; output {out}")
    log_to_file(out / "logs" / "host.log")
    try:
        result = run_scenario(scenario, out, args.broker, on_tick=IntervalPrinter(console, scenario.interval_s),
                              drain_s=args.drain)
    except (FileExistsError, ValueError, RuntimeError) as e:
        console.print(f"[red]tmeter bench: {e}[/]")
        return 1
    for event in result.community.events:
        console.print(f"fault applied: {event}")
    console.print(result.report.table())
    if not result.drained:
        console.print("[red]not drained: records still unacknowledged or intervals unsettled[/]")
    return 0 if result.report.ok and result.drained else 1
