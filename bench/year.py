"""Benchmark: a year of operation, measured (issue 14): database growth per meter-year, `ledger
verify` time of the whole log and of the last day, settlement lag and throughput at the start
against the end.

    python3 bench/year.py [--meters 100] [--days 365] [--budget SECONDS] [--quick] [--keep DIR]

The daemon's code paths without MQTT: gateway.ingest.store.Ingest, gateway.interval.scheduler.Scheduler
(the real market clearing, gateway.interval.clearing.market_clear) and gateway.ledger.tlog.Ledger on
one SQLite database, fed protocol-encoded, HMAC-signed readings and bids of N provisioned meters
(sim_hardware/harness/forged_meter.py) on a simulated clock, 900 s intervals. Each interval: the
bids of the next interval before its gate closure, a tick at gate closure (clearing, awards), the
readings of the interval just ended, a tick after the settlement grace (settlement lines, summary,
checkpoint). A full year of 100 meters takes this machine hours, so the run stops at --days or
--budget seconds, whichever comes first, and the year is extrapolated from the measured growth
(the output says which figures are measured and which extrapolated).

Retention (deploy/README.md): every --period-days the bench runs what the operator's weekly job
runs, `tmeter ledger archive` of the period since the last one, ending at the checkpoint that
closed the interval the settlement window (ingest.settlement_window_s, 7 days) ago, then
`tmeter ledger prune --before` that checkpoint (the plan, the archive verified, the settlement
window checked, a signed prune leaf, VACUUM), so the Pi holds the settlement window plus at most
one period; the first prune's bytes before and after and its time are printed. --no-prune
keeps everything (the figure without retention is measured before the first prune either way).
The ingest rate of the last day over the first's shows whether ingest slows as the file grows.
"""

from __future__ import annotations

import argparse
import lzma
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from gateway import db  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402
from gateway.interval.clearing import market_clear  # noqa: E402
from gateway.interval.scheduler import Scheduler  # noqa: E402
from gateway.ingest.store import Ingest  # noqa: E402
from gateway.ledger import archive, note, retention, verify  # noqa: E402
from gateway.ledger.tlog import Ledger  # noqa: E402
from gateway.registry import Registry  # noqa: E402
from sim_hardware.harness.forged_meter import MeterSpec, bid, reading  # noqa: E402

INTERVAL_S = 900
PER_DAY = 86_400 // INTERVAL_S
console = Console(width=100)


class SimClock:
    """The gateway's clock as Ingest reads it: simulated seconds the bench moves by hand; the
    meters' provisioning (wall seconds) is the simulation's start."""

    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def at_wall(self, wall: float) -> float:
        return wall

    def real_seconds(self, simulated: float) -> float:
        return max(0.0, simulated)


@dataclass
class Rig:
    cfg: GatewayConfig
    conn: sqlite3.Connection
    ledger: Ledger
    ingest: Ingest
    scheduler: Scheduler
    clock: SimClock
    specs: list[MeterSpec]
    counters: Counter[str] = field(default_factory=Counter)
    sizes: list[int] = field(default_factory=list)  # after interval k: the latest checkpoint's size
    rates: list[float] = field(default_factory=list)  # ingest msgs/s of each whole simulated day


@dataclass
class Retention:
    """The weekly archive and prune, as measured: archives leave the Pi xz-compressed."""
    period: int  # intervals per archive
    window: int  # intervals kept for late readings (the settlement window)
    through: int = 0  # the last archived checkpoint (0: none yet)
    archives: int = 0
    archive_xz: int = 0  # bytes of the xz-compressed archives
    archive_s: float = 0.0
    prune_s: float = 0.0
    vacuum_s: float = 0.0
    pruned: int = 0  # leaves removed
    before_first: tuple[int, int] | None = None  # (bytes, intervals done) just before the first prune
    first: retention.Done | None = None  # the first prune: the first period's days
    peak: int = 0  # the largest file + WAL seen, just before a prune: what the SD card must hold

    def due(self, k: int) -> bool:
        return k >= self.window + self.period and (k - self.window) % self.period == 0


