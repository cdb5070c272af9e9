"""Benchmark: the daemon's peer-to-peer path, against cvxpy + Clarabel on the same problem.

    python3 bench/p2p_daemon.py [--sizes 100,500,1000] [--k 10] [--intervals 3] [--budget SECONDS]

For N households provisioned with positions (2 km square) and preferences c_n (0..0.005 per kWh
per km) in a gateway database, each interval's bids are stored and ledgered as ingest stores
them, then the scheduler clears the interval as the daemon does (`Scheduler.clear_interval`:
`gateway.interval.clearing.market_clear` on the k-nearest graph of `[market.p2p] k`, the public
result, every member's award row and ledger leaf with its full trade list, the signed award
messages). Timed: the clearing alone and the whole step (best of --intervals). Beside it: the
same problem (same bids, positions, preferences, graph, grid at distance 0) built with cvxpy
and solved by Clarabel at its default tolerances (tests/market/reference.py), one core for both.

Then two villages (8 households each, 3 km apart, k = 10 so each household has peers in the
other village): the energy traded across villages without and with a distance preference, as
in Sorin, Bobo & Pinson (2019): the preference keeps trade local.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, for us and for the reference alike

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bounded import in_child  # noqa: E402
from gateway import db  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402
from gateway.interval.clearing import MICRO, Bid, Clearing, market_clear  # noqa: E402
from gateway.interval.scheduler import Scheduler  # noqa: E402
from gateway.ledger import note  # noqa: E402
from gateway.ledger.tlog import Ledger, encode_record  # noqa: E402
from gateway.registry import Registry  # noqa: E402

REFERENCE_SOLVER = "CLARABEL-DEFAULT"
IV0 = 2_000_000  # first interval index of a run


@dataclass(frozen=True)
class Community:
    """Households: their integer curves (Wh, micro-currency per kWh), positions (km) and c_n
    (micro-currency per kWh per km)."""

    curves: dict[str, list[tuple[int, int]]]
    positions: dict[str, tuple[float, float]]
    preferences: dict[str, int]


def households(n: int, seed: int) -> Community:
    """Net positions between -3 and +3 kWh: a block at a low price, a price step, then a ramp
    (bench/clearing.py's households, in the wire's integers)."""
    rng = np.random.default_rng(seed)
    meters = [f"hh{i:04d}" for i in range(n)]
    lo = rng.uniform(-3000, 500, n)
    width = rng.uniform(200, 3000, n)
    knee = lo + width * rng.uniform(0.2, 0.6, n)
    base = rng.uniform(0, 300_000, n)
    step = rng.uniform(0, 100_000, n)
    top = base + 100_000 + rng.uniform(0, 200_000, n)
    curves = {}
    for i, m in enumerate(meters):
        q = [round(lo[i]), round(knee[i]), round(knee[i]), round(lo[i] + width[i])]
        p = [round(base[i]), round(base[i]), round(base[i] + step[i]), round(max(top[i], base[i] + step[i]))]
        curves[m] = list(zip(q, p))
    xy = rng.uniform(0.0, 2.0, (n, 2))
    prefs = rng.integers(0, 5_000, n)
    return Community(curves, {m: (float(a), float(b)) for m, (a, b) in zip(meters, xy)},
                     {m: int(c) for m, c in zip(meters, prefs)})


class Gateway:
    """A gateway database with the community provisioned, its ledger and its scheduler."""

    def __init__(self, folder: Path, community: Community, k: int) -> None:
        self.cfg = GatewayConfig(community="c1", db=str(folder / "gateway.db"), synchronous="NORMAL")
        self.cfg.market.mechanism = "p2p"
        self.cfg.market.p2p.k = k
        self.conn = db.connect(self.cfg.db, "NORMAL")
        self.ledger = Ledger(self.conn, self.cfg.origin, note.load_or_create_signing_key(self.cfg.key_path))
        self.clearing_s: list[float] = []
        self.scheduler = Scheduler(self.cfg, self.conn, self.ledger, self._timed_clear, Counter())
        reg = Registry(conn=self.conn)
        for m in community.curves:
            reg.provision(m, "c1", position=community.positions[m], preference=community.preferences[m])
        self.community = community

    def _timed_clear(self, iv: int, bids: list[Bid], market: object) -> Clearing:
        start = time.perf_counter()
        result = market_clear(iv, bids, market)  # type: ignore[arg-type]
        self.clearing_s.append(time.perf_counter() - start)
        return result

    def store_bids(self, iv: int) -> None:
        """The interval's bids as ingest stores them: a ledger leaf and a row each."""
        with self.ledger.transaction() as conn:
            conn.execute("INSERT INTO intervals(iv, state) VALUES (?, 'open')", (iv,))
            for m, curve in self.community.curves.items():
                points = [list(p) for p in curve]
                leaf = self.ledger.append("bid", m, iv, encode_record("bid", {"meter": m, "iv": iv, "curve": points}))
                conn.execute("INSERT INTO bids(meter, iv, boot, n, curve, leaf) VALUES (?,?,?,?,?,?)",
                             (m, iv, 1, 0, json.dumps(points), leaf))

    def clear(self, iv: int) -> tuple[float, int]:
        """Seconds for the scheduler's whole clearing step, and the award messages it made."""
        start = time.perf_counter()
        out = self.scheduler.clear_interval(iv, float(iv * self.cfg.interval_s - 10))
        return time.perf_counter() - start, sum(o.topic.endswith("/award") for o in out)

    def trades(self, iv: int) -> dict[str, list[tuple[str, int, int]]]:
        rows = self.conn.execute("SELECT meter, trades FROM awards WHERE iv=?", (iv,)).fetchall()
        return {m: [tuple(t) for t in json.loads(tr)] for m, tr in rows}


