"""One clock for the gateway: the run's simulated clock (protocols/simclock.py), which with
``[clock]`` unset in gateway.toml is the wall clock, guarded against wall-clock jumps.

The wall clock is believed while it moves with the monotonic clock (CLOCK_MONOTONIC never
jumps; NTP only slews it). Once it has moved ``jump_s`` (simulated) seconds more or less than
the monotonic clock since the last reading, it has jumped: ``now()`` goes on from the last
believed time on the monotonic clock, ``jump`` says by how much the wall clock differs, and
the gateway neither clears nor settles on the jumped time. When the wall clock comes back within
``jump_s`` it is believed again; ``believe_wall()`` accepts it as it is (an operator or the
meters' own times confirmed it)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from gateway.config import ClockConfig
from protocols import simclock


class Clock(simclock.SimClock):
    """t = start + (wall - epoch) * speed in seconds of ``wall()`` (``time.time``); unset values
    default as protocols/simclock.py says (so a speed applies with ``start`` unset too).
    ``jump_s`` None: no jump detection (the wall clock as it is)."""

    def __init__(self, cfg: ClockConfig | None = None, jump_s: float | None = None,
                 wall: Callable[[], float] | None = None, mono: Callable[[], float] | None = None) -> None:
        cfg = cfg or ClockConfig()
        # Looked up at each call (not bound here), so a patched time.time is what is read.
        self._wall = wall or (lambda: time.time())
        self._mono = mono or (lambda: time.monotonic())
        self.jump_s = jump_s
        made = self._wall()
        super().__init__(cfg.start, cfg.epoch, cfg.speed, made)
        self._lock = threading.Lock()  # now() is called from the event loop and the database thread
        self._base = made - self._mono()  # believed wall time = monotonic + base
        self.jump = 0.0  # simulated seconds the wall clock is ahead (+) or behind (-) the believed time

    def now(self) -> float:
        with self._lock:
            wall, mono = self._wall(), self._mono()
            drift = (wall - (mono + self._base)) * self.speed
            if self.jump_s is None or abs(drift) <= self.jump_s:
                self._base = wall - mono  # follows NTP's slewing and a wall clock come back
                self.jump = 0.0
                return float(self.at_wall(wall))
            self.jump = drift
            return float(self.at_wall(mono + self._base))

    def believe_wall(self) -> None:
        with self._lock:
            self._base = self._wall() - self._mono()
            self.jump = 0.0

    def set_now(self, t: float) -> None:
        """Believe that it is ``t`` (simulated) now, whatever the wall clock says: the meters'
        time when they agree the wall clock is wrong; ``jump`` then says how wrong."""
        with self._lock:
            mono = self._mono()
            self._base = self.epoch + (t - self.start) / self.speed - mono
            self.jump = (self._wall() - (mono + self._base)) * self.speed

    def real_seconds(self, simulated: float) -> float:
        """How long to sleep for ``simulated`` seconds to pass."""
        return max(0.0, simulated / self.speed)


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep for ``seconds`` or until ``stop`` is set, whichever comes first."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
