"""The one simulated clock: ``sim_time = start + (time.time() - epoch) * speed``.

Every process of a simulated run (devices, firmware, gateway, bench) is given the same triple
(start, epoch, speed) and computes the time itself, so nothing has to be exchanged at run time
and an accelerated day stays in step across processes. firmware/clock.py implements the same
formula under MicroPython; the manifest and the CLI use the same key names.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


class SimClock:
    """Simulated unix time. ``start`` is the simulated instant at wall time ``epoch``."""

    def __init__(self, start: float | None = None, epoch: float | None = None,
                 speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, not {speed!r}")
        now = time.time()
        self.epoch = float(now if epoch is None else epoch)
        self.start = float(self.epoch if start is None else start)
        self.speed = float(speed)

    @classmethod
    def realtime(cls) -> SimClock:
        """Simulated time equals wall time."""
        now = time.time()
        return cls(now, now, 1.0)

    @classmethod
    def from_dict(cls, triple: dict[str, Any]) -> SimClock:
        """From {"start", "epoch", "speed"} as in a manifest or a firmware config."""
        return cls(triple.get("start"), triple.get("epoch"), triple.get("speed", 1.0) or 1.0)

    def to_dict(self) -> dict[str, float]:
        return {"start": self.start, "epoch": self.epoch, "speed": self.speed}

    def now(self) -> float:
        return self.at_wall(time.time())

    def at_wall(self, wall: float) -> float:
        """Simulated time at wall-clock time ``wall``."""
        return self.start + (wall - self.epoch) * self.speed

    def wall_at(self, sim: float) -> float:
        """Wall-clock time at which simulated time reaches ``sim``."""
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