def retain(rig: Rig, ret: Retention, k: int, folder: Path) -> None:
    """What the operator's weekly job runs: `tmeter ledger archive` of the checkpoints up to the
    one after interval k - window, then `tmeter ledger prune --before` that checkpoint --yes
    (the plan, the archive verified, the settlement window checked, VACUUM)."""
    last = rig.sizes[k - ret.window]
    if last <= ret.through:
        return
    if ret.before_first is None:
        ret.before_first = (db_bytes(rig), k + 1)
    out = folder / f"archive-{ret.archives:03d}.db"
    t0 = time.perf_counter()
    retention.record(rig.conn, archive.export(rig.conn, ret.through, last, out))
    ret.archive_s += time.perf_counter() - t0
    window_s = rig.cfg.ingest.settlement_window_s
    plan = retention.plan(rig.conn, last, rig.clock.t, window_s)
    done = retention.execute(rig.ledger, plan, rig.ledger.signing_key.public_key(),  # type: ignore[union-attr]
                             rig.clock.t, window_s)
    ret.prune_s += done.prune_s
    ret.vacuum_s += done.vacuum_s
    ret.first = ret.first or done
    ret.peak = max(ret.peak, done.before)
    ret.archive_xz += len(lzma.compress(out.read_bytes(), preset=6))
    out.unlink()  # it left the Pi
    ret.pruned += done.removed
    ret.through = last
    ret.archives += 1


