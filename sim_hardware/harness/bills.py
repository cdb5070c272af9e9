"""The demo's money: each simulated household's bill in the community (from the gateway's
settled lines, gateway/bills.py) against the same household alone on the same day
(sim_hardware/simulator/alone.py), which the simulator can know because it is the same model.

The alone run does not depend on the community run, so it is computed once, before the
community starts, and the live table can show the money of every interval as it settles.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

from gateway.bills import AloneFile, MemberBill, member_bills, settled_amounts, write_alone, write_bills
from sim_hardware.harness.buses import sim_config
from sim_hardware.harness.scenario import Scenario
from sim_hardware.simulator.alone import community_alone

REFRESH_S = 2.0  # the live table reads the database at most this often


class DemoBills:
    """Bills of one scenario's households, alone known up front, in the community as settled."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        kinds = sim_config(scenario).kinds()
        self.alone = community_alone(scenario.meters, scenario.seed, scenario.profile, kinds, scenario.start,
                                     scenario.end, scenario.interval_s, scenario.import_price,
                                     scenario.export_price)
        self._alternative = AloneFile({(m, x.iv): x.amount for m, rows in self.alone.items() for x in rows})
        self._cached: list[MemberBill] = []
        self._read_at = 0.0

    @property
    def intervals(self) -> tuple[int, int]:
        """The scenario's first and last market interval: the period every bill covers."""
        sc = self.scenario
        return sc.start // sc.interval_s, sc.end // sc.interval_s - 1

    def bills(self, db: Path) -> list[MemberBill]:
        """Every household's bill over the settled intervals of the scenario so far."""
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
            return member_bills(conn, self._alternative, *self.intervals)

    def by_interval(self, db: Path) -> list[tuple[int, int, int]]:
        """(interval, members' bill in the community, their bills alone) per settled interval."""
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
            rows = settled_amounts(conn, *self.intervals)
        out: dict[int, list[int]] = {}
        for meter, iv, paid_to in rows:
            acc = out.setdefault(iv, [0, 0])
            acc[0] -= paid_to
            acc[1] += self._alternative.bill(meter, iv, 0, 0)
        return [(iv, c, a) for iv, (c, a) in sorted(out.items())]

    def live(self, db: Path) -> list[MemberBill]:
        """``bills``, re-read at most every REFRESH_S; nothing (yet) while the database is busy or absent."""
        if time.monotonic() - self._read_at >= REFRESH_S:
            self._read_at = time.monotonic()
            with contextlib.suppress(sqlite3.Error):
                self._cached = self.bills(db)
        return self._cached

    def write(self, db: Path, out: Path) -> list[MemberBill]:
        """``out``/alone.csv (per household and interval) and ``out``/bills.csv (per household)."""
        write_alone(out / "alone.csv", self.alone)
        bills = self.bills(db)
        write_bills(out / "bills.csv", bills)
        return bills
