"""A bounded, per-meter fair queue of incoming MQTT messages.

Messages are tuples whose first element is their topic: raw (topic, payload) or, as the daemon
queues them, decoder.Verified. Each meter gets its own bounded FIFO, and ``get_batch`` takes
one message per meter in turn, so a meter flooding the broker fills (and overflows) only its
own queue while every other meter keeps its share of the gateway. An overflowing message is
dropped and counted; since the gateway acknowledges only stored records, the meter keeps it in
its store-and-forward queue and sends it again.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

Message = tuple[Any, ...]  # (topic, ...)

OTHER = ""  # queue for messages on topics that name no meter


def meter_of(topic: str) -> str:
    # tm/v1/<community>/meters/<meter>/<kind>: the 5th level; no parsing or validation here,
    # that is the decoder's job.
    parts = topic.split("/", 5)
    return parts[4] if len(parts) > 5 and parts[3] == "meters" else OTHER


class FairQueue:
    def __init__(self, per_meter: int = 64, total: int = 50_000,
                 on_drop: Callable[[str], None] | None = None) -> None:
        self.per_meter = per_meter
        self.total = total
        self.on_drop = on_drop
        self._queues: OrderedDict[str, deque[Message]] = OrderedDict()  # order = round-robin ring
        self._size = 0
        self._ready = asyncio.Event()
        self._closed = False

    def qsize(self) -> int:
        return self._size

    def empty(self) -> bool:
        return self._size == 0

    def put_nowait(self, message: Message) -> None:
        """Queue one message; a full meter queue drops it (counted by ``on_drop``)."""
        meter = meter_of(message[0])
        q = self._queues.get(meter)
        if q is None:
            q = self._queues[meter] = deque()
        if len(q) >= self.per_meter or self._size >= self.total:
            if self.on_drop is not None:
                self.on_drop(meter)
            return
        q.append(message)
        self._size += 1
        self._ready.set()

    def take(self, limit: int) -> list[Message]:
        """Up to ``limit`` messages, one per meter per round, without waiting."""
        batch: list[Message] = []
        while self._size and len(batch) < limit:
            for meter in list(self._queues):
                q = self._queues[meter]
                batch.append(q.popleft())
                self._size -= 1
                if q:
                    self._queues.move_to_end(meter)  # served: to the back of the ring
                else:
                    del self._queues[meter]
                if len(batch) >= limit:
                    break
        if not self._size and not self._closed:
            self._ready.clear()
        return batch

    def close(self) -> None:
        """No more messages are coming: ``get_batch`` returns [] once the queue is empty."""
        self._closed = True
        self._ready.set()

    async def get_batch(self, limit: int) -> list[Message]:
        """Waits for at least one message; [] only when closed and empty."""
        while not self._size and not self._closed:
            await self._ready.wait()
        return self.take(limit)

    async def get(self) -> Message:
        return (await self.get_batch(1))[0]
