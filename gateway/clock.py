"""One clock for the gateway: the wall clock, or a simulated one shared with the simulator."""

from __future__ import annotations

import asyncio
import time

from gateway.config import ClockConfig


class Clock:
    """t = start + (wall - epoch) * speed; the plain wall clock when ``start`` is None."""

    def __init__(self, cfg: ClockConfig | None = None) -> None:
        cfg = cfg or ClockConfig()
        self.speed = cfg.speed if cfg.start is not None and cfg.speed > 0 else 1.0
        self.start = cfg.start
        self.epoch = cfg.epoch if cfg.epoch is not None else time.time()

    def now(self) -> float:
        if self.start is None:
            return time.time()
        return self.start + (time.time() - self.epoch) * self.speed

    def real_seconds(self, simulated: float) -> float:
        """How long to sleep for ``simulated`` seconds to pass."""
        return max(0.0, simulated / self.speed)


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep for ``seconds`` or until ``stop`` is set, whichever comes first."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
