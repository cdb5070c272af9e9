"""Benchmark: the market engines against a general-purpose convex solver, same instances, same run.

    python3 bench/clearing.py [--budget SECONDS] [--quick]

Mechanism 1 (uniform-price collective, `gateway.market.uniform`) for N = 100 ... 100,000 members
and mechanism 2 (peer to peer, k = 10 nearest peers, `gateway.market.p2p`) for N = 100 and
1,000, each beside the reference: the same problem built with cvxpy and solved by Clarabel at
its default accuracy (`tests/market/reference.py`, the formulation the property tests use). Everything runs on
one core (BLAS threads pinned to 1). Our time is the whole `clear()` call (clearing, costs,
settlement and the business-as-usual baseline); the reference's is model building plus solve,
with nothing else. Where the reference cannot finish within --budget seconds it is stopped and
the ratio is reported as a lower bound. Goals (issue 5): mechanism 1 at N = 100,000 under 1 s and
>= 50x faster than the reference; mechanism 2 at N = 1,000, k = 10 faster than the reference.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, for us and for the reference alike

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import multiprocessing as mp  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bounded import in_child  # noqa: E402
from gateway.market import BidBook, CommunityTerms, P2PParams, clear  # noqa: E402

GRID = CommunityTerms(import_price=0.30, export_price=0.08)
K = 10
# Clarabel at its own default tolerances (gaps 1e-8): the fastest setting that is still an
# accurate solve. The property tests use tighter ones, which cost it 3-10x more time.
REFERENCE_SOLVER = "CLARABEL-DEFAULT"


@dataclass(frozen=True)
class Case:
    mechanism: str
    n: int
    seed: int

    @property
    def label(self) -> str:
        return "uniform" if self.mechanism == "uniform" else f"p2p k={K}"


@dataclass(frozen=True)
class Row:
    case: Case
    ours: float
    reference: float | None  # None: stopped at the budget
    budget: float
    objective_gap: float | None


def make_book(n: int, seed: int) -> BidBook:
    """Households: half quadratic, half 4-point curves (a block at a low price, a price step,
    then a ramp), net positions between -3 and +3 kWh per interval."""
    rng = np.random.default_rng(seed)
    meters = [f"m{i}" for i in range(n)]
    lo = rng.uniform(-3.0, 0.5, n)
    width = rng.uniform(0.2, 3.0, n)
    quad = rng.random(n) < 0.5
    q = np.empty((n, 4))
    p = np.empty((n, 4))
    knee = lo + width * rng.uniform(0.2, 0.6, n)
    q[:] = np.stack([lo, knee, knee, lo + width], axis=1)
    base = rng.uniform(0.0, 0.3, n)
    p[:] = np.stack([base, base, base + rng.uniform(0, 0.1, n), base + 0.1 + rng.uniform(0, 0.2, n)], axis=1)
    slope = rng.uniform(0.01, 0.2, n)
    q[quad] = np.stack([lo, lo, lo + width, lo + width], axis=1)[quad]
    p[quad] = (base[:, None] + slope[:, None] * q)[quad]
    return BidBook.from_points(meters, q, p)


def make_p2p(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, P2PParams]:
    rng = np.random.default_rng(seed + 1)
    positions = rng.uniform(0.0, 2.0, (n, 2))  # km
    prefs = rng.uniform(0.0, 0.005, n)  # per kWh per km
    meters = [f"m{i}" for i in range(n)]
    params = P2PParams(
        k=K,
        positions={m: tuple(xy) for m, xy in zip(meters, positions)},
        preferences={m: float(c) for m, c in zip(meters, prefs)},
    )
    return positions, prefs, params


def time_ours(case: Case, book: BidBook, params: P2PParams | None) -> tuple[float, float]:
    repeats = 5 if case.n <= 10_000 else 3
    best, objective = float("inf"), float("nan")
    for _ in range(repeats):
        fresh = dataclasses.replace(book)  # a new book object: nothing cached from the last run
        start = time.perf_counter()
        result = clear(fresh, GRID, case.mechanism, params)
        best = min(best, time.perf_counter() - start)
        objective = result.objective
    return best, objective


def _reference_job(case: Case, out: mp.Queue) -> None:
    from tests.market.reference import solve_p2p, solve_uniform

    book = make_book(case.n, case.seed)
    start = time.perf_counter()
    if case.mechanism == "uniform":
        ref = solve_uniform(book, GRID, REFERENCE_SOLVER)
    else:
        positions, prefs, _ = make_p2p(case.n, case.seed)
        ref = solve_p2p(book, GRID, positions, prefs, K, solver=REFERENCE_SOLVER)
    out.put((time.perf_counter() - start, ref.objective, ref.status))


def time_reference(case: Case, budget: float) -> tuple[float | None, float]:
    """The reference in a child process (fresh, so one case's memory does not slow the next),
    stopped after ``budget`` seconds."""
    got = in_child(_reference_job, (case,), budget)
    if got is None:
        return None, float("nan")
    elapsed, objective, _status = got
    return elapsed, objective


def run_case(case: Case, budget: float) -> Row:
    book = make_book(case.n, case.seed)
    params = make_p2p(case.n, case.seed)[2] if case.mechanism == "p2p" else None
    ours, objective = time_ours(case, book, params)
    ref_time, ref_objective = time_reference(case, budget)
    gap = None
    if ref_time is not None:
        gap = abs(objective - ref_objective) / max(1.0, abs(ref_objective))
    return Row(case, ours, ref_time, budget, gap)


def print_table(rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Market clearing: tmeter engines vs cvxpy + Clarabel (default tolerances), one core")
    for col in ("mechanism", "N", "tmeter", "reference", "ratio", "objective rel. diff"):
        table.add_column(col, justify="left" if col == "mechanism" else "right")
    for r in rows:
        if r.reference is None:
            ref, ratio, gap = f"> {r.budget:.0f} s (stopped)", f"> {r.budget / r.ours:,.0f}x", "-"
        else:
            ref, ratio = f"{r.reference:.3f} s", f"{r.reference / r.ours:,.1f}x"
            gap = f"{r.objective_gap:.1e}"
        table.add_row(r.case.label, f"{r.case.n:,}", f"{r.ours * 1000:.1f} ms", ref, ratio, gap)
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds the reference may take per case (default 300)")
    parser.add_argument("--quick", action="store_true", help="skip the largest cases")
    args = parser.parse_args(argv)
    sizes = [100, 1_000, 10_000] + ([] if args.quick else [100_000])
    cases = [Case("uniform", n, seed=n) for n in sizes]
    cases += [Case("p2p", n, seed=n) for n in ([100] if args.quick else [100, 1_000])]
    clear(make_book(50, 0), GRID, "p2p", make_p2p(50, 0)[2])  # warm-up: imports, caches
    rows = []
    for case in cases:
        rows.append(run_case(case, args.budget))
        print(f"  {case.label:10s} N={case.n:>7,}: {rows[-1].ours * 1000:8.1f} ms", file=sys.stderr)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
