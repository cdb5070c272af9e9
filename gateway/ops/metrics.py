"""Prometheus metrics of the gateway, read at scrape time from what the daemon already keeps.

No second bookkeeping: a custom collector turns the daemon's counters, queue, health and clock
into metric families when /metrics is asked for, and reads the rest (intervals by state, the
settlement lag, ledger size, each meter's last-seen time) from the database through a read-only
connection of its own in a worker thread, so a scrape never waits behind the writer thread and
never writes. Names follow the Prometheus conventions (https://prometheus.io/docs/practices/naming/):
the ``tmeter_`` prefix, base units in the name (seconds, bytes), ``_total`` on counters.

The daemon's counters are one flat namespace (gateway/daemon.py ``counters``); each lands in
exactly one family: what ingest took in (``tmeter_ingest_messages_total{outcome}``), operational
events (``tmeter_gateway_events_total{event}``), and every other name, which is a reason a
message was refused (``tmeter_ingest_rejected_total{reason}``: the ProtocolError and Rejected
codes, an open set that grows with the protocol).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric,
                                    SummaryMetricFamily)
from prometheus_client.registry import Collector

from gateway import db

# The daemon's Gateway (gateway/daemon.py) is passed in, typed as Any: the daemon imports this
# module, and an import back (even for types only) would make a circle of the two.
Gateway = Any

log = logging.getLogger("tmeter.gateway.metrics")

# The classic text format: every name here is a legacy-valid one, so the exposition is the same in
# 0.0.4 and 1.0.0 (prometheus-client's default since 0.22), and 0.0.4 is what every scraper reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DB_TIMEOUT_S = 5.0  # a scrape gives up on the database after this long (its other metrics still go out)
BUSY_MS = 1000

# What ingest took in, by outcome (gateway/ingest/store.py).
ACCEPTED = frozenset({"stored", "duplicate", "quarantined", "bid", "status"})
# The daemon's operational events: clearing, settlement, connections, export, the clock.
EVENTS = frozenset({
    "cleared", "cleared_late", "settled", "adjusted", "clearing_failed", "p2p_unplaced", "award_trades_cut",
    "unbalanced_interval", "scheduler_error", "ingest_batches", "publish_failed", "mqtt_disconnects",
    "subscribe_refused", "keys_retired", "influx_points", "influx_errors", "db_replaced", "clock_hold",
    "clock_jump", "clock_rebased", "clock_confirmed", "up_restarts", "down_restarts", "homeassistant_failed",
})
# gateway/daemon.py ``problems``: each exported as 0 or 1, so an alert rule has a series to watch.
PROBLEMS = ("storage", "clock", "scheduler", "stalled", "disconnected")


def family(counter: str) -> str:
    """Which counter family a daemon counter belongs to: 'accepted', 'event' or 'rejected'."""
    if counter in ACCEPTED:
        return "accepted"
    return "event" if counter in EVENTS else "rejected"


class TimedClear:
    """The market's clearing function, timed (count, sum and the last duration, in seconds):
    the clearing time exists nowhere else but in a log line."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.count = 0
        self.total_s = 0.0
        self.last_s: float | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            took = time.perf_counter() - started
            self.total_s += took  # sum before count: a scrape between them sees a mean no smaller
            self.count += 1
            self.last_s = took


@dataclass(frozen=True)
class DbFacts:
    intervals: dict[str, int]  # state -> how many
    oldest_unsettled: int | None  # the oldest interval not settled yet
    leaves: int
    checkpoints: int
    checkpoint_leaves: int  # size of the latest signed checkpoint
    meters: int
    last_seen: dict[str, float]  # meter -> newest received time (status or reading), gateway clock
    outbox: int
    db_bytes: int


def read_facts(path: str | Path, community: str) -> DbFacts:
    """One consistent read of the database (worker thread: the connection lives and dies here)."""
    conn = db.connect_readonly(path)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
        conn.execute("BEGIN")  # one snapshot for every query below
        return _facts(conn, path, community)
    finally:
        conn.close()


