"""An MQTT connection in a process of its own: the gateway's data plane, and the daemon's handle
on it.

At thousands of readings a second the MQTT client's per-packet work (paho parsing each PUBLISH,
answering it with a PUBACK, framing each ack) costs as much as verifying and storing the
reading; one interpreter cannot do both at the broker's pace. So the daemon runs two pumps
beside it (gateway/ingest/pump_process.py), each a child process with its own MQTT session and
a single job:

- ``uplink``: subscribed to the meters' reading, bid and status topics with a persistent session
  (the broker keeps QoS 1 messages while the gateway restarts); authenticates and decodes each
  message (gateway/ingest/codec.py: stateless, keys read from the database) and hands what
  verified to the daemon, which stores it and orders its ack;
- ``downlink``: tags the acks the daemon orders with the meters' keys and publishes them.

The control plane (awards, results, checkpoints, status with its last will) stays on the
daemon's own aiomqtt connection, and everything stateful (de-duplication, checks, the ledger)
in the daemon's single database thread. The daemon and its pumps talk in frames over the
pumps' stdin and stdout (gateway/ingest/frames.py); closing a pump's stdin is how the daemon
stops it, as a pump ignores the signals a terminal or a service manager sends the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from gateway.ingest import codec
from gateway.ingest.frames import (
    CLOSE_WAIT_S,
    HEADER,
    READER_LIMIT,
    PumpSettings,
    frame,
    frame_length,
)

log = logging.getLogger("tmeter.gateway.pump")

RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0  # a pump that ran longer than this is restarted after the shortest wait
REAP_S = 2.0


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
        backoff = RESTART_MIN_S
        while not self._closing:
            began = time.monotonic()
            await self._run_once()
            if self._closing:
                return
            self.counters[f"{self.name}_restarts"] += 1
            log.error("%s pump exited (code %s); restarting", self.name, self.proc.returncode if self.proc else None)
            backoff = RESTART_MIN_S if time.monotonic() - began > RESTART_MAX_S else min(RESTART_MAX_S, 2 * backoff)
            await asyncio.sleep(backoff)

    async def _run_once(self) -> None:
        root = str(Path(__file__).resolve().parents[2])  # this checkout or install, whatever the cwd
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.ingest.pump_process", stdin=asyncio.subprocess.PIPE,
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
