"""An MQTT connection in a process of its own: the gateway's data plane.

At thousands of readings a second the MQTT client's per-packet work (paho parsing each PUBLISH,
answering it with a PUBACK, framing each ack) costs as much as verifying and storing the
reading; one interpreter cannot do both at the broker's pace. So the daemon runs two pumps
beside it, each a child process with its own MQTT session and a single job:

- ``uplink``: subscribed to the meters' reading, bid and status topics with a persistent session
  (the broker keeps QoS 1 messages while the gateway restarts); authenticates and decodes each
  message (gateway/codec.py: stateless, keys read from the database) and hands what verified
  to the daemon, which stores it and orders its ack;
- ``downlink``: tags the acks the daemon orders with the meters' keys and publishes them.

The control plane (awards, results, checkpoints, status with its last will) stays on the
daemon's own aiomqtt connection, and everything stateful (de-duplication, checks, the ledger)
in the daemon's single database thread.

The daemon and a pump talk over the pump's stdin and stdout in frames: a 4-byte big-endian
length, then a pickled ``(kind, value)``. Pickle is safe here because both ends are this module,
one spawned by the other; message payloads cross as opaque bytes.

    daemon -> pump   ("start", PumpSettings as a dict), once, first
                     ("acks", [codec.AckOrder, ...])
    pump -> daemon   ("up", bool)                      subscribed (uplink) / connected, or lost
                     ("messages", [(topic, payload), ...]), or codec.Verified tuples
                     ("count", {name: n})              e.g. acks dropped while disconnected

End of file on its stdin tells a pump to finish what it was given, disconnect and exit; so a
pump also ends when the daemon dies, whatever kills it. Signals are the daemon's: a pump
ignores SIGINT and SIGTERM, which a terminal or a service manager may send the whole group,
so that the daemon can still store and ack what it holds before its pumps go.

The pump side is a plain select loop over paho's external-loop API (``loop_read``,
``loop_write``, ``loop_misc``): one thread, so no lock and no GIL hand-over sits on the path
of every message. Its paho client buffers the socket (``BufferedClient``): paho reads a packet
in three or more ``recv`` calls and writes each packet with its own ``send``, so at these rates
its system calls cost twice what its parsing does; buffered, one ``recv`` takes everything the
kernel holds and one ``send`` a whole turn's PUBACKs or acks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import random
import select
import signal
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gateway.ingest import codec

log = logging.getLogger("tmeter.gateway.pump")

HEADER = struct.Struct("!I")
MAX_FRAME = 64 << 20  # a frame larger than this is a broken pipe, not a message batch
# Room in the pipe and the daemon's reader, so the uplink keeps taking messages from the broker
# while the daemon's event loop waits its turn for the interpreter (its database thread holds
# the GIL for milliseconds at a time); 64 KiB pipes stalled the uplink for half of its time.
PIPE_SIZE = 1 << 20
READER_LIMIT = 4 << 20
F_SETPIPE_SZ = 1031  # Linux fcntl; elsewhere the default size stays
READ_BURST = 256  # MQTT packets read per wake-up before the batch goes to the daemon
RECV_SIZE = 256 << 10  # one recv takes up to this much of what the kernel holds
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 30.0
CLOSE_WAIT_S = 10.0
REAP_S = 2.0


@dataclass
class PumpSettings:
    """What a pump needs to know; sent as its first frame, so no password shows in ``ps``."""

    name: str
    host: str
    port: int
    client_id: str
    subscribe: list[str] = field(default_factory=list)  # topic filters, QoS 1; none: publish only
    user: str | None = None
    password: str | None = None
    tls: bool = False
    ca: str | None = None
    keepalive_s: int = 30
    max_inflight: int = 20  # QoS 1 publishes awaiting PUBACK
    log_level: str = "WARNING"
    database: str | None = None  # the gateway's: meter keys to decode messages and tag acks with
    community: str = ""  # whose meters' ack topics the acks go to
    ack_qos: int = 0


def frame(kind: str, value: Any) -> bytes:
    data = pickle.dumps((kind, value), protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def frame_length(header: bytes | bytearray) -> int:
    """The length a frame header announces; an absurd one is a broken pipe, not a batch."""
    (n,) = HEADER.unpack_from(header)
    if n > MAX_FRAME:
        raise ValueError(f"frame of {n} bytes")
    return n


class FrameBuffer:
    """Splits a byte stream into frames."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[str, Any]]:
        self.buf += data
        out = []
        while len(self.buf) >= HEADER.size:
            n = frame_length(self.buf)
            if len(self.buf) < HEADER.size + n:
                break
            out.append(pickle.loads(self.buf[HEADER.size:HEADER.size + n]))
            del self.buf[:HEADER.size + n]
        return out


