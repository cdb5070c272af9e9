"""A pump: one MQTT session in a process of its own, started by the daemon (gateway/ingest/pump.py)
and talking to it through its stdin and stdout (gateway/ingest/frames.py).

    python -m gateway.ingest.pump_process    # by the daemon, never by hand

Signals are the daemon's: a pump ignores SIGINT and SIGTERM, which a terminal or a service
manager may send the whole group, so that the daemon can still store and ack what it holds
before its pumps go. End of file on stdin is what ends a pump.

The pump is a plain select loop over paho's external-loop API (``loop_read``, ``loop_write``,
``loop_misc``): one thread, so no lock and no GIL hand-over sits on the path of every message.
Its paho client buffers the socket (``BufferedClient``): paho reads a packet in three or more
``recv`` calls and writes each packet with its own ``send``, so at these rates its system calls
cost twice what its parsing does; buffered, one ``recv`` takes everything the kernel holds and
one ``send`` a whole turn's PUBACKs or acks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import select
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from gateway.ingest import codec
from gateway.ingest.frames import (
    CLOSE_WAIT_S,
    HEADER,
    FrameBuffer,
    PumpSettings,
    frame,
    frame_length,
    grow_pipe,
)

log = logging.getLogger("tmeter.gateway.pump")

READ_BURST = 256  # MQTT packets read per wake-up before the batch goes to the daemon
RECV_SIZE = 256 << 10  # one recv takes up to this much of what the kernel holds
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 30.0


class BufferedClient(mqtt.Client):  # type: ignore[misc]
    """paho's Client with buffered socket I/O. Reads take whatever the kernel holds into a
    buffer that paho's byte-by-byte reads then consume; writes gather until ``flush()``, which
    the select loop calls once a turn. Through paho's socket hooks (``_sock_recv``,
    ``_sock_send``, ``_sock_close``), so paho keeps doing all of MQTT, TLS included; the hooks
    are private, hence the ``paho-mqtt<3`` pin and the pump tests against a real broker."""

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


class PumpProcess:
    """The child: one MQTT session, driven by a select loop over the broker socket and stdin."""

    def __init__(self, settings: PumpSettings, stdin_fd: int, stdout: Any) -> None:
        self.s = settings
        self.stdin_fd = stdin_fd
        self.stdout = stdout
        self.frames = FrameBuffer()
        self.inbox: list[tuple[str, bytes]] = []
        self.counts: Counter[str] = Counter()
        self.closing = False
        self.up = False
        c = BufferedClient(mqtt.CallbackAPIVersion.VERSION2, client_id=settings.client_id,
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
                log.warning("%s: broker %s:%d: connection failed (%s); retrying in %.1f s", self.s.name, self.s.host,
                            self.s.port, exc, backoff)
            self._report_up(False)
            if not self.closing:
                self._wait(backoff * (0.5 + random.random()))  # noqa: S311 - jitter, not secrecy
                backoff = min(RECONNECT_MAX_S, backoff * 2)
        self._finish()

    def _connect(self) -> None:
        self.client.connect(self.s.host, self.s.port, self.s.keepalive_s)  # blocking: a TCP connect

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:  # noqa: ARG002
        if reason.is_failure:
            log.warning("%s: broker %s:%d refused the connection: %s", self.s.name, self.s.host, self.s.port, reason)
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


def main() -> int:
    """``python -m gateway.ingest.pump_process``: started by the daemon, never by hand."""
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
    grow_pipe(sys.stdout.fileno())
    PumpProcess(settings, stdin_fd, sys.stdout.buffer).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