def build(folder: Path, meters: int) -> Rig:
    """The objects the daemon wires (gateway/daemon.py), on one database, meters provisioned."""
    cfg = GatewayConfig(community="c1", db=str(folder / "gateway.db"), interval_s=INTERVAL_S, gate_closure_s=60,
                        synchronous="NORMAL")
    reg = Registry(cfg.db)
    specs = []
    for i in range(meters):
        dev = reg.provision(f"m{i:03d}", cfg.community, mqtt_port=1883)
        specs.append(MeterSpec(dev.meter, dev.kid, dev.key))
    reg.close()
    # Start at the first whole interval after provisioning: earlier readings are quarantined.
    clock = SimClock((time.time() // INTERVAL_S + 1) * INTERVAL_S)
    conn = db.connect(cfg.db, cfg.synchronous)
    ledger = Ledger(conn, cfg.origin, note.load_or_create_signing_key(cfg.key_path))
    counters: Counter[str] = Counter()
    ingest = Ingest(cfg, conn, ledger, clock, counters)  # type: ignore[arg-type]
    scheduler = Scheduler(cfg, conn, ledger, market_clear, counters)
    return Rig(cfg, conn, ledger, ingest, scheduler, clock, specs, counters)


def _curve(i: int, iv: int) -> list[list[int]]:
    # Half the members sell around midday, half buy; prices micro-currency per kWh, non-decreasing.
    hour = (iv % PER_DAY) * 24 // PER_DAY
    sun = max(0, 6 - abs(hour - 12)) * 60
    q = sun - 80 if i % 2 else -100 - (i % 7) * 10
    base = 90_000 + (i % 11) * 2_000
    return [[q - 150, base - 20_000], [q, base], [q + 150, base + 20_000]]


@dataclass
class Step:
    ingest_s: float = 0.0
    settle_s: float = 0.0
    messages: int = 0
    intervals: int = 0


def run_interval(rig: Rig, iv: int, n: int, step: Step) -> None:
    """Bids for interval iv, its clearing, then the readings of iv - 1 and its settlement."""
    sch, clock = rig.scheduler, rig.clock
    clock.t = iv * INTERVAL_S - 120  # before gate closure of iv (interval iv - 1 is running)
    sch.tick(clock.t)
    bids = [bid(s, "c1", iv, n, _curve(i, iv), int(clock.t)) for i, s in enumerate(rig.specs)]
    t0 = time.perf_counter()
    rig.ingest.process(bids)
    step.ingest_s += time.perf_counter() - t0
    clock.t = sch.gate(iv)
    sch.tick(clock.t)  # clears iv
    clock.t = iv * INTERVAL_S + 10  # interval iv - 1 has ended: its readings arrive
    hour = ((iv - 1) % PER_DAY) * 24 // PER_DAY
    pv = max(0, 6 - abs(hour - 12)) * 80
    reads = [reading(s, "c1", iv - 1, INTERVAL_S, imp_wh=120 + i % 13, exp_wh=pv if i % 2 else 0)[:2]
             for i, s in enumerate(rig.specs)]
    t0 = time.perf_counter()
    rig.ingest.process(reads)
    step.ingest_s += time.perf_counter() - t0
    clock.t = sch.settle_due(iv - 1) + 1
    t0 = time.perf_counter()
    sch.tick(clock.t)  # settles iv - 1, checkpoints
    step.settle_s += time.perf_counter() - t0
    step.messages += len(bids) + len(reads)
    step.intervals += 1


def db_bytes(rig: Rig) -> int:
    """File + WAL after a checkpoint (what the SD card holds)."""
    rig.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path = Path(rig.cfg.db)
    wal = Path(f"{path}-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def per_object(conn: sqlite3.Connection) -> list[tuple[str, int, int]]:
    """(table or index, bytes, rows or -1) from the dbstat virtual table, else page counts."""
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
    except sqlite3.OperationalError:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        total = conn.execute("PRAGMA page_count").fetchone()[0]
        return [("(all, dbstat unavailable)", page * total, -1)]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    out = []
    for name, size in rows:
        count = conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0] if name in tables else -1  # noqa: S608
        out.append((name, size, count))
    return out


def time_verify(rig: Rig, since: bytes | None) -> tuple[float, verify.Report]:
    key = rig.ledger.signing_key.public_key()  # type: ignore[union-attr]
    conn = db.connect_readonly(rig.cfg.db)
    try:
        t0 = time.perf_counter()
        if since is None:
            report = verify.verify(conn, rig.cfg.origin, key)
        elif hasattr(verify, "verify_since"):
            report = verify.verify_since(conn, rig.cfg.origin, key, since)
        else:
            return float("nan"), verify.Report()
        return time.perf_counter() - t0, report
    finally:
        conn.close()


def lag(conn: sqlite3.Connection, rig: Rig, first: bool, count: int = PER_DAY) -> float:
    """Mean settled_at - settle-due (simulated seconds) of the first or last ``count`` intervals."""
    order = "ASC" if first else "DESC"
    rows = conn.execute(f"SELECT iv, settled_at FROM intervals WHERE state='settled' ORDER BY iv {order} LIMIT ?",  # noqa: S608
                        (count,)).fetchall()
    return sum(t - rig.scheduler.settle_due(iv) for iv, t in rows) / max(1, len(rows))


def archive_table(rig: Rig, day_note: bytes, meters: int) -> Table:
    """The last day as the retention policy exports it (`tmeter ledger archive`): its file, the
    file xz-compressed (how it leaves the Pi), and verifying it from its start note."""
    first = note.parse_checkpoint(note.split(day_note)[0]).size
    last = rig.conn.execute("SELECT MAX(size) FROM checkpoints").fetchone()[0]
    out = Path(rig.cfg.db).with_name("last-day.archive.db")
    out.unlink(missing_ok=True)
    archive.export(rig.conn, first, last, out)
    raw = out.read_bytes()
    packed = len(lzma.compress(raw, preset=6))
    conn = db.connect_readonly(out)
    t0 = time.perf_counter()
    rep = verify.verify_since(conn, rig.cfg.origin, rig.ledger.signing_key.public_key(), day_note)  # type: ignore[union-attr]
    took = time.perf_counter() - t0
    conn.close()
    t = Table(title="the last day archived (retention policy, deploy/README.md)")
    t.add_column("figure")
    t.add_column("value", justify="right")
    days = (last - first) / max(1, rig.conn.execute("SELECT COUNT(*) FROM leaves").fetchone()[0]) * \
        rig.conn.execute("SELECT COUNT(*) FROM intervals WHERE state='settled'").fetchone()[0] / PER_DAY
    t.add_row(f"archive file, {days:.2f} days of {meters} meters", f"{len(raw) / 1e6:.2f} MB")
    t.add_row("  xz-compressed", f"{packed / 1e6:.2f} MB")
    t.add_row("  xz per meter-year, extrapolated", f"{packed / max(1e-9, days) * 365 / meters / 1e6:.2f} MB")
    t.add_row(f"  verify --since its start note {'OK' if rep.ok else 'FAILED'}", f"{took:.3f} s")
    return t


def retention_table(rig: Rig, args: argparse.Namespace, ret: Retention, size: int, done: int) -> Table:
    """The Pi with the weekly archive and prune: its file stops growing once the settlement window
    and one period are on it (SQLite reuses the pages a prune frees), so a year leaves the peak."""
    t = Table(title=f"with retention: archive + prune every {ret.period / PER_DAY:g} days,"
                    f" {ret.window / PER_DAY:g} days kept for late readings")
    t.add_column("figure")
    t.add_column("value", justify="right")
    peak = max(ret.peak, size)
    kept = rig.conn.execute("SELECT COUNT(*) FROM leaves").fetchone()[0]
    t.add_row(f"archives written, verified and pruned ({ret.pruned:,} leaves removed)", f"{ret.archives}")
    t.add_row(f"leaves on the Pi at the end ({done / PER_DAY:.1f} days run)", f"{kept:,}")
    if ret.first is not None:
        f = ret.first
        t.add_row(f"first prune, the first {ret.period / PER_DAY:g} days ({f.removed:,} leaves): file + WAL"
                  " before -> after", f"{f.before / 1e6:.2f} -> {f.after / 1e6:.2f} MB")
        t.add_row("  time: prune (archive verified, leaves removed) + VACUUM (wall s)",
                  f"{f.prune_s:.1f} + {f.vacuum_s:.1f}")
    t.add_row("file + WAL on the Pi, largest (just before a prune), measured", f"{peak / 1e6:.2f} MB")
    t.add_row("  per meter, for a year and on (steady state)", f"{peak / args.meters / 1e6:.2f} MB")
    t.add_row("archive + prune + VACUUM time per period (wall s)",
              f"{ret.archive_s / ret.archives:.1f} + {ret.prune_s / ret.archives:.1f}"
              f" + {ret.vacuum_s / ret.archives:.1f}")
    days = ret.through / max(1, rig.ledger.size) * done / PER_DAY
    t.add_row("archives off the Pi, xz, per meter-year, extrapolated",
              f"{ret.archive_xz / max(1e-9, days) * 365 / args.meters / 1e6:.2f} MB")
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--meters", type=int, default=100, help="provisioned meters (100)")
    ap.add_argument("--days", type=float, default=365, help="simulated days (365)")
    ap.add_argument("--budget", type=float, default=600, help="stop after this many wall seconds (600)")
    ap.add_argument("--quick", action="store_true", help="10 meters, 1 day: a smoke run")
    ap.add_argument("--keep", help="folder for the database (default: a temporary one)")
    ap.add_argument("--period-days", type=float, default=7, help="archive and prune every this many days (7)")
    ap.add_argument("--no-prune", action="store_true", help="no retention: keep every period on the Pi")
    args = ap.parse_args()
    if args.quick:
        args.meters, args.days = 10, 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        return run(folder, args)


def run(folder: Path, args: argparse.Namespace) -> int:
    rig = build(folder, args.meters)
    iv0 = int(rig.clock.t) // INTERVAL_S + 1
    wanted = int(args.days * PER_DAY)
    empty = db_bytes(rig)
    days: list[Step] = []
    t_start = time.perf_counter()
    done = 0
    ret = Retention(int(args.period_days * PER_DAY), rig.cfg.ingest.settlement_window_s // INTERVAL_S)
    for k in range(wanted):
        if time.perf_counter() - t_start > args.budget and done >= 2 * PER_DAY:
            break
        if k % PER_DAY == 0:
            days.append(Step())
        run_interval(rig, iv0 + k, k, days[-1])
        rig.sizes.append(rig.conn.execute("SELECT COALESCE(MAX(size), 0) FROM checkpoints").fetchone()[0])
        done += 1
        if not args.no_prune and ret.due(done):
            retain(rig, ret, done - 1, folder)
    wall = time.perf_counter() - t_start
    total = Step()
    for d in days:
        _merge(total, d)
    rig.rates = [d.messages / max(1e-9, d.ingest_s) for d in days if d.intervals == PER_DAY]
    return report(rig, args, done, wall, empty, days[0], days[-1], total, _note_before(rig, done), ret)


def _merge(into: Step, s: Step) -> Step:
    into.ingest_s += s.ingest_s
    into.settle_s += s.settle_s
    into.messages += s.messages
    into.intervals += s.intervals
    return into


def _note_before(rig: Rig, done: int) -> bytes:
    """The checkpoint that closed the interval a day before the end (the auditor's last visit)."""
    rows = rig.conn.execute("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1 OFFSET ?",
                            (min(PER_DAY, max(0, done - 1)),)).fetchone()
    return bytes(rows[0])


def report(rig: Rig, args: argparse.Namespace, done: int, wall: float, empty: int, first: Step, last: Step,
           total: Step, day_note: bytes, ret: Retention) -> int:
    size = db_bytes(rig)
    meter_intervals = done * args.meters
    grown, grown_over = ret.before_first or (size, done)  # without pruning: the growth before the first prune
    per_mi = (grown - empty) / max(1, grown_over * args.meters)
    per_meter_year = per_mi * PER_DAY * 365
    console.rule(f"[bold]a year of operation: {args.meters} meters, {done} intervals"
                 f" ({done / PER_DAY:.1f} days simulated in {wall:.0f} s)")
    if done < args.days * PER_DAY:
        console.print(f"[yellow]stopped by --budget {args.budget:.0f} s: the year figures are extrapolated"
                      f" linearly from {done / PER_DAY:.1f} measured days")
    t = Table(title="database")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("file + WAL after checkpoint at the end, measured", f"{size / 1e6:.2f} MB")
    t.add_row(f"without pruning: per meter and interval, measured over {grown_over / PER_DAY:.1f} days",
              f"{per_mi:.0f} B")
    t.add_row("without pruning: per meter-year (x 35,040 intervals), extrapolated", f"{per_meter_year / 1e6:.2f} MB")
    t.add_row(f"without pruning: {args.meters} meters, one year, extrapolated",
              f"{per_meter_year * args.meters / 1e9:.2f} GB")
    console.print(t)
    if ret.archives:
        console.print(retention_table(rig, args, ret, size, done))
    objs = Table(title="where the bytes go (dbstat)")
    for c in ("table / index", "bytes", "rows", "B per meter-interval", "share"):
        objs.add_column(c, justify="right" if c != "table / index" else "left")
    for name, nbytes, rows in per_object(rig.conn):
        if nbytes < 8192 and rows < 1000:
            continue
        objs.add_row(name, f"{nbytes:,}", "" if rows < 0 else f"{rows:,}", f"{nbytes / max(1, meter_intervals):.0f}",
                     f"{100 * nbytes / size:.1f} %")
    console.print(objs)
    t_full, rep_full = time_verify(rig, None)
    t_day, rep_day = time_verify(rig, day_note)
    perf = Table(title="ledger verify and throughput")
    perf.add_column("figure")
    perf.add_column("value", justify="right")
    perf.add_row(f"verify whole log ({rep_full.leaves:,} leaves) {'OK' if rep_full.ok else 'FAILED'}",
                 f"{t_full:.2f} s")
    perf.add_row(f"  per leaf, extrapolated to a year of {args.meters} meters",
                 f"{t_full / max(1, rep_full.leaves) * 1e6:.1f} us -> "
                 f"{t_full * (365 * PER_DAY) / max(1, done):.0f} s")
    perf.add_row(f"verify --since the last day ({rep_day.leaves:,} new leaves) {'OK' if rep_day.ok else 'FAILED'}",
                 f"{t_day:.3f} s")
    for name, s in (("first day", first), ("last day", last)):
        perf.add_row(f"ingest, {name} (msgs/s)", f"{s.messages / max(1e-9, s.ingest_s):,.0f}")
        perf.add_row(f"settle tick, {name} (ms per interval)", f"{1e3 * s.settle_s / max(1, s.intervals):.1f}")
    rates = [s.messages / max(1e-9, s.ingest_s) for s in (first, last)]
    perf.add_row("ingest, last day / first day (msgs/s ratio)", f"{rates[1] / max(1e-9, rates[0]):.2f}")
    if len(rig.rates) >= 2:
        # One day's rate moves with the machine's other load; a week's median much less.
        week = max(1, min(7, len(rig.rates) // 2))
        early, late = statistics.median(rig.rates[:week]), statistics.median(rig.rates[-week:])
        perf.add_row(f"ingest, median day of the last {week} / of the first {week} (msgs/s)",
                     f"{late:,.0f} / {early:,.0f} = {late / max(1e-9, early):.2f}")
        perf.add_row("ingest, slowest and fastest day (msgs/s)", f"{min(rig.rates):,.0f} .. {max(rig.rates):,.0f}")
    perf.add_row("settlement lag settled_at - due, first day (simulated s)", f"{lag(rig.conn, rig, True):.1f}")
    perf.add_row("settlement lag settled_at - due, last day (simulated s)", f"{lag(rig.conn, rig, False):.1f}")
    perf.add_row("whole run: wall s per simulated day", f"{wall * PER_DAY / max(1, done):.1f}")
    console.print(perf)
    console.print(archive_table(rig, day_note, args.meters))
    console.print("ingest per day, k msgs/s: " + " ".join(f"{r / 1e3:.1f}" for r in rig.rates))
    console.print("settlement lag on the simulated clock is the bench's tick schedule (+1 s); the lag a"
                  " daemon adds is the settle tick's wall time above.")
    for r in (rep_full, rep_day):
        for p in r.problems[:5]:
            console.print(f"[red]FAIL: {p}")
    bad = {k: v for k, v in rig.counters.items() if k.startswith(("reject", "quarantin"))}
    if bad:
        console.print(f"[yellow]ingest counters: {dict(bad)}")
    return 0 if rep_full.ok and rep_day.ok else 1


if __name__ == "__main__":
    sys.exit(main())
