"""Helpers for the simulator tests: run a coroutine with a deadline, raw RTU transactions,
a socat pty pair, a clock that holds still at both ends of a run."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from protocols import modbus
from sim_hardware.simulator.clock import SimClock

T = TypeVar("T")

# A Saturday in June 2024, 00:00 CET: PV all day, household peaks morning and evening.
T0 = 1718406000.0


@pytest.fixture(autouse=True)
def _quiet_pymodbus() -> None:
    # Fault tests provoke client timeouts on purpose; pymodbus logs each one as an error.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def arun(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run ``coro`` on a fresh event loop; fail the test when it takes longer than ``timeout``."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


class HeldClock(SimClock):
    """The simulated clock, held at ``start`` until ``epoch`` and at ``until`` once reached, so a
    test reads every meter at exactly the same instants."""

    def __init__(self, start: float, speed: float, hold_s: float, until: float) -> None:
        super().__init__(start, time.time() + hold_s, speed)
        self.until = until

    def now(self) -> float:
        return min(max(super().now(), self.start), self.until)


async def rtu_transact(host: str, port: int, frame: bytes, timeout: float = 0.5) -> bytes:
    """Send one RTU frame over TCP; return the raw answer (b"" when none came in time)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(frame)
        await writer.drain()
        return await read_rtu_frame(reader, timeout)
    finally:
        writer.close()


async def read_rtu_frame(reader: asyncio.StreamReader, timeout: float) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        need = modbus.response_frame_length(buf) if len(buf) >= 2 else 0
        if need and len(buf) >= need:
            return buf
        left = deadline - time.monotonic()
        if left <= 0:
            return buf
        try:
            chunk = await asyncio.wait_for(reader.read(512), left)
        except asyncio.TimeoutError:
            return buf
        if not chunk:
            return buf
        buf += chunk


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked pseudo-terminals from socat: (server side, client side)."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is not installed (.ci/run installs it)")
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    proc = subprocess.Popen([socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not (a.exists() and b.exists()):
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("socat did not create the pty pair")
            time.sleep(0.02)
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
