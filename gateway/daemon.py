"""The gateway daemon's life cycle: open the database, connect to the broker, run ingest, the
scheduler, status and export until told to stop; reconnect with backoff when the broker goes.

In-process use (demo, bench, tests)::

    gw = GatewayThread(cfg).start()      # returns once subscribed; gw.gateway.snapshot()
    ...
    gw.stop()

or, inside an event loop, ``await Gateway(cfg).run(stop_event)``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from collections.abc import Callable

import aiomqtt

from gateway import db, note, sdnotify
from gateway.clearing import ClearFn, market_clear
from gateway.clock import Clock, pause
from gateway.config import GatewayConfig
from gateway.fairqueue import FairQueue
from gateway.ingest import Ingest, Outgoing
from gateway.ledger import Ledger
from gateway.scheduler import Scheduler
from gateway.status import StatusServer
from protocols import canonical, messages, topics

log = logging.getLogger("tmeter.gateway")
# aiomqtt warns on every publish beyond ten in flight; the gateway does that by design (acks are
# handed over without waiting for each PUBACK), so only its errors are worth a log line.
mqtt_log = logging.getLogger("tmeter.gateway.mqtt")
mqtt_log.setLevel(logging.ERROR)
T = TypeVar("T")

RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 30.0
MAX_TICK_S = 1.0  # the scheduler looks at least this often (real seconds) for late readings
STALL_S = 60.0  # no scheduler tick for this long: unhealthy, stop feeding the systemd watchdog
MAX_IN_FLIGHT = 100  # paho's window for the gateway's own (awaited) publishes
STATUS_COUNTERS = 24
SHUTDOWN_WAIT_S = 5.0


class AckWindow:
    """Publishes acks on the MQTT session with at most ``window`` QoS 1 acks awaiting PUBACK.

    aiomqtt's ``publish`` awaits each PUBACK with an event, a timeout and bookkeeping linear in
    what is pending, and paho rescans every message it holds on each PUBACK; at thousands of
    acks a second both dominate the main loop. Here the rest wait in a plain deque and go out
    as PUBACKs come back. The session retransmits QoS 1 itself; an ack lost with the connection
    is sent again when the meter repeats its record, so no caller needs the confirmation.
    """

    def __init__(self, session: Any, window: int, counters: Counter[str]) -> None:
        self.session = session
        self.window = max(1, window)
        self.counters = counters
        self.backlog: deque[Outgoing] = deque()
        self.in_flight: set[int] = set()
        self._chained = session.on_publish  # aiomqtt's own, for its publishes
        session.on_publish = self._on_publish

    def send(self, acks: list[Outgoing]) -> None:
        self.backlog.extend(acks)
        self._pump()

    def _pump(self) -> None:
        while self.backlog and len(self.in_flight) < self.window:
            o = self.backlog.popleft()
            info = self.session.publish(o.topic, o.payload, qos=o.qos, retain=o.retain)
            if info.rc != 0:
                self.counters["publish_failed"] += 1
            elif o.qos:
                self.in_flight.add(info.mid)

    def _on_publish(self, session: Any, userdata: Any, mid: int, *rest: Any) -> None:
        if mid in self.in_flight:
            self.in_flight.discard(mid)
            self._pump()
        elif self._chained is not None:
            self._chained(session, userdata, mid, *rest)


class Gateway:
    def __init__(self, cfg: GatewayConfig, clear: ClearFn | None = None) -> None:
        self.cfg = cfg
        self.clock = Clock(cfg.clock)
        self.counters: Counter[str] = Counter()
        self.clear = clear or market_clear
        self.connected = False
        self.ready = threading.Event()  # set once subscribed: records are being taken in
        self.started = time.monotonic()
        self.last_tick = time.monotonic()
        self.current_iv = messages.interval_index(self.clock.now(), cfg.interval_s)
        self.latest_checkpoint: dict[str, Any] | None = None
        self.queue = FairQueue(cfg.ingest.per_meter_queue, cfg.ingest.total_queue, self._dropped)
        self._dbx = ThreadPoolExecutor(1, thread_name_prefix="tmeter-db")  # the one writer thread
        self.acks: AckWindow | None = None
        self.status_server: StatusServer | None = None
        self.exporter: Any = None

    def _dropped(self, meter: str) -> None:
        self.counters["queue_full"] += 1

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._dbx, fn, *args)

    def _open(self) -> None:
        """Runs in the database thread: every sqlite object lives and is used there."""
        self.conn = db.connect(self.cfg.db, self.cfg.synchronous)
        key = note.load_or_create_signing_key(self.cfg.key_path)
        self.ledger = Ledger(self.conn, self.cfg.origin, key)
        export = None
        if self.cfg.influx.enabled:
            from gateway.influx import line_builder  # noqa: PLC0415 - optional dependency

            export = line_builder(self.cfg.community)
        self.ingest = Ingest(self.cfg, self.conn, self.ledger, self.clock, self.counters, export)
        self.scheduler = Scheduler(self.cfg, self.conn, self.ledger, self.clear, self.counters, export)
        latest = self.ledger.latest_checkpoint()
        if latest:
            self._note_checkpoint(latest[0].size, latest[0].root_b64)

    def _note_checkpoint(self, size: int, root_b64: str) -> None:
        self.latest_checkpoint = {"origin": self.cfg.origin, "size": size, "root": root_b64}

    # --- status

    def health(self) -> str:
        if time.monotonic() - self.last_tick > STALL_S:
            return "stalled"
        return "ok" if self.connected else "disconnected"

    def snapshot(self) -> dict[str, Any]:
        return {
            "health": self.health(), "community": self.cfg.community, "mqtt_connected": self.connected,
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

    def _send_acks(self, client: aiomqtt.Client, acks: list[Outgoing]) -> None:
        """Hand acks to the MQTT session without awaiting each PUBACK (see AckWindow)."""
        if self.acks is None:
            for o in acks:
                asyncio.get_running_loop().create_task(self._publish(client, o))
        else:
            self.acks.send(acks)

    async def _send(self, client: aiomqtt.Client, out: list[Outgoing]) -> None:
        """Publish awards, results, checkpoints: few, and each confirmed."""
        await asyncio.gather(*(self._publish(client, o) for o in out))

    async def _ingest_loop(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = await self.queue.get_batch(self.cfg.ingest.batch)
            self.counters["ingest_batches"] += 1
            try:
                acks = await self._db(self.ingest.process, batch)
            except Exception:  # noqa: BLE001 - e.g. disk full: nothing stored, nothing acked
                self.counters["store_failed"] += len(batch)
                log.exception("could not store a batch of %d; the meters will send it again", len(batch))
                await pause(stop, 1.0)
                continue
            self._send_acks(client, acks)

    async def _scheduler_loop(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = self.clock.now()
            try:
                out = await self._db(self.scheduler.tick, now)
            except Exception:  # noqa: BLE001 - retried next tick; the watchdog sees a stall
                self.counters["scheduler_error"] += 1
                log.exception("scheduler tick failed; retrying")
                await pause(stop, MAX_TICK_S)
                continue
            self.last_tick = time.monotonic()
            self.current_iv = messages.interval_index(now, self.cfg.interval_s)
            for o in out:
                if o.topic.endswith("/ledger/checkpoint"):
                    cp = canonical.parse(o.payload)
                    self._note_checkpoint(cp["size"], cp["root"])
            await self._send(client, out)
            nxt = await self._db(self.scheduler.next_event, self.clock.now())
            await pause(stop, min(MAX_TICK_S, self.clock.real_seconds(nxt - self.clock.now())))

    async def _status_loop(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        topic = topics.gateway_status_topic(self.cfg.community)
        while not stop.is_set():
            await client.publish(topic, self._status_message(1), qos=1, retain=True, timeout=30)
            await pause(stop, self.cfg.status.publish_s)

    async def _watchdog_loop(self) -> None:
        interval = sdnotify.watchdog_interval()
        if interval is None:
            return
        while True:
            if self.health() != "stalled":  # fed only while the scheduler makes progress
                sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval)  # cancelled by run() on the way out

    def _on_message(self, session: Any, userdata: Any, message: Any) -> None:  # noqa: ARG002
        self.queue.put_nowait((message.topic, message.payload))

    def _take_messages(self, client: aiomqtt.Client) -> None:
        """Incoming messages go straight from the MQTT session into the fair queue.

        aiomqtt would wrap each in its own Message and Topic objects and an unbounded queue; at
        ingest rates that wrapping costs more than verifying and storing the record. The session
        (paho) calls this from the event loop thread, like aiomqtt's own callback.
        """
        session = getattr(client, "_client", None)
        if session is None:
            raise RuntimeError("this aiomqtt version hides its MQTT session; pin aiomqtt 2.x")
        session.on_message = self._on_message
        self.acks = AckWindow(session, self.cfg.ingest.ack_window, self.counters)

    def _client(self) -> aiomqtt.Client:
        m = self.cfg.mqtt
        tls = None
        if m.tls:
            tls = ssl.create_default_context(cafile=m.ca)
        will = aiomqtt.Will(topics.gateway_status_topic(self.cfg.community), self._status_message(0), qos=1, retain=True)
        return aiomqtt.Client(
            m.host, m.port, username=m.user, password=m.password, identifier=m.client_id,
            clean_session=False,  # the broker keeps our subscriptions and queues QoS 1 while we restart
            will=will, keepalive=m.keepalive_s, logger=mqtt_log, tls_context=tls, timeout=30,
            max_inflight_messages=MAX_IN_FLIGHT, max_queued_outgoing_messages=0,
        )

    async def _session(self, stop: asyncio.Event) -> None:
        client = self._client()
        self._take_messages(client)  # before connecting: a resumed session delivers at once
        async with client:
            filters = [(topics.meter_filter(self.cfg.community, k), 1) for k in topics.METER_UP]
            await client.subscribe(filters)
            self.connected = True
            self.ready.set()
            sdnotify.notify("READY=1\nSTATUS=connected")
            log.info("connected to %s:%d, community %s", self.cfg.mqtt.host, self.cfg.mqtt.port, self.cfg.community)
            try:
                tasks = [asyncio.create_task(c) for c in (
                    self._ingest_loop(client, stop), self._scheduler_loop(client, stop),
                    self._status_loop(client, stop))]
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
                self.connected = False

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Clean shutdown: store what is queued, ack it, sign the tree, say we are offline."""
        while self.queue.qsize():
            self._send_acks(client, await self._db(self.ingest.process, self.queue.take(self.cfg.ingest.batch)))
        await self._send(client, await self._db(self.scheduler.checkpoint))
        await client.publish(topics.gateway_status_topic(self.cfg.community), self._status_message(0),
                             qos=1, retain=True, timeout=10)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        await self._db(self._open)
        if self.cfg.status.http_port is not None:
            self.status_server = StatusServer(self.snapshot, self.cfg.status.http_host, self.cfg.status.http_port)
            await self.status_server.start()
        background = [asyncio.create_task(self._watchdog_loop())]
        if self.cfg.influx.enabled:
            from gateway.influx import Exporter  # noqa: PLC0415 - optional dependency

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
                    log.warning("broker connection lost (%s); reconnecting in %.1f s", exc, backoff)
                    try:
                        await asyncio.wait_for(stop.wait(), backoff * (0.5 + random.random()))
                    except TimeoutError:
                        pass
                    backoff = min(RECONNECT_MAX_S, backoff * 2)
        finally:
            sdnotify.notify("STOPPING=1")
            for t in background:
                t.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if self.status_server:
                await self.status_server.stop()
            if self.exporter:
                self.exporter.close()
            await self._db(self.conn.close)
            self._dbx.shutdown(wait=True)
            log.info("gateway stopped")


class GatewayThread:
    """A gateway running in a background thread with its own event loop (demo, bench, tests)."""

    def __init__(self, cfg: GatewayConfig, clear: ClearFn | None = None) -> None:
        self.gateway = Gateway(cfg, clear)
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
