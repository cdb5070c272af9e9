"""The gateway daemon's life cycle: open the database, connect to the broker, run ingest, the
scheduler, status and export until told to stop; reconnect with backoff when the broker goes.

Meters' messages come in and their acks go out through two pump processes (gateway/ingest/pump.py);
this process verifies, stores and clears, and keeps an aiomqtt connection of its own for what
it publishes to the community (awards, results, checkpoints, its status and last will).

In-process use (demo, bench, tests)::

    gw = GatewayThread(cfg).start()      # returns once subscribed; gw.gateway.snapshot()
    ...
    gw.stop()

or, inside an event loop, ``await Gateway(cfg).run(stop_event)``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt

from gateway import db
from gateway.ledger import note
from gateway.ops import homeassistant, sdnotify
from gateway.interval.clearing import ClearFn, market_clear
from gateway.clock import Clock, pause
from gateway.ingest.codec import AckOrder, Outgoing, Verified
from gateway.config import GatewayConfig
from gateway.ingest.fairqueue import FairQueue
from gateway.ingest.store import Ingest
from gateway.ledger.tlog import Ledger
from gateway.ingest.frames import PumpSettings
from gateway.ingest.pump import Pump
from gateway.interval.scheduler import Scheduler
from gateway.ops.metrics import Scraper, TimedClear
from gateway.web.app import create_app
from gateway.web.member import MemberSite
from gateway.web.runner import WebServer
from protocols import canonical, messages, topics

log = logging.getLogger("tmeter.gateway")
# aiomqtt warns on every publish beyond ten in flight; the scheduler publishes a community's
# awards at once by design, so only its errors are worth a log line.
mqtt_log = logging.getLogger("tmeter.gateway.mqtt")
mqtt_log.setLevel(logging.ERROR)
T = TypeVar("T")

RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 30.0
MAX_TICK_S = 1.0  # the scheduler looks at least this often (real seconds) for late readings
STALL_S = 60.0  # no scheduler tick for this long: unhealthy, stop feeding the systemd watchdog
MAX_IN_FLIGHT = 100  # paho's window for the control plane's (awaited) publishes
STATUS_COUNTERS = 24
SHUTDOWN_WAIT_S = 5.0
STORE_STALL_S = 5.0  # a batch waiting this long for the database (locked, slow disk): unhealthy
DB_GONE = "database replaced or removed"
WITNESSES = 2  # meters whose readings' t1 must agree before the clock is believed (fewer if fewer exist)


class StorageError(Exception):
    """The database cannot be used as configured: one line for the operator (exit 2)."""


def check_storage(cfg: GatewayConfig, init: bool) -> None:
    """Refuse to start a second ledger by accident: a missing database beside an existing ledger
    key (or beside its -wal file) needs ``--init``; ``--init`` only ever creates a database that
    does not exist, so it cannot stay in a unit file and hide a lost one. The very first run
    (neither database nor key) needs no ``--init``: nothing can be lost."""
    path, key = Path(cfg.db), cfg.key_path
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    if path.exists():
        if init:
            raise StorageError(f"{path} exists: --init only creates a new database, it never replaces one")
        if not key.exists() and _has_leaves(path):
            raise StorageError(f"ledger key {key} is missing for the ledger in {path}: restore it "
                               "(a new key would start a second ledger under the same origin)")
        return
    if (key.exists() or wal.exists()) and not init:
        raise StorageError(f"{path} is missing but its ledger exists ({key if key.exists() else wal}): restore the "
                           f"database (a copy saved as {path}.rescued-* if the daemon saw it go), or start a new "
                           "ledger with --init")
    for stale in (wal, shm):  # a WAL left by another database file would be replayed into the new one
        stale.unlink(missing_ok=True)


def _has_leaves(path: Path) -> bool:
    conn = db.connect_readonly(path)
    try:
        return conn.execute("SELECT 1 FROM leaves LIMIT 1").fetchone() is not None
    except sqlite3.DatabaseError:
        return False  # not a ledger (yet): provisioned meters only, or no tables
    finally:
        conn.close()


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class DatabaseGone(Exception):
    """The file at the database's path is no longer the one this process has open."""