# --- the pump process


def buffered_client_class() -> type:
    """paho's Client with buffered socket I/O (imported here: the daemon side never needs paho)."""
    import paho.mqtt.client as mqtt  # noqa: PLC0415

    class BufferedClient(mqtt.Client):  # type: ignore[misc]
        """Reads take whatever the kernel holds into a buffer that paho's byte-by-byte reads
        then consume; writes gather until ``flush()``, which the select loop calls once a
        turn. Through paho's socket hooks (``_sock_recv``, ``_sock_send``, ``_sock_close``),
        so paho keeps doing all of MQTT, TLS included; the hooks are private, hence the
        ``paho-mqtt<3`` pin and the pump tests against a real broker."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._rbuf = b""
            self._rpos = 0
            self._wbuf = bytearray()
            # Nothing left to read: the last read found the buffer and the socket both empty.
            # Until then the select loop must not wait, as what remains may be in the buffer
            # or (TLS) decrypted inside the SSL object, where select cannot see it.
            self.drained = False

        def _sock_recv(self, bufsize: int) -> bytes:
            if self._rpos >= len(self._rbuf):
                try:
                    self._rbuf, self._rpos = super()._sock_recv(RECV_SIZE), 0
                except BlockingIOError:
                    self.drained = True
                    raise
                if not self._rbuf:
                    return b""  # end of stream: paho calls the connection lost
            data = self._rbuf[self._rpos:self._rpos + bufsize]
            self._rpos += len(data)
            return data

        def _sock_send(self, buf: bytes | bytearray) -> int:
            if self._sock is None:
                raise ConnectionError("not connected")
            self._wbuf += buf
            return len(buf)

        def _sock_close(self) -> None:
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self.flush()  # e.g. the DISCONNECT paho just wrote, before it closes
            self._rbuf, self._rpos, self._wbuf = b"", 0, bytearray()
            self.drained = False
            super()._sock_close()

        def pending_output(self) -> bool:
            return bool(self._wbuf) or self.want_write()

        def flush(self) -> None:
            """Send what was gathered, as far as the socket takes it now (raises OSError on
            a broken connection)."""
            while self._wbuf:
                try:
                    sent = super()._sock_send(self._wbuf)
                except BlockingIOError:
                    return  # the socket buffer is full: select for writing, then again
                del self._wbuf[:sent]

    return BufferedClient


class PumpProcess:
    """The child: one MQTT session, driven by a select loop over the broker socket and stdin."""

    def __init__(self, settings: PumpSettings, stdin_fd: int, stdout: Any) -> None:
        import paho.mqtt.client as mqtt  # noqa: PLC0415 - the daemon side never needs paho here

        self.s = settings
        self.stdin_fd = stdin_fd
        self.stdout = stdout
        self.frames = FrameBuffer()
        self.inbox: list[tuple[str, bytes]] = []
        self.counts: Counter[str] = Counter()
        self.closing = False
        self.up = False
        c = buffered_client_class()(mqtt.CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                                    clean_session=not settings.subscribe)
        if settings.user:
            c.username_pw_set(settings.user, settings.password)
        if settings.tls:
            c.tls_set(ca_certs=settings.ca)
        c.max_inflight_messages_set(max(1, settings.max_inflight))
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c
        self.decode: Callable[[list[tuple[str, bytes]]], list[codec.Verified]] | None = None
        self.tag_acks: Callable[[list[codec.AckOrder]], list[codec.Outgoing]] | None = None
        if settings.database:
            keys = codec.KeyCache(codec.read_only(settings.database))
            self.decode = codec.MeterDecoder(keys, self.counts).decode_all
            self.tag_acks = codec.AckTagger(keys, settings.community, settings.ack_qos)

    def run(self) -> None:
        backoff = RECONNECT_MIN_S
        while not self.closing:
            try:
                self._connect()
                backoff = RECONNECT_MIN_S
                self._serve()
            except OSError as exc:
                log.warning("%s: broker connection failed (%s); retrying in %.1f s", self.s.name, exc, backoff)
            self._report_up(False)
            if not self.closing:
                self._wait(backoff * (0.5 + random.random()))  # noqa: S311 - jitter, not secrecy
                backoff = min(RECONNECT_MAX_S, backoff * 2)
        self._finish()

    def _connect(self) -> None:
        self.client.connect(self.s.host, self.s.port, self.s.keepalive_s)  # blocking: a TCP connect

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:  # noqa: ARG002
        if reason.is_failure:
            log.warning("%s: broker refused the connection: %s", self.s.name, reason)
            return
        if self.s.subscribe:
            client.subscribe([(f, 1) for f in self.s.subscribe])  # up once the broker confirms
        else:
            self._report_up(True)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: list[Any], props: Any) -> None:  # noqa: ARG002
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:  # an ACL that does not let the gateway read its meters: say so, stay down
            log.error("%s: broker refused the subscriptions %s: %s", self.s.name, self.s.subscribe, refused)
            self.counts["subscribe_refused"] += 1
            return
        self._report_up(True)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:  # noqa: ARG002
        try:
            topic = message.topic
        except UnicodeDecodeError:  # brokers check topics are UTF-8; should one not, drop it
            self.counts["bad_topic"] += 1
            return
        self.inbox.append((topic, message.payload))

    def _serve(self) -> None:
        """Until the connection is lost or the daemon closed our stdin."""
        c = self.client
        while c.socket() is not None and not self.closing:
            sock = c.socket()
            want_write = [sock] if c.pending_output() else []
            readable, _, _ = select.select([sock, self.stdin_fd], want_write, [], 1.0 if c.drained else 0.0)
            if (sock in readable or not c.drained) and not self._read_broker():
                return
            if self.stdin_fd in readable:
                self._read_daemon()
            if c.loop_write() != 0 or c.loop_misc() != 0:  # loop_misc: keepalive; a silent broker is a lost one
                return
            c.flush()
            self._send_inbox()

    def _read_broker(self) -> bool:
        """Take what the socket holds, up to a burst; False if the connection was lost."""
        self.client.drained = False  # select says there is more
        for _ in range(READ_BURST):
            if self.client.loop_read() != 0:
                self._send_inbox()
                return False
            if self.client.drained:
                break
        return True

    def _read_daemon(self) -> None:
        data = os.read(self.stdin_fd, 1 << 20)
        if not data:
            self.closing = True
            return
        for kind, value in self.frames.feed(data):
            if kind == "acks" and self.tag_acks is not None:
                self._publish(self.tag_acks(value))

    def _publish(self, items: list[codec.Outgoing]) -> None:
        """Outgoing messages; lost (and counted) while the broker is away."""
        if not self.up:
            self.counts["publish_failed"] += len(items)  # the meters repeat what was not acked
            return
        for o in items:
            if self.client.publish(o.topic, o.payload, qos=o.qos, retain=o.retain).rc != 0:
                self.counts["publish_failed"] += 1

    def _wait(self, seconds: float) -> None:
        """Back off before reconnecting, still reading stdin: what arrives cannot be sent (it is
        counted and dropped) and end of file ends the wait."""
        deadline = time.monotonic() + seconds
        while not self.closing and (left := deadline - time.monotonic()) > 0:
            if select.select([self.stdin_fd], [], [], left)[0]:
                self._read_daemon()

    def _finish(self) -> None:
        """Send what is still queued (bounded in time), then disconnect cleanly."""
        deadline = time.monotonic() + CLOSE_WAIT_S
        c = self.client
        while c.socket() is not None and c.pending_output() and time.monotonic() < deadline:
            select.select([], [c.socket()], [], 0.5)
            try:
                if c.loop_write() != 0:
                    break
                c.flush()
            except OSError:
                break
        self._send_inbox()
        if self.client.socket() is not None:
            self.client.disconnect()
            with contextlib.suppress(Exception):
                self.client.loop_write()

    def _report_up(self, up: bool) -> None:
        if up != self.up:
            self.up = up
            self._write(frame("up", up))

    def _send_inbox(self) -> None:
        if self.inbox:
            batch = self.decode(self.inbox) if self.decode else self.inbox
            self.inbox = []
            if batch:
                self._write(frame("messages", batch))
        self._send_counts()

    def _send_counts(self) -> None:
        if self.counts:
            self._write(frame("count", dict(self.counts)))
            self.counts.clear()

    def _write(self, data: bytes) -> None:
        self.stdout.write(data)
        self.stdout.flush()


def _read_exactly(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _grow_pipe(fd: int) -> None:
    try:
        import fcntl  # noqa: PLC0415 - POSIX only

        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
    except (ImportError, OSError):
        pass  # not Linux, not a pipe, or above /proc/sys/fs/pipe-max-size: the default will do


def main() -> int:
    """``python -m gateway.ingest.pump``: started by the daemon, never by hand."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # the daemon stops its pumps itself (see above)
        signal.signal(sig, signal.SIG_IGN)
    stdin_fd = sys.stdin.fileno()
    try:  # exactly the start frame: whatever follows is the pump loop's to read
        n = frame_length(_read_exactly(stdin_fd, HEADER.size))
        kind, value = pickle.loads(_read_exactly(stdin_fd, n))
    except EOFError:
        return 0  # the daemon went away before starting us
    if kind != "start":
        raise SystemExit(f"pump: expected a start frame, got {kind!r}")
    settings = PumpSettings(**value)
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.set_blocking(stdin_fd, False)
    _grow_pipe(sys.stdout.fileno())
    PumpProcess(settings, stdin_fd, sys.stdout.buffer).run()
    return 0


