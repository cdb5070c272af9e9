"""One clock for the gateway: the run's simulated clock (protocols/simclock.py), which with
``[clock]`` unset in gateway.toml is the wall clock."""

from __future__ import annotations

import asyncio
import time

from gateway.config import ClockConfig
from protocols import simclock


class Clock(simclock.SimClock):
    """t = start + (wall - epoch) * speed in seconds of ``time.time()``; unset values default as
    protocols/simclock.py says (so a speed applies with ``start`` unset too)."""

    def __init__(self, cfg: ClockConfig | None = None) -> None:
        cfg = cfg or ClockConfig()
        super().__init__(cfg.start, cfg.epoch, cfg.speed, time.time())

    def now(self) -> float:
        return float(self.at_wall(time.time()))

    def real_seconds(self, simulated: float) -> float:
        """How long to sleep for ``simulated`` seconds to pass."""
        return max(0.0, simulated / self.speed)


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep for ``seconds`` or until ``stop`` is set, whichever comes first."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