@dataclass
class Row:
    n: int
    clearing: float
    whole: float
    awards: int
    trades: int
    reference: float | None
    budget: float
    gap: float | None


def engine_problem(community: Community, k: int) -> tuple[object, object, object]:
    """The problem the daemon clears, as the engine and the reference take it."""
    from gateway.market import Bid as EngineBid
    from gateway.market import BidBook, CommunityTerms, P2PParams

    cfg = GatewayConfig()
    book = BidBook.from_bids([EngineBid.curve(m, [(q / 1000, p / MICRO) for q, p in c])
                              for m, c in community.curves.items()])
    terms = CommunityTerms(import_price=cfg.market.import_price / MICRO, export_price=cfg.market.export_price / MICRO)
    params = P2PParams(k=k, positions=community.positions,
                       preferences={m: c / MICRO for m, c in community.preferences.items()}, grid_distance=0.0)
    return book, terms, params


def _reference_job(n: int, seed: int, k: int, out: mp.Queue) -> None:
    from tests.market.reference import solve_p2p

    community = households(n, seed)
    book, terms, params = engine_problem(community, k)
    positions = np.array([community.positions[m] for m in book.meters])  # type: ignore[attr-defined]
    prefs = np.array([community.preferences[m] / MICRO for m in book.meters])  # type: ignore[attr-defined]
    start = time.perf_counter()
    ref = solve_p2p(book, terms, positions, prefs, k, grid_distance=0.0, solver=REFERENCE_SOLVER)  # type: ignore[arg-type]
    out.put((time.perf_counter() - start, ref.objective))


def time_reference(n: int, seed: int, k: int, budget: float) -> tuple[float | None, float]:
    got = in_child(_reference_job, (n, seed, k), budget)
    return (None, float("nan")) if got is None else got


def run_size(n: int, k: int, intervals: int, budget: float, folder: Path) -> Row:
    from gateway.market import clear

    community = households(n, seed=n)
    gw = Gateway(folder, community, k)
    whole, awards = [], 0
    for iv in range(IV0, IV0 + intervals):
        gw.store_bids(iv)
        elapsed, awards = gw.clear(iv)
        whole.append(elapsed)
    trades = count_trades(gw.trades(IV0))
    book, terms, params = engine_problem(community, k)
    objective = clear(book, terms, "p2p", params).objective  # type: ignore[arg-type]
    ref_time, ref_objective = time_reference(n, n, k, budget)
    gap = None if ref_time is None else abs(objective - ref_objective) / max(1.0, abs(ref_objective))
    return Row(n, min(gw.clearing_s), min(whole), awards, trades, ref_time, budget, gap)


def count_trades(trades: dict[str, list[tuple[str, int, int]]]) -> int:
    """Distinct trades: each member-to-member trade once (its seller's entry), grid trades once."""
    return sum(1 for ts in trades.values() for p, q, _ in ts if q > 0 or p == "grid")