# --- the daemon's side


class Pump:
    """The daemon's handle on one pump process: starts it, restarts it should it die, passes
    frames both ways. ``run()`` supervises until ``close()``."""

    def __init__(self, settings: PumpSettings, on_messages: Callable[[list[codec.Verified]], None],
                 counters: Counter[str]) -> None:
        self.settings = settings
        self.on_messages = on_messages
        self.counters = counters
        self.up = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self._closing = False
        self._read_all = asyncio.Event()  # the current process's stdout is at end of file

    @property
    def name(self) -> str:
        return self.settings.name

    async def run(self) -> None:
        backoff = RECONNECT_MIN_S
        while not self._closing:
            began = time.monotonic()
            await self._run_once()
            if self._closing:
                return
            self.counters[f"{self.name}_restarts"] += 1
            log.error("%s pump exited (code %s); restarting", self.name, self.proc.returncode if self.proc else None)
            backoff = RECONNECT_MIN_S if time.monotonic() - began > RECONNECT_MAX_S else min(RECONNECT_MAX_S, 2 * backoff)
            await asyncio.sleep(backoff)

    async def _run_once(self) -> None:
        root = str(Path(__file__).resolve().parents[1])  # this checkout or install, whatever the cwd
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.ingest.pump", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=env, limit=READER_LIMIT)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(frame("start", asdict(self.settings)))
        self._read_all.clear()
        try:
            await self._read(self.proc.stdout)
        finally:
            self._read_all.set()
            self.up.clear()
            await self._reap()

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        while True:
            try:
                n = frame_length(await stdout.readexactly(HEADER.size))
                kind, value = pickle.loads(await stdout.readexactly(n))
            except asyncio.IncompleteReadError:
                return  # the pump exited
            except (ValueError, pickle.UnpicklingError, EOFError, TypeError) as exc:
                log.error("%s pump sent a broken frame (%s); restarting it", self.name, exc)
                return  # _run_once reaps (kills) it, run() starts a new one
            if kind == "messages":
                self.on_messages(value)
            elif kind == "up":
                (self.up.set if value else self.up.clear)()
                log.info("%s pump %s", self.name, "up" if value else "down")
            elif kind == "count":
                self.counters.update(value)

    def send_acks(self, orders: list[codec.AckOrder]) -> None:
        """Hand acks to the pump without waiting; dropped (and counted) while
        it is down: the meters send those readings again."""
        proc = self.proc
        if not orders:
            return
        if proc is None or proc.stdin is None or proc.returncode is not None or proc.stdin.is_closing():
            self.counters["publish_failed"] += len(orders)
            return
        proc.stdin.write(frame("acks", orders))

    async def close(self) -> None:
        """Let the pump send what it was given and exit; every message it received has reached
        ``on_messages`` when this returns."""
        self._closing = True
        proc = self.proc
        if proc is None or proc.stdin is None:
            return
        with contextlib.suppress(ConnectionError):
            proc.stdin.close()
            await proc.stdin.wait_closed()
        try:
            await asyncio.wait_for(self._read_all.wait(), CLOSE_WAIT_S + 5)
        except TimeoutError:
            log.error("%s pump did not stop; killing it", self.name)
        await self._reap()

    async def _reap(self) -> None:
        """Collect the process, killing it if it does not end by itself soon after its output did."""
        proc = self.proc
        if proc is None:
            return
        try:
            await asyncio.wait_for(proc.wait(), REAP_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


if __name__ == "__main__":
    sys.exit(main())
