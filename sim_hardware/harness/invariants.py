"""The invariants every community run must keep, checked after it stopped:

1. every record a meter produced is in the gateway's store and ledger exactly once, and no
   meter still holds an unacknowledged record;
2. ``tmeter ledger verify`` passes on the database;
3. every settled interval balances against the feeder meter within the loss tolerance;
4. no award was applied outside its own interval;
5. every interval with bids was cleared within its gate budget (awards out before it opened),
   unless the scenario's faults stopped the gateway.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rich.table import Table

from sim_hardware.harness.provisioning import Meter, queued
from sim_hardware.harness.scenario import Scenario

# A firmware log line; fleets of CPython meters prefix each line with the meter id.
APPLIED = re.compile(rb"^(?:([\w-]+) )?award iv (\d+) q -?\d+ -> grid -?\d+ W at (\d+)", re.M)
# gateway/interval/scheduler.py, one line per clearing: its bids and the simulated seconds left
# before the interval opened once the awards were built.
CLEARED = re.compile(rb"cleared interval (\d+): (\d+) bids, .*; (-?\d+) s to spare\)$", re.M)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class InvariantReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def table(self) -> Table:
        table = Table(title="invariants")
        table.add_column("check")
        table.add_column("result")
        table.add_column("detail")
        for c in self.checks:
            table.add_row(c.name, "[green]ok[/]" if c.ok else "[red]FAILED[/]", c.detail)
        return table


class StoppedRun(Protocol):
    """What the checks read of a run after it stopped (CommunityRun in
    sim_hardware/harness/community.py is one)."""

    @property
    def scenario(self) -> Scenario: ...
    @property
    def out(self) -> Path: ...  # the processes' logs are in out/logs
    @property
    def db_path(self) -> Path: ...
    @property
    def meters(self) -> Sequence[Meter]: ...
    @property
    def end_iv(self) -> int: ...


def check(community: StoppedRun) -> InvariantReport:
    with contextlib.closing(sqlite3.connect(f"file:{community.db_path}?mode=ro", uri=True, timeout=30)) as db:
        return InvariantReport([
            records_exactly_once(community, db),
            ledger_verifies(community.db_path),
            intervals_balance(db),
            awards_in_their_interval(community),
            cleared_in_time(community),
        ])


def produced(meter: Meter) -> int:
    """How many records the meter made: its next sequence number (records start at 0)."""
    state = meter.folder / "state.json"
    return int(json.loads(state.read_text())["seq"]) if state.exists() else 0


def records_exactly_once(community: StoppedRun, db: sqlite3.Connection) -> Check:
    """Records of the scenario's intervals are stored once each; only records of intervals
    after its end may still sit in a queue (the meters were stopped while still producing)."""
    problems: list[str] = []
    total = 0
    waiting_by_meter: dict[str, set[int]] = {}
    for meter_id, seq, iv in queued(community.meters):
        waiting_by_meter.setdefault(meter_id, set()).add(seq)
    for meter_id, seq, iv in queued(community.meters, community.end_iv):
        problems.append(f"{meter_id}: seq {seq} (iv {iv}) never acknowledged")
    for meter in community.meters:
        made = produced(meter)
        total += made
        # A quarantined record (gateway/ingest/store.py: e.g. of an interval before the gateway's
        # first) is in the ledger too, kept aside from settlement.
        seqs = Counter(s for (s,) in db.execute("SELECT seq FROM readings WHERE meter=? UNION ALL"
                                                " SELECT seq FROM quarantine WHERE meter=?", (meter.meter,) * 2))
        waiting = waiting_by_meter.get(meter.meter, set())
        missing = [s for s in range(made) if s not in seqs and s not in waiting]
        twice = sorted(s for s, n in seqs.items() if n > 1)
        unknown = sorted(s for s in seqs if not 0 <= s < made)
        unledgered = db.execute(
            "SELECT COUNT(*) FROM readings r LEFT JOIN leaves l ON l.idx=r.leaf"
            " WHERE r.meter=? AND (l.idx IS NULL OR l.kind!='reading')", (meter.meter,)).fetchone()[0]
        for what, items in (("missing", missing), ("stored twice", twice), ("unknown", unknown)):
            if items:
                problems.append(f"{meter.meter}: {len(items)} {what} (e.g. seq {items[:5]})")
        if unledgered:
            problems.append(f"{meter.meter}: {unledgered} readings without a ledger leaf")
    detail = "; ".join(problems[:8]) if problems else f"{total} records from {len(community.meters)} meters"
    return Check("every record in the ledger exactly once", not problems, detail)


def ledger_verifies(db_path: Path) -> Check:
    result = subprocess.run([sys.executable, "-m", "tmeter", "ledger", "verify", "--db", str(db_path)],
                            capture_output=True, text=True, timeout=600)
    lines = (result.stdout + result.stderr).strip().splitlines()
    return Check("tmeter ledger verify", result.returncode == 0, lines[-1] if lines else "")


def intervals_balance(db: sqlite3.Connection) -> Check:
    """Settled intervals balance at the feeder. Intervals where some meter's record is missing
    or flagged inexact (outage, reset, partial) are undecided by design and only counted."""
    rows = db.execute("SELECT iv, balanced, feeder_diff_wh FROM intervals WHERE state='settled' ORDER BY iv").fetchall()
    bad = [(iv, diff) for iv, balanced, diff in rows if balanced == 0]
    checked = sum(1 for _iv, balanced, _d in rows if balanced is not None)
    undecided = len(rows) - checked
    name = "settled intervals balance at the feeder"
    if not checked:
        return Check(name, False, f"{len(rows)} intervals settled, none could be checked")
    detail = (f"{checked} intervals balance within tolerance, {undecided} undecided (inexact data)" if not bad else
              f"{len(bad)} of {checked} do not balance: " +
              ", ".join(f"iv {iv} (diff {diff} Wh)" for iv, diff in bad[:5]))
    return Check(name, not bad, detail)


def awards_in_their_interval(community: StoppedRun) -> Check:
    interval_ms = community.scenario.interval_s * 1000
    applied, late = 0, []
    for log_path in sorted((community.out / "logs").glob("*.log")):
        for match in APPLIED.finditer(log_path.read_bytes()):
            meter = (match[1] or log_path.stem.encode()).decode()
            iv, at_ms = int(match[2]), int(match[3])
            applied += 1
            if not iv * interval_ms <= at_ms < (iv + 1) * interval_ms:
                late.append(f"{meter} iv {iv} at {at_ms // 1000}")
    detail = f"{applied} awards applied, all inside their interval" if not late else "; ".join(late[:5])
    return Check("no award applied outside its interval", applied > 0 and not late,
                 detail if applied else "no award was applied at all")


def cleared_in_time(community: StoppedRun) -> Check:
    """Every interval with bids cleared within its gate budget: awards out before it opened."""
    name = "every interval cleared before it opened"
    log = community.out / "logs" / "gateway.log"
    spare = {int(m[1]): int(m[3]) for m in CLEARED.finditer(log.read_bytes() if log.exists() else b"")
             if int(m[2])}
    late = sorted(iv for iv, s in spare.items() if s < 0)
    if not spare:
        return Check(name, False, "no interval with bids was cleared")
    if late:
        # A scenario's faults (a gateway restart, a clock jump held) stop the clearing for a
        # while by design: intervals whose gate passed then are cleared late, and say so.
        faults = community.scenario.faults
        return Check(name, bool(faults), f"{len(late)} of {len(spare)} late"
                     + (" (during the scenario's faults), " if faults else ", ")
                     + ", ".join(f"iv {iv} by {-spare[iv]} s" for iv in late[:5]))
    gate = community.scenario.gate_closure_s
    return Check(name, True, f"{len(spare)} intervals, at least {min(spare.values())} s of the "
                             f"{gate} s gate budget to spare")
