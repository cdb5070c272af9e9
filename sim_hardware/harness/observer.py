"""A read-only view of a running community, built from what crosses the broker.

The demo's live table and its report come from here. It listens like any third party would
(public market results and checkpoints), plus the meters' readings and status, whose tags it
checks with the keys the demo provisioned. It never trusts a message it cannot decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from protocols import messages, topics
from protocols.errors import ProtocolError

log = logging.getLogger(__name__)

KeyLookup = Callable[[str, int], "bytes | None"]


@dataclass
class IntervalView:
    """One market interval as seen on the wire. Money in micro-currency, energy in Wh."""

    iv: int
    price: int | None = None
    mechanism: str = ""
    bids: int = 0
    traded_wh: int = 0
    grid_import_wh: int = 0
    grid_export_wh: int = 0
    # The result's welfare objective (grid bill plus the costs and values the bids declare),
    # of the community and of every member alone on its bid: model quantities, not money.
    community_cost: int = 0
    bau_cost: int = 0
    net_wh: dict[str, int] = field(default_factory=dict)  # metered net export per meter


@dataclass
class CommunityObserver:
    community: str
    keys: KeyLookup
    intervals: dict[int, IntervalView] = field(default_factory=dict)
    online: dict[str, bool] = field(default_factory=dict)
    ledger_size: int = 0
    readings: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    # The run's intervals, [first, end): the gateway goes on clearing while the run drains, and
    # those intervals are not the run's.
    span: tuple[int, int] | None = None

    def filters(self) -> list[str]:
        c = self.community
        return [topics.meter_filter(c, "reading"), topics.meter_filter(c, "status"),
                f"{topics.ROOT}{c}/market/+/result", topics.checkpoint_topic(c)]

    def interval(self, iv: int) -> IntervalView:
        return self.intervals.setdefault(iv, IntervalView(iv))

    def handle(self, topic: str, payload: bytes) -> None:
        """Fold one message into the view; anything undecodable is counted and ignored."""
        try:
            _c, subject, msg, _body = messages.decode(topic, payload, self.keys)
        except ProtocolError as e:
            self.rejected[e.code] += 1
            return
        kind = msg["type"]
        if kind == "reading":
            self.readings += 1
            view = self.interval(msg["iv"])
            view.net_wh[subject] = view.net_wh.get(subject, 0) + msg["exp_wh"] - msg["imp_wh"]
        elif kind == "status":
            self.online[subject] = bool(msg["online"])
        elif kind == "result":
            self._fold_result(msg)
        elif kind == "checkpoint":
            self.ledger_size = max(self.ledger_size, msg["size"])

    def _fold_result(self, msg: dict[str, object]) -> None:
        view = self.interval(int(msg["iv"]))  # type: ignore[arg-type]
        for name in ("price", "bids", "traded_wh", "grid_import_wh", "grid_export_wh",
                     "community_cost", "bau_cost"):
            setattr(view, name, msg[name])
        view.mechanism = str(msg["mech"])

    def cleared(self) -> list[IntervalView]:
        lo, hi = self.span or (0, 2 ** 62)
        return [v for iv, v in sorted(self.intervals.items()) if v.price is not None and lo <= iv < hi]

    def totals(self) -> tuple[int, int]:
        """(community, members alone) welfare objective summed over cleared intervals, micro-currency."""
        rows = self.cleared()
        return sum(v.community_cost for v in rows), sum(v.bau_cost for v in rows)

    async def run(self, host: str, port: int, stop: asyncio.Event) -> None:
        """Follow the broker until ``stop`` is set, reconnecting when the link drops."""
        import aiomqtt

        while not stop.is_set():
            try:
                async with aiomqtt.Client(host, port, identifier=f"observer-{self.community}") as client:
                    for topic in self.filters():
                        await client.subscribe(topic, qos=1)
                    await _until(stop, self._consume(client))
            except aiomqtt.MqttError as e:
                log.info("observer link lost: %s", e)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)

    async def _consume(self, client: Any) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            self.handle(message.topic.value, payload)


async def _until(stop: asyncio.Event, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` until it ends or ``stop`` is set. (Cancelling the whole consumer, not each
    wait for a message: a cancelled ``__anext__`` would close aiomqtt's message generator.)"""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, stopper):
            t.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