def warm_up(folder: Path) -> None:
    """Imports and first-call costs (numpy, scipy, the k-d tree) outside the timings."""
    gw = Gateway(folder / "warm-up", households(30, seed=0), k=10)
    gw.store_bids(IV0)
    gw.clear(IV0)


def villages_community(per_village: int, apart_km: float, preference: int) -> Community:
    """Village a has the sun (sellers at 0.02), village b the demand (buyers up to 0.28), 3 km apart."""
    curves, positions = {}, {}
    for v, x0 in (("a", 0.0), ("b", apart_km)):
        for i in range(per_village):
            m = f"{v}{i:02d}"
            positions[m] = (x0 + 0.1 * (i % 4), 0.1 * (i // 4))
            sells = (v == "a") == (i < per_village - 2)  # two households of each village do the opposite
            curves[m] = [(0, 20_000), (1000, 20_000)] if sells else [(-1000, 280_000), (0, 280_000)]
    return Community(curves, positions, {m: preference for m in curves})


def cross_village_kwh(trades: dict[str, list[tuple[str, int, int]]]) -> float:
    return sum(q for m, ts in trades.items() for p, q, _ in ts if p != "grid" and q > 0 and p[0] != m[0]) / 1000


def run_villages(folder: Path) -> list[tuple[int, float, float]]:
    """(preference, kWh traded across villages, kWh traded within) without and with c_n."""
    out = []
    for pref in (0, 20_000, 50_000):
        gw = Gateway(folder / f"villages-{pref}", villages_community(8, 3.0, pref), k=10)
        gw.store_bids(IV0)
        gw.clear(IV0)
        trades = gw.trades(IV0)
        total = sum(q for ts in trades.values() for p, q, _ in ts if p != "grid" and q > 0) / 1000
        out.append((pref, cross_village_kwh(trades), total - cross_village_kwh(trades)))
    return out


def print_tables(rows: list[Row], villages: list[tuple[int, float, float]], k: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"The daemon's p2p path (k = {k}) vs cvxpy + Clarabel (default tolerances), one core")
    for col in ("N", "clearing", "+ awards, ledger", "awards", "trades", "cvxpy + Clarabel",
                "ratio clearing", "ratio whole", "objective rel. diff"):
        table.add_column(col, justify="right")
    for r in rows:
        if r.reference is None:
            ref, ratio, ratio_whole, gap = f"> {r.budget:.0f} s (stopped)", f"> {r.budget / r.clearing:,.0f}x", \
                f"> {r.budget / r.whole:,.0f}x", "-"
        else:
            ref, ratio, ratio_whole = f"{r.reference:.3f} s", f"{r.reference / r.clearing:,.1f}x", \
                f"{r.reference / r.whole:,.1f}x"
            gap = f"{r.gap:.1e}"
        table.add_row(f"{r.n:,}", f"{r.clearing * 1000:.0f} ms", f"{r.whole * 1000:.0f} ms", f"{r.awards:,}",
                      f"{r.trades:,}", ref, ratio, ratio_whole, gap)
    console = Console(width=150)
    console.print(table)
    vt = Table(title="Two villages 3 km apart (8 households each, k = 10): trade kept local by c_n")
    for col in ("c_n (per kWh per km)", "kWh traded across villages", "kWh traded within villages"):
        vt.add_column(col, justify="right")
    for pref, across, within in villages:
        vt.add_row(f"{pref / MICRO:g}", f"{across:.2f}", f"{within:.2f}")
    console.print(vt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,1000", help="households per run (default 100,500,1000)")
    parser.add_argument("--k", type=int, default=10, help="nearest peers (default 10)")
    parser.add_argument("--intervals", type=int, default=3, help="intervals cleared per size; best is shown")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds the reference may take per size")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tmeter-p2p-bench-") as tmp:
        warm_up(Path(tmp))
        rows = []
        for n in (int(s) for s in args.sizes.split(",")):
            rows.append(run_size(n, args.k, args.intervals, args.budget, Path(tmp) / str(n)))
            print(f"  N={n:>6,}: clearing {rows[-1].clearing * 1000:.0f} ms, whole {rows[-1].whole * 1000:.0f} ms",
                  file=sys.stderr)
        print_tables(rows, run_villages(Path(tmp)), args.k)
    return 0


if __name__ == "__main__":
    sys.exit(main())
