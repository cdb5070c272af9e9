"""The simulator's clock: the run's simulated clock (protocols/simclock.py,
``sim = start + (wall - epoch) * speed``) in float seconds of ``time.time()``, with what the
simulator and the harness need around it: the wall time of a simulated instant, sleeping until
one, and the triple as a manifest or a device config carries it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from protocols import simclock


class SimClock(simclock.SimClock):
    """Simulated unix time. ``start`` is the simulated instant at wall time ``epoch``; unset
    values default as protocols/simclock.py says."""

    start: float
    epoch: float
    speed: float

    def __init__(self, start: float | None = None, epoch: float | None = None,
                 speed: float | None = 1.0) -> None:
        super().__init__(start, epoch, speed, time.time())
        self.start, self.epoch, self.speed = float(self.start), float(self.epoch), float(self.speed)

    @classmethod
    def realtime(cls) -> SimClock:
        """Simulated time equals wall time."""
        now = time.time()
        return cls(now, now, 1.0)

    @classmethod
    def from_dict(cls, triple: dict[str, Any]) -> SimClock:
        """From {"start", "epoch", "speed"} as in a manifest or a device config."""
        return cls(triple.get("start"), triple.get("epoch"), triple.get("speed"))

    def to_dict(self) -> dict[str, float]:
        return {"start": self.start, "epoch": self.epoch, "speed": self.speed}

    def now(self) -> float:
        return self.at_wall(time.time())

    def wall_at(self, sim: float) -> float:
        """Wall-clock time at which simulated time reaches ``sim`` (at_wall's inverse)."""
        return self.epoch + (sim - self.start) / self.speed

    def real_seconds(self, sim_seconds: float) -> float:
        """Wall seconds that ``sim_seconds`` of simulated time take."""
        return max(0.0, sim_seconds / self.speed)

    async def sleep_until(self, sim: float) -> None:
        """Sleep until simulated time ``sim`` (returns at once when it has passed)."""
        delay = self.wall_at(sim) - time.time()
        if delay > 0:
            await asyncio.sleep(delay)

    def __repr__(self) -> str:
        return f"SimClock(start={self.start!r}, epoch={self.epoch!r}, speed={self.speed!r})"