class Gateway:
    def __init__(self, cfg: GatewayConfig, clear: ClearFn | None = None, clock: Clock | None = None,
                 init: bool = False) -> None:
        self.cfg = cfg
        self.init = init  # may create a new database beside an existing ledger key (``run --init``)
        self.clock = clock or Clock(cfg.clock, jump_s=cfg.settlement.clock_jump_s)
        self.counters: Counter[str] = Counter()
        self.clear = TimedClear(clear or market_clear)  # its durations are a metric (ops/metrics.py)
        self.control_up = asyncio.Event()  # the aiomqtt connection for awards, results, status
        self.ready = threading.Event()  # set once all connections are up: records are taken in
        self.started = time.monotonic()
        self.last_tick = time.monotonic()
        self.current_iv = messages.interval_index(self.clock.now(), cfg.interval_s)
        self.latest_checkpoint: dict[str, Any] | None = None
        self.queue = FairQueue(cfg.ingest.per_meter_queue, cfg.ingest.total_queue, self._dropped)
        self._dbx = ThreadPoolExecutor(1, thread_name_prefix="tmeter-db")  # the one writer thread
        self.uplink: Pump | None = None
        self.downlink: Pump | None = None
        self._ingest_tasks: list[asyncio.Task[None]] = []
        self.status_server: WebServer | None = None  # /status, /health, /metrics (gateway/web/)
        self.exporter: Any = None
        self._db_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we opened
        self.db_gone = False
        self.store_error: str | None = None  # why the last batch was not stored; None once one is
        self._store_since: float | None = None  # monotonic start of the batch in the database thread
        self.scheduler_errors = 0  # consecutive failed ticks
        self.scheduler_error: str | None = None
        self.clock_hold: str | None = None  # why nothing is cleared or settled: the time is in doubt
        self._meters_time = False  # the believed time was taken from the meters, not the wall clock
        self._witness: dict[str, float] = {}  # meter -> max(t1 - our time at arrival) while in doubt
        self._witnesses = WITNESSES
        self._jumped = False  # the wall clock was off at the last look (counted once per jump)

    def _dropped(self, meter: str) -> None:
        self.counters["queue_full"] += 1

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._dbx, fn, *args)

    def _open(self) -> None:
        """Runs in the database thread: every sqlite object lives and is used there."""
        check_storage(self.cfg, self.init)
        self.conn = db.connect(self.cfg.db, self.cfg.synchronous)
        self._db_id = _file_id(self.cfg.db)
        key = note.load_or_create_signing_key(self.cfg.key_path)
        self.ledger = Ledger(self.conn, self.cfg.origin, key)
        export = None
        if self.cfg.influx.enabled:
            from gateway.ops.influx import line_builder  # noqa: PLC0415 - optional dependency

            export = line_builder(self.cfg.community)
        self.ingest = Ingest(self.cfg, self.conn, self.ledger, self.clock, self.counters, export)
        self.scheduler = Scheduler(self.cfg, self.conn, self.ledger, self.clear, self.counters, export)
        latest = self.ledger.latest_checkpoint()
        if latest:
            self._note_checkpoint(latest[0].size, latest[0].root_b64)
        self._witnesses = max(1, min(WITNESSES, len(self.scheduler.registry.meters(self.cfg.community))))
        self.clock_hold = self._clock_against_ledger()
        if self.clock_hold:
            self.counters["clock_hold"] += 1
            log.error("%s", self.clock_hold)

    def _clock_against_ledger(self) -> str | None:
        """At start: a clock behind what the ledger already did, or far ahead of its last activity
        (down that long, or jumped: the meters' readings will tell) is not believed yet."""
        now, jump = self.clock.now(), self.cfg.settlement.clock_jump_s
        last = self.conn.execute(
            "SELECT MAX(t) FROM (SELECT MAX(received) t FROM readings UNION ALL SELECT MAX(received) FROM meter_status"
            " UNION ALL SELECT MAX(settled_at) FROM intervals)").fetchone()[0]
        cleared = self.conn.execute("SELECT MAX(iv) FROM intervals WHERE state != 'open'").fetchone()[0]
        if cleared is not None and now < self.scheduler.gate(cleared) - jump:
            return (f"clock behind the ledger: interval {cleared} was cleared at "
                    f"{self.scheduler.gate(cleared):.0f}, {self.scheduler.gate(cleared) - now:.0f} s after now; "
                    "holding the scheduler until the meters confirm the time")
        if last is not None and now < last - jump:
            return (f"clock behind the ledger by {last - now:.0f} s; holding the scheduler until the meters "
                    "confirm the time")
        if cleared is not None:  # running, it clears an interval at every gate closure
            last = max(last or 0.0, self.scheduler.gate(cleared) + self.cfg.interval_s)
        if last is not None and now > last + jump:
            return (f"clock {now - last:.0f} s ahead of the ledger's last activity (down that long, or the "
                    "clock jumped); holding the scheduler until the meters confirm the time")
        return None

    # --- the clock's witnesses: the meters' own (NTP-synchronised) times

    def _witness_readings(self, verified: list[Verified]) -> None:
        if self.clock_hold is None and self.clock.jump == 0.0:
            return
        now = self.clock.now()
        for v in verified:
            msg = v[3]
            if msg.get("type") == "reading" and v[1] == self.cfg.community:
                meter = msg["meter"]
                self._witness[meter] = max(self._witness.get(meter, -1e18), msg["t1"] - now)

    def _judge_clock(self) -> None:
        """Believe the wall clock once the meters agree with it; take the meters' time when they
        agree with each other against ours (readings are never from the future, and the freshest
        is at most an interval old); release the scheduler only on a time the meters confirmed
        and that is not theirs alone."""
        self.clock.now()  # brings clock.jump up to date
        jumped = self.clock.jump != 0.0
        if jumped and not self._jumped:
            self.counters["clock_jump"] += 1
            log.error("wall clock jumped %+.0f s against the monotonic clock; going on from the last believed "
                      "time until the meters confirm one of them", self.clock.jump)
        self._jumped = jumped
        if self.clock_hold is None and self.clock.jump == 0.0:
            self._witness.clear()
            return
        if len(self._witness) < self._witnesses:
            return
        offsets = sorted(self._witness.values())
        ours = offsets[len(offsets) // 2]  # median: one meter with a wrong clock decides nothing
        wall = ours - self.clock.jump
        jump = self.cfg.settlement.clock_jump_s
        if abs(wall) <= jump:
            self.clock.believe_wall()
            self._release("the meters confirm the wall clock")
        elif abs(ours) <= jump and not self._meters_time:
            self._release(f"the meters confirm the monotonic clock; the wall clock is {self.clock.jump:+.0f} s off")
        elif ours > jump or ours < -(self.cfg.interval_s + jump):
            self.clock.set_now(self.clock.now() + ours)
            self._meters_time = True
            self._witness.clear()
            self.counters["clock_rebased"] += 1
            self.clock_hold = (f"the meters' time differs from the wall clock by {-self.clock.jump:+.0f} s: "
                               "taking bids and readings on the meters' time, clearing and settling nothing "
                               "until the wall clock agrees")
            log.error("%s", self.clock_hold)

    def _release(self, why: str) -> None:
        if self.clock_hold is not None:
            self.counters["clock_confirmed"] += 1
            log.warning("clock: %s; the scheduler resumes", why)
        self.clock_hold = None
        self._meters_time = False
        self._witness.clear()

    def _note_checkpoint(self, size: int, root_b64: str) -> None:
        self.latest_checkpoint = {"origin": self.cfg.origin, "size": size, "root": root_b64}

    # --- the database file's identity (database thread)

    def _check_db(self) -> None:
        """Raise DatabaseGone if the path no longer names the file we have open (``rm``, or a
        file moved over it): what we would write or ack then is in no file anyone will open."""
        if self.db_gone:
            raise DatabaseGone(DB_GONE)
        if _file_id(self.cfg.db) == self._db_id:
            return
        self.db_gone = True
        self.counters["db_replaced"] += 1
        rescued = self._rescue()
        log.error("%s: %s; nothing is stored or acked and nothing settled from now on; %s", DB_GONE,
                  self.cfg.db, rescued)
        raise DatabaseGone(DB_GONE)

    def _rescue(self) -> str:
        """Save the orphaned database (still open here) beside the path, then close it, so SQLite
        removes its -wal file and no later database at the path replays it."""
        target = Path(f"{self.cfg.db}.rescued-{int(time.time())}")
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            copy = sqlite3.connect(str(target))
            try:
                self.conn.backup(copy)  # reads only: the orphan is not written
            finally:
                copy.close()
        except (OSError, sqlite3.Error) as exc:
            return (f"could not save it as {target} ({exc}); it stays readable as /proc/{os.getpid()}/fd/* "
                    "until this process exits")
        self.conn.close()
        if not Path(self.cfg.db).exists():
            # The pumps' readers keep the orphan's -wal alive, so SQLite leaves it: left at the path
            # it would be replayed into whatever database is put there next.
            for name in (f"{self.cfg.db}-wal", f"{self.cfg.db}-shm"):
                Path(name).unlink(missing_ok=True)
        return f"the open database was saved as {target}: stop the daemon, move it to {self.cfg.db}, start again"

    def _store(self, batch: list[Verified]) -> list[AckOrder]:
        """Store a batch; acks only if the file at the path is still the one written to, before
        and after the commit (one stat each)."""
        self._check_db()
        acks = self.ingest.store(batch)
        self._check_db()
        return acks

    def _tick(self, now: float) -> list[Outgoing]:
        self._check_db()
        return self.scheduler.tick(now)

    def _final_checkpoint(self) -> list[Outgoing]:
        return [] if self.db_gone else self.scheduler.checkpoint()

    def _close_db(self) -> None:
        if hasattr(self, "conn"):
            self.conn.close()  # closing twice (after a rescue) is a no-op

    # --- status

    @property
    def connected(self) -> bool:
        pumps = (self.uplink, self.downlink)
        return self.control_up.is_set() and all(p is not None and p.up.is_set() for p in pumps)

    def problems(self) -> list[tuple[str, str]]:
        """(code, reason) of everything that keeps the gateway from doing its job right now."""
        found: list[tuple[str, str]] = []
        if self.db_gone:
            found.append(("storage", f"{DB_GONE}: {self.cfg.db}"))
        elif self.store_error is not None:
            found.append(("storage", f"readings cannot be stored: {self.store_error}"))
        since = self._store_since
        if since is not None and time.monotonic() - since > STORE_STALL_S:
            found.append(("storage", f"a batch has waited {time.monotonic() - since:.0f} s for the database "
                                     "(locked by another process, or the disk is not answering)"))
        if self.clock_hold is not None:
            found.append(("clock", self.clock_hold))
        elif self.clock.jump != 0.0:
            found.append(("clock", f"wall clock jumped: {self.clock.jump:+.0f} s off the monotonic clock; "
                                   "running on the monotonic clock from the last believed time"))
        if self.scheduler_error is not None:
            found.append(("scheduler", f"scheduler failing ({self.scheduler_errors} consecutive errors, last: "
                                       f"{self.scheduler_error})"))
        if time.monotonic() - self.last_tick > STALL_S and not self.db_gone:
            found.append(("stalled", f"no scheduler tick for {time.monotonic() - self.last_tick:.0f} s"))
        if not self.connected:
            found.append(("disconnected", "not connected to the broker"))
        return found

    def health(self) -> str:
        found = self.problems()
        return found[0][0] if found else "ok"

    def snapshot(self) -> dict[str, Any]:
        found = self.problems()
        return {
            "health": found[0][0] if found else "ok", "reasons": [r for _, r in found],
            "community": self.cfg.community, "mqtt_connected": self.connected,
            "interval": self.current_iv, "interval_s": self.cfg.interval_s, "queue": self.queue.qsize(),
            "counters": dict(self.counters), "checkpoint": self.latest_checkpoint,
            "uptime_s": round(time.monotonic() - self.started, 1),
        }

    def _status_message(self, online: int) -> bytes:
        top = sorted(self.counters.items(), key=lambda kv: (-kv[1], kv[0]))[:STATUS_COUNTERS]
        counters = {k: min(v, messages.MAX_COUNT) for k, v in top if topics.valid_id(k)}
        return messages.encode(messages.gateway_status(int(self.clock.now()), online, self.current_iv, counters))

    # --- the loops

    async def _publish(self, client: aiomqtt.Client, o: Outgoing) -> None:
        try:
            await client.publish(o.topic, o.payload, qos=o.qos, retain=o.retain, timeout=30)
        except Exception as exc:  # noqa: BLE001 - a lost message is re-sent or superseded
            self.counters["publish_failed"] += 1
            log.debug("publish to %s failed: %s", o.topic, exc)

    def _send_acks(self, orders: list[AckOrder]) -> None:
        if self.downlink is not None:
            self.downlink.send_acks(orders)

    async def _send(self, client: aiomqtt.Client, out: list[Outgoing]) -> None:
        """Publish awards, results, checkpoints: few, and each confirmed."""
        await asyncio.gather(*(self._publish(client, o) for o in out))

    async def _ingest_loop(self) -> None:
        """Store and ack batches until the queue is closed and empty (``_stop_ingest``)."""
        while batch := await self.queue.get_batch(self.cfg.ingest.batch):
            self.counters["ingest_batches"] += 1
            self._store_since = time.monotonic()
            try:
                acks = await self._db(self._store, batch)
            except DatabaseGone:  # nothing acked: the meters keep their records
                self.counters["store_refused"] += len(batch)
                continue
            except Exception as exc:  # noqa: BLE001 - e.g. disk full: nothing stored, nothing acked
                self.counters["store_failed"] += len(batch)
                self.store_error = _short(exc)
                log.exception("could not store a batch of %d; the meters will send it again", len(batch))
                await asyncio.sleep(1.0)
                continue
            finally:
                self._store_since = None
            self.store_error = None
            self._send_acks(acks)

    def _start_ingest(self) -> None:
        m = self.cfg.mqtt
        log_level = logging.getLevelName(logging.getLogger().getEffectiveLevel())

        def settings(name: str, subscribe: list[str]) -> PumpSettings:
            # One login per connection (registry.gateway_logins): the broker makes the user name
            # the client id, so no meter can take over the pumps' sessions (mosquitto_conf.py).
            user = f"{m.user}-{name}" if m.user else m.user
            return PumpSettings(name, m.host, m.port, f"{m.client_id}-{name}", subscribe, user, m.password,
                                m.tls, m.ca, m.keepalive_s, self.cfg.ingest.ack_window, log_level,
                                str(self.cfg.db), self.cfg.community, self.cfg.ingest.ack_qos)

        uplink = [topics.meter_filter(self.cfg.community, k) for k in topics.METER_UP]
        self.uplink = Pump(settings("up", uplink), self._take, self.counters)
        self.downlink = Pump(settings("down", []), self._take, self.counters)
        self._ingest_tasks = [asyncio.create_task(c) for c in (
            self._run_uplink(), self.downlink.run(), self._ingest_loop(), self._announce_ready())]

    async def _run_uplink(self) -> None:
        # Records are taken only once their acks can go out: a resumed session delivers at once.
        assert self.uplink is not None and self.downlink is not None
        await self.downlink.up.wait()
        await self.uplink.run()

    def _take(self, verified: list[Verified]) -> None:
        self._witness_readings(verified)
        put = self.queue.put_nowait
        for v in verified:
            put(v)

    async def _announce_ready(self) -> None:
        assert self.uplink is not None and self.downlink is not None
        await asyncio.gather(self.uplink.up.wait(), self.downlink.up.wait(), self.control_up.wait())
        self.ready.set()
        sdnotify.notify("READY=1\nSTATUS=connected")

    async def _stop_ingest(self) -> None:
        """Take in nothing more, store and ack everything received, then stop the pumps."""
        if not self._ingest_tasks or self.uplink is None or self.downlink is None:
            return
        uplink_task, downlink_task, ingest_task, announce_task = self._ingest_tasks
        self._ingest_tasks = []
        await self.uplink.close()  # every message the uplink took from the broker is queued now
        self.queue.close()
        try:
            await asyncio.wait_for(ingest_task, SHUTDOWN_WAIT_S * 6)
        except TimeoutError:
            log.error("ingest did not drain in time; the meters will send the rest again")
        await self.downlink.close()
        for t in (uplink_task, downlink_task, announce_task):
            t.cancel()
        await asyncio.gather(uplink_task, downlink_task, announce_task, return_exceptions=True)

    async def _scheduler_loop(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._judge_clock()
            now = self.clock.now()
            if self.clock_hold is not None:  # nothing cleared or settled on a time in doubt
                self.last_tick = time.monotonic()
                self.current_iv = messages.interval_index(now, self.cfg.interval_s)
                await pause(stop, MAX_TICK_S)
                continue
            try:
                out = await self._db(self._tick, now)
            except DatabaseGone:
                await pause(stop, MAX_TICK_S)
                continue
            except Exception as exc:  # noqa: BLE001 - retried next tick; the watchdog sees a stall
                self.counters["scheduler_error"] += 1
                self.scheduler_errors += 1
                self.scheduler_error = _short(exc)
                log.exception("scheduler tick failed; retrying")
                await pause(stop, MAX_TICK_S)
                continue
            self.scheduler_errors, self.scheduler_error = 0, None
            self.last_tick = time.monotonic()
            self.current_iv = messages.interval_index(now, self.cfg.interval_s)
            for o in out:
                if o.topic.endswith("/ledger/checkpoint"):
                    cp = canonical.parse(o.payload)
                    self._note_checkpoint(cp["size"], cp["root"])
            await self._send(client, out)
            try:
                nxt = await self._db(self.scheduler.next_event, self.clock.now())
            except Exception:  # noqa: BLE001 - e.g. locked: look again in a second
                nxt = self.clock.now() + MAX_TICK_S * self.clock.speed
            await pause(stop, min(MAX_TICK_S, self.clock.real_seconds(nxt - self.clock.now())))

    async def _status_loop(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        topic = topics.gateway_status_topic(self.cfg.community)
        while not stop.is_set():
            await client.publish(topic, self._status_message(1), qos=1, retain=True, timeout=30)
            await pause(stop, self.cfg.status.publish_s)

    async def _home_assistant_loop(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        """Discovery whenever the set of meters changes (and at each connection), states every
        publish_s (gateway/ops/homeassistant.py)."""
        announced: list[str] = []
        while not stop.is_set():
            try:
                meters, out = await self._db(self._home_assistant_states)
            except Exception:  # noqa: BLE001 - the dashboard waits; the trust path goes on
                log.exception("home assistant states failed")
                self.counters["homeassistant_failed"] += 1
            else:
                if meters != announced:
                    out = homeassistant.discovery(self.cfg, meters) + out
                    announced = meters
                await self._send(client, out)
            await pause(stop, self.cfg.homeassistant.publish_s)

    def _home_assistant_states(self) -> tuple[list[str], list[Outgoing]]:
        meters = self.scheduler.registry.meters(self.cfg.community)
        return meters, homeassistant.states(self.conn, self.cfg, meters, self.clock.now())

    async def _watchdog_loop(self) -> None:
        interval = sdnotify.watchdog_interval()
        if interval is None:
            return
        while True:
            if all(code != "stalled" for code, _ in self.problems()):  # fed while the scheduler progresses
                sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval)  # cancelled by run() on the way out

    def _client(self) -> aiomqtt.Client:
        m = self.cfg.mqtt
        tls = None
        if m.tls:
            tls = ssl.create_default_context(cafile=m.ca)
        will = aiomqtt.Will(topics.gateway_status_topic(self.cfg.community), self._status_message(0), qos=1, retain=True)
        return aiomqtt.Client(
            m.host, m.port, username=m.user, password=m.password, identifier=m.client_id,
            # Subscribes to nothing (the uplink pump does): a clean session also discards the one an
            # earlier version of the gateway kept under this client id.
            clean_session=True,
            will=will, keepalive=m.keepalive_s, logger=mqtt_log, tls_context=tls, timeout=30,
            max_inflight_messages=MAX_IN_FLIGHT, max_queued_outgoing_messages=0,
        )

    async def _session(self, stop: asyncio.Event) -> None:
        client = self._client()
        async with client:
            self.control_up.set()
            log.info("connected to %s:%d, community %s", self.cfg.mqtt.host, self.cfg.mqtt.port, self.cfg.community)
            try:
                loops = [self._scheduler_loop(client, stop), self._status_loop(client, stop)]
                if self.cfg.homeassistant.enabled:
                    loops.append(self._home_assistant_loop(client, stop))
                tasks = [asyncio.create_task(c) for c in loops]
                stopper = asyncio.create_task(stop.wait())
                done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
                for t in [*tasks, stopper]:
                    t.cancel()
                # Bounded: on Python 3.11 a cancel that races a completing wait_for (inside
                # aiomqtt) can be swallowed; the loops also watch ``stop``, so they end anyway.
                await asyncio.wait([*tasks, stopper], timeout=SHUTDOWN_WAIT_S)
                for t in done:
                    if t is not stopper and not t.cancelled() and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
                if stop.is_set():
                    await self._drain(client)
            finally:
                self.control_up.clear()

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Clean shutdown: store what is queued, ack it, sign the tree, say we are offline."""
        await self._stop_ingest()
        await self._send(client, await self._db(self._final_checkpoint))
        await client.publish(topics.gateway_status_topic(self.cfg.community), self._status_message(0),
                             qos=1, retain=True, timeout=10)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        try:
            await self._db(self._open)
        except BaseException:
            self._dbx.shutdown(wait=True)
            raise
        if self.cfg.status.http_port is not None:
            app = create_app(self.snapshot, Scraper(self), MemberSite.from_gateway(self))
            self.status_server = WebServer(app, self.cfg.status.http_host,
                                           self.cfg.status.http_port)
            await self.status_server.start()
        background = [asyncio.create_task(self._watchdog_loop())]
        self._start_ingest()
        if self.cfg.influx.enabled:
            from gateway.ops.influx import Exporter  # noqa: PLC0415 - optional dependency

            self.exporter = Exporter(self.cfg, self.counters)
            background.append(asyncio.create_task(self.exporter.run(stop)))
        backoff = RECONNECT_MIN_S
        try:
            while not stop.is_set():
                try:
                    await self._session(stop)
                    backoff = RECONNECT_MIN_S
                except aiomqtt.MqttError as exc:
                    self.counters["mqtt_disconnects"] += 1
                    log.warning("broker %s:%d: connection lost (%s); reconnecting in %.1f s", self.cfg.mqtt.host,
                                self.cfg.mqtt.port, exc, backoff)
                    try:
                        await asyncio.wait_for(stop.wait(), backoff * (0.5 + random.random()))
                    except TimeoutError:
                        pass
                    backoff = min(RECONNECT_MAX_S, backoff * 2)
        finally:
            sdnotify.notify("STOPPING=1")
            await self._stop_ingest()  # if no broker connection let _drain do it
            for t in background:
                t.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if self.status_server:
                await self.status_server.stop()
            if self.exporter:
                self.exporter.close()
            await self._db(self._close_db)
            self._dbx.shutdown(wait=True)
            log.info("gateway stopped")


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


class GatewayThread:
    """A gateway running in a background thread with its own event loop (demo, bench, tests)."""

    def __init__(self, cfg: GatewayConfig, clear: ClearFn | None = None, clock: Clock | None = None,
                 init: bool = False) -> None:
        self.gateway = Gateway(cfg, clear, clock, init)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="tmeter-gateway", daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.gateway.run(self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported to the owner through .error
            self.error = exc
            log.exception("gateway thread failed")
            self.gateway.ready.set()

    def start(self, timeout: float = 30.0) -> GatewayThread:
        self._thread.start()
        if not self.gateway.ready.wait(timeout) or self.error:
            raise RuntimeError(f"gateway did not become ready: {self.error!r}")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop cleanly (drain, ack, checkpoint, offline status); safe to call more than once."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass  # the loop closed between the check and the call: already stopped
        if self._thread.is_alive():
            self._thread.join(timeout)