def _facts(conn: sqlite3.Connection, path: str | Path, community: str) -> DbFacts:
    one = lambda sql, *a: conn.execute(sql, a).fetchone()[0]  # noqa: E731
    last_seen: dict[str, float] = {}
    # The newest reading by (boot, seq) is found on the readings' unique index; MAX(received)
    # over a meter's readings would read a year of rows on every scrape.
    for meter, status_at, reading_at in conn.execute(
            "SELECT m.meter, (SELECT received FROM meter_status s WHERE s.meter = m.meter),"
            " (SELECT received FROM readings r WHERE r.meter = m.meter ORDER BY boot DESC, seq DESC LIMIT 1)"
            " FROM meters m WHERE m.community = ?", (community,)):
        seen = [t for t in (status_at, reading_at) if t is not None]
        if seen:
            last_seen[meter] = max(seen)
    return DbFacts(
        intervals=dict(conn.execute("SELECT state, COUNT(*) FROM intervals GROUP BY state").fetchall()),
        oldest_unsettled=one("SELECT MIN(iv) FROM intervals WHERE state != 'settled'"),
        leaves=one("SELECT COALESCE(MAX(idx) + 1, 0) FROM leaves"),  # idx is 0.. in log order
        checkpoints=one("SELECT COUNT(*) FROM checkpoints"),
        checkpoint_leaves=one("SELECT COALESCE(MAX(size), 0) FROM checkpoints"),
        meters=one("SELECT COUNT(*) FROM meters WHERE community = ?", community),
        last_seen=last_seen, outbox=one("SELECT COUNT(*) FROM outbox"), db_bytes=_db_bytes(path))


