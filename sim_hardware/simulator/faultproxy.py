"""A TCP fault proxy: sits between any client and its server (MQTT, Modbus TCP, RTU over TCP)
and delays, drops or cuts the link on command, while it runs.

    proxy = FaultProxy("127.0.0.1", broker_port)
    async with proxy:                      # clients connect to proxy.port instead
        proxy.set_delay(0.5)               # every chunk arrives 0.5 s late (order kept)
        proxy.set_drop(True, "up")         # client-to-server bytes vanish; the link stays up
        proxy.cut()                        # reset every open connection now
        proxy.refuse(True)                 # new connections are reset at once (server "down")

From synchronous code, ``ProxyThread`` runs a proxy on its own loop; the control methods are
safe to call from any thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass

from sim_hardware.netutil import free_port

log = logging.getLogger(__name__)

DIRECTIONS = ("up", "down")  # up: client to server; down: server to client
CHUNK = 65536


@dataclass
class ProxyStats:
    accepted: int = 0
    refused: int = 0
    cut: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    dropped_up: int = 0
    dropped_down: int = 0


class _Link:
    """One proxied connection: the client's and the upstream's transports."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), so the peer sees an abrupt cut, not a clean FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


def _directions(direction: str) -> tuple[str, ...]:
    if direction == "both":
        return DIRECTIONS
    if direction not in DIRECTIONS:
        raise ValueError("direction must be 'up', 'down' or 'both'")
    return (direction,)


class FaultProxy:
    """Forwards every connection on ``port`` to (upstream_host, upstream_port)."""

    def __init__(self, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1",
                 listen_port: int | None = None, name: str = "proxy",
                 connect_timeout: float = 5.0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = listen_host
        self.port = listen_port or free_port(listen_host)
        self.name = name
        self.connect_timeout = connect_timeout
        self.delay_s = {d: 0.0 for d in DIRECTIONS}
        self.dropping = {d: False for d in DIRECTIONS}
        self.refusing = False
        self.stats = ProxyStats()
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------------- lifecycle
    async def start(self) -> FaultProxy:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        log.info("proxy up name=%s listen=%s:%d upstream=%s:%d", self.name, self.host, self.port,
                 *self.upstream)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._cut_now()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        log.info("proxy down name=%s", self.name)

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -------------------------------------------------------------------------- controls
    def set_delay(self, seconds: float, direction: str = "both") -> None:
        """Deliver every chunk ``seconds`` late in ``direction`` (order is kept)."""
        for d in _directions(direction):
            self.delay_s[d] = max(0.0, float(seconds))
        log.info("proxy %s delay=%s direction=%s", self.name, seconds, direction)

    def set_drop(self, on: bool, direction: str = "both") -> None:
        """Silently discard bytes in ``direction`` while on; connections stay open."""
        for d in _directions(direction):
            self.dropping[d] = on
        log.info("proxy %s drop=%s direction=%s", self.name, on, direction)

    def refuse(self, on: bool) -> None:
        """While on, new connections are reset as soon as they arrive."""
        self.refusing = on
        log.info("proxy %s refuse=%s", self.name, on)

    def cut(self) -> None:
        """Reset every open connection now. Safe from any thread; returns when done."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._cut_now()
            return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            self._cut_now()
            done.set_result(None)

        loop.call_soon_threadsafe(run)
        done.result(timeout=10)

    def heal(self) -> None:
        """Back to a clean link: no delay, no drop, no refusal."""
        self.set_delay(0.0)
        self.set_drop(False)
        self.refuse(False)

    @property
    def connections(self) -> int:
        return len(self._links)

    def _cut_now(self) -> None:
        links, self._links = list(self._links), set()
        for link in links:
            link.abort()
        self.stats.cut += len(links)
        if links:
            log.info("proxy %s cut connections=%d", self.name, len(links))

    # --------------------------------------------------------------------------- relaying
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            self.stats.refused += 1
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            log.info("proxy %s upstream unreachable: %s", self.name, exc)
            _reset(writer)
            return
        self.stats.accepted += 1
        link = _Link(writer, up_writer)
        self._links.add(link)
        pumps = [asyncio.create_task(self._pump(reader, up_writer, "up")),
                 asyncio.create_task(self._pump(up_reader, writer, "down"))]
        try:
            await asyncio.gather(*pumps)
        except (ConnectionError, OSError):
            pass
        finally:
            for pump in pumps:
                pump.cancel()
            self._links.discard(link)
            for w in (writer, up_writer):
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    direction: str) -> None:
        """Copy one direction; a sender task applies the delay so reading never stalls."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer, direction))
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if self.dropping[direction]:
                    self._count(direction, dropped=len(data))
                    continue
                await queue.put((time.monotonic() + self.delay_s[direction], data))
            await queue.put((0.0, b""))  # end of stream after what is queued
            await sender
        finally:
            sender.cancel()

    async def _send(self, queue: asyncio.Queue[tuple[float, bytes]],
                    writer: asyncio.StreamWriter, direction: str) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
            self._count(direction, sent=len(data))

    def _count(self, direction: str, sent: int = 0, dropped: int = 0) -> None:
        if direction == "up":
            self.stats.bytes_up += sent
            self.stats.dropped_up += dropped
        else:
            self.stats.bytes_down += sent
            self.stats.dropped_down += dropped


class ProxyThread:
    """A FaultProxy on its own event loop in a daemon thread (context manager)."""

    def __init__(self, upstream_host: str, upstream_port: int, **kwargs: object) -> None:
        self.proxy = FaultProxy(upstream_host, upstream_port, **kwargs)  # type: ignore[arg-type]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy",
                                        daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(10)
        return self.proxy

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
