"""End-to-end latency and gateway load for communities of 10, 100 and 500 meters.

Each size runs a whole community on this machine (Mosquitto, simulated households, the real
firmware, the gateway process) for a few simulated hours and reports, from the gateway's
database and the meters' logs:

* interval end -> settlement: when the gateway settled each interval, counted from the end of
  the interval. It includes the configured grace period (readings must be in first), so the
  figure of merit is the part beyond it;
* gate closure -> award received: from the gate closure of an interval to the moment each
  meter logged the award's arrival (clearing, tagging, publishing, broker, meter);
* the gateway process's CPU time as a share of one core over the run.

Delays are reported in real milliseconds (simulated time divided by the speed). The named
peer for the award delay is the interval itself: the award must arrive before the interval
starts, i.e. within the gate-closure time, and the ratio column shows the share of that
budget used at the 99th percentile.

Ten meters run the firmware under MicroPython (one process per meter, as on boards); 100 and
500 under CPython fleets, since 500 MicroPython processes do not fit two cores.

    python3 bench/e2e.py [--sizes 10,100,500] [--hours 3]
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from sim_hardware.harness.community import CommunityRun, log_to_file, run_scenario  # noqa: E402
from sim_hardware.harness.scenario import Scenario  # noqa: E402

RECEIVED = re.compile(rb"^(?:([\w-]+) )?award for iv (\d+) at (\d+)", re.M)
# (speed, poll_s, runtime) per size: fast enough to finish, slow enough for two cores.
SETTINGS = {10: (720, 60, "micropython"), 100: (240, 150, "cpython"), 500: (60, 150, "cpython")}


@dataclass
class Figures:
    meters: int
    runtime: str
    speed: float
    settle_ms: list[float]
    award_ms: list[float]
    gate_ms: float
    grace_ms: float
    cpu_share: float
    ok: bool


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class CpuSampler:
    """Samples the gateway process's CPU time while the run goes on (it is gone afterwards)."""

    def __init__(self) -> None:
        self.cpu_s = 0.0
        self.began: float | None = None
        self.last: float | None = None

    def __call__(self, community: CommunityRun) -> None:
        import psutil

        self.fds = max(getattr(self, "fds", 0), psutil.Process().num_fds())

        process = community.gateway
        if process is None or not process.alive or process.popen is None:
            return
        try:
            times = psutil.Process(process.popen.pid).cpu_times()
        except psutil.Error:
            return
        now = time.time()
        self.began = self.began or now
        self.last = now
        self.cpu_s = times.user + times.system

    @property
    def share(self) -> float:
        span = (self.last or 0) - (self.began or 0)
        return self.cpu_s / span if span > 0 else float("nan")


def settle_delays(community: CommunityRun) -> list[float]:
    sc = community.scenario
    with sqlite3.connect(community.db_path) as db:
        rows = db.execute("SELECT iv, settled_at FROM intervals WHERE state='settled' AND settled_at IS NOT NULL"
                          " AND iv >= ?", (sc.start // sc.interval_s,)).fetchall()
    return [(settled - (iv + 1) * sc.interval_s) / sc.speed * 1000 for iv, settled in rows]


def award_delays(community: CommunityRun) -> list[float]:
    sc = community.scenario
    out = []
    for log in (community.out / "logs").glob("*.log"):
        for match in RECEIVED.finditer(log.read_bytes()):
            iv, at_ms = int(match[2]), int(match[3])
            gate_ms = (iv * sc.interval_s - sc.gate_closure_s) * 1000
            out.append((at_ms - gate_ms) / sc.speed)
    return out


def measure(meters: int, hours: float, workdir: Path) -> Figures:
    speed, poll_s, runtime = SETTINGS.get(meters, (60, 150, "cpython"))
    scenario = Scenario(name=f"e2e-{meters}", meters=meters, hours=hours, speed=speed, poll_s=poll_s,
                        runtime=runtime)
    out = workdir / f"n{meters}"
    log_to_file(out / "logs" / "host.log")
    sampler = CpuSampler()
    result = run_scenario(scenario, out, broker="mosquitto", on_tick=sampler, drain_s=180)
    for check in result.report.failures():
        print(f"{meters} meters: {check.name} FAILED: {check.detail}")
    if not result.drained:
        print(f"{meters} meters: not drained")
    return Figures(meters, runtime, speed, settle_delays(result.community), award_delays(result.community),
                   scenario.gate_closure_s / speed * 1000,
                   result.community.gateway_config()["settlement"]["grace_s"] / speed * 1000,
                   sampler.share, result.report.ok and result.drained)


def table(rows: list[Figures]) -> Table:
    t = Table(title="end to end: delays in real ms (median / p99), gateway CPU as a share of one core")
    for name in ("meters", "firmware", "speed", "end->settled", "of which grace", "gate->award",
                 "p99 / gate budget", "gateway CPU", "invariants"):
        t.add_column(name, justify="right")
    for f in rows:
        award99 = percentile(f.award_ms, 0.99)
        t.add_row(
            str(f.meters), f.runtime, f"{f.speed:g}x",
            f"{statistics.median(f.settle_ms):.0f} / {percentile(f.settle_ms, 0.99):.0f}" if f.settle_ms else "-",
            f"{f.grace_ms:.0f}",
            f"{statistics.median(f.award_ms):.0f} / {award99:.0f}" if f.award_ms else "-",
            f"{award99 / f.gate_ms:.2f}" if f.award_ms else "-",
            f"{f.cpu_share:.1%}", "ok" if f.ok else "FAILED")
    return t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,500", help="community sizes (%(default)s)")
    parser.add_argument("--hours", type=float, default=3.0, help="simulated hours per size (%(default)s)")
    args = parser.parse_args()
    console = Console(width=150)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tmeter-e2e-") as tmp:
        for meters in (int(s) for s in args.sizes.split(",")):
            console.print(f"running {meters} meters ...")
            rows.append(measure(meters, args.hours, Path(tmp)))
            console.print(table(rows))
    return 0 if all(f.ok for f in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