def _db_bytes(path: str | Path) -> int:
    total = 0
    for name in (str(path), f"{path}-wal"):
        try:
            total += os.stat(name).st_size
        except FileNotFoundError:
            pass
    return total


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class GatewayCollector(Collector):
    """The daemon's state at one instant as metric families (built per scrape)."""

    def __init__(self, gw: Gateway, now: float, facts: DbFacts | None) -> None:
        self.gw = gw
        self.now = now
        self.facts = facts

    def collect(self) -> Iterator[Metric]:
        yield from self._counters()
        yield from self._daemon()
        yield from self._clearing()
        yield _gauge("tmeter_database_readable", "1 when this scrape could read the database",
                     0 if self.facts is None else 1)
        if self.facts is not None:
            yield from self._database(self.facts)

    def _counters(self) -> Iterator[Metric]:
        accepted = CounterMetricFamily("tmeter_ingest_messages", "Meter messages ingest took in, by outcome",
                                       labels=["outcome"])
        rejected = CounterMetricFamily("tmeter_ingest_rejected", "Meter messages refused, by reason (not stored)",
                                       labels=["reason"])
        events = CounterMetricFamily("tmeter_gateway_events", "Operational events of the daemon", labels=["event"])
        by_family = {"accepted": accepted, "rejected": rejected, "event": events}
        counts = dict(self.gw.counters)  # a copy: the event loop's counters may change meanwhile
        for name in sorted(ACCEPTED - counts.keys()):
            accepted.add_metric([name], 0)  # present from the first scrape: rate() needs a start
        for name, value in sorted(counts.items()):
            by_family[family(name)].add_metric([name], value)
        yield from (accepted, rejected, events)

    def _daemon(self) -> Iterator[Metric]:
        gw, problems = self.gw, dict(self.gw.problems())
        yield InfoMetricFamily("tmeter_gateway", "The gateway's community and ledger origin",
                               value={"community": gw.cfg.community, "origin": gw.cfg.origin})
        yield _gauge("tmeter_healthy", "1 when /health says ok, else 0", 0 if problems else 1)
        problem = GaugeMetricFamily("tmeter_problem", "1 while this problem keeps the gateway from its job",
                                    labels=["code"])
        for code in sorted(set(PROBLEMS) | problems.keys()):
            problem.add_metric([code], 1 if code in problems else 0)
        yield problem
        yield _gauge("tmeter_mqtt_connected", "1 while every broker connection is up", 1 if gw.connected else 0)
        yield _gauge("tmeter_ingest_queue_messages", "Verified messages waiting for the database", gw.queue.qsize())
        yield _gauge("tmeter_ingest_queue_limit_messages", "Capacity of the ingest queue", gw.queue.total)
        yield _gauge("tmeter_current_interval", "Index of the current interval", gw.current_iv)
        yield _gauge("tmeter_interval_length_seconds", "Length of an interval", gw.cfg.interval_s)
        yield _gauge("tmeter_clock_seconds", "The gateway's believed time (unix seconds)", self.now)

    def _clearing(self) -> Iterator[Metric]:
        timer = self.gw.clear
        if not isinstance(timer, TimedClear):
            return
        yield SummaryMetricFamily("tmeter_clearing_duration_seconds", "Time the market took to clear an interval",
                                  count_value=timer.count, sum_value=timer.total_s)
        if timer.last_s is not None:
            yield _gauge("tmeter_clearing_last_duration_seconds", "Duration of the latest clearing", timer.last_s)

    def _database(self, f: DbFacts) -> Iterator[Metric]:
        states = GaugeMetricFamily("tmeter_intervals", "Intervals by state", labels=["state"])
        for state in sorted({"open", "cleared", "settled"} | f.intervals.keys()):
            states.add_metric([state], f.intervals.get(state, 0))
        yield states
        lag = 0.0
        if f.oldest_unsettled is not None:
            lag = max(0.0, self.now - self.gw.scheduler.settle_due(f.oldest_unsettled))
        yield _gauge("tmeter_settlement_lag_seconds",
                     "Now minus the settle-due time of the oldest unsettled past interval (0: none late)", lag)
        yield _gauge("tmeter_ledger_leaves", "Leaves in the ledger's Merkle tree", f.leaves)
        yield _gauge("tmeter_ledger_checkpoints", "Signed checkpoints of the ledger", f.checkpoints)
        yield _gauge("tmeter_ledger_checkpoint_leaves", "Tree size of the latest signed checkpoint",
                     f.checkpoint_leaves)
        yield _gauge("tmeter_meters", "Meters provisioned in the community", f.meters)
        seen = GaugeMetricFamily("tmeter_meter_last_seen_age_seconds",
                                 "Seconds since the meter's last status or reading (gateway clock)", labels=["meter"])
        for meter, at in sorted(f.last_seen.items()):
            seen.add_metric([meter], max(0.0, self.now - at))
        yield seen
        yield _gauge("tmeter_influx_outbox_points", "Points waiting for InfluxDB in the outbox", f.outbox)
        yield _gauge("tmeter_database_size_bytes", "Database file and its write-ahead log", f.db_bytes)


class Scraper:
    """Answers /metrics for one gateway: one scrape at a time, the database read off the loop."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self._lock = asyncio.Lock()

    async def facts(self) -> DbFacts | None:
        if self.gw.db_gone:
            return None  # the path names another file (or none): nothing there is ours
        try:
            return await asyncio.wait_for(asyncio.to_thread(read_facts, self.gw.cfg.db, self.gw.cfg.community),
                                          DB_TIMEOUT_S)
        except (sqlite3.Error, OSError, TimeoutError) as exc:
            log.warning("metrics: database not readable (%s); scraped without its metrics", exc)
            return None

    async def __call__(self) -> tuple[bytes, str]:
        async with self._lock:
            facts = await self.facts()
            registry = CollectorRegistry(auto_describe=False)
            registry.register(GatewayCollector(self.gw, self.gw.clock.now(), facts))
            ProcessCollector(registry=registry)  # memory, CPU, open files of the daemon
            return generate_latest(registry), CONTENT_TYPE
