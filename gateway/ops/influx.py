"""Optional export of readings, prices, awards and settlements to InfluxDB (v2 write API).

Points are written as line protocol into the ``outbox`` table inside the same transaction as
the data they describe; ``Exporter`` sends the outbox in batches through ``influxdb-client`` and
deletes what the server accepted. While the server is down the outbox grows on disk, the
exporter retries with exponential backoff, and everything arrives once it is back.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable
from typing import Any

from gateway import db
from gateway.clock import pause
from gateway.config import GatewayConfig, InfluxConfig

log = logging.getLogger("tmeter.gateway.influx")


Export = Callable[[str, dict[str, Any]], "str | None"]


def enqueue(conn: sqlite3.Connection, export: Export | None, kind: str, fields: dict[str, Any]) -> None:
    """Add a point to the outbox inside the caller's transaction (no-op without export)."""
    line = export(kind, fields) if export else None
    if line:
        conn.execute("INSERT INTO outbox(line) VALUES (?)", (line,))


def line_builder(community: str):  # noqa: ANN201 - returns the export callable of ingest/scheduler
    """(kind, fields) -> one line of line protocol, built with influxdb-client's Point."""
    from influxdb_client import Point, WritePrecision  # noqa: PLC0415 - optional dependency

    def build(kind: str, f: dict[str, Any]) -> str | None:
        if kind == "reading":
            p = (Point("reading").tag("meter", f["meter"]).field("imp_wh", f["imp_wh"])
                 .field("exp_wh", f["exp_wh"]).field("flags", f["flags"]).time(f["t1"], WritePrecision.S))
        elif kind == "price":
            p = Point("price").tag("mech", f["mech"]).field("price", f["price"]).field("iv", f["iv"])
            p = p.time(f["ts"], WritePrecision.S)
        elif kind == "award":
            p = Point("award").tag("meter", f["meter"]).field("q_wh", f["q_wh"]).time(f["ts"], WritePrecision.S)
        elif kind == "settlement":
            p = Point("settlement").tag("meter", f["meter"]).tag("rev", str(f["rev"]))
            for name in ("award_wh", "award_amount", "deviation_amount", "share_amount", "amount"):
                p = p.field(name, f[name])
            p = p.time(f["ts"], WritePrecision.S)
        else:
            return None
        return p.tag("community", community).to_line_protocol()

    return build


class Exporter:
    def __init__(self, cfg: GatewayConfig, counters: Counter[str]) -> None:
        self.cfg: InfluxConfig = cfg.influx
        self.db_path = cfg.db
        self.counters = counters
        self._conn: sqlite3.Connection | None = None
        self._client: Any = None

    def _open(self) -> None:
        from influxdb_client import InfluxDBClient  # noqa: PLC0415 - optional dependency
        from influxdb_client.client.write_api import SYNCHRONOUS  # noqa: PLC0415

        self._conn = db.connect(self.db_path)
        self._client = InfluxDBClient(url=self.cfg.url, token=self.cfg.token, org=self.cfg.org, timeout=10_000)
        self._write = self._client.write_api(write_options=SYNCHRONOUS)

    def flush_once(self) -> int:
        """Send one batch; returns how many points the server took (raises when it is down)."""
        from influxdb_client import WritePrecision  # noqa: PLC0415

        if self._conn is None:
            self._open()
        assert self._conn is not None
        rows = self._conn.execute("SELECT id, line FROM outbox ORDER BY id LIMIT ?", (self.cfg.batch,)).fetchall()
        if not rows:
            return 0
        self._write.write(bucket=self.cfg.bucket, org=self.cfg.org, record=[r[1] for r in rows],
                          write_precision=WritePrecision.S)
        with db.transaction(self._conn) as conn:
            conn.execute("DELETE FROM outbox WHERE id <= ?", (rows[-1][0],))
        return len(rows)

    def pending(self) -> int:
        if self._conn is None:
            self._open()
        assert self._conn is not None
        return self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    async def run(self, stop: asyncio.Event) -> None:
        backoff = self.cfg.flush_s
        while not stop.is_set():
            try:
                sent = await asyncio.to_thread(self.flush_once)
                self.counters["influx_points"] += sent
                backoff = self.cfg.flush_s
                if sent == self.cfg.batch:
                    continue  # more waiting: send the next batch at once
            except Exception as exc:  # noqa: BLE001 - any failure: keep the outbox, retry later
                self.counters["influx_errors"] += 1
                log.warning("influx export failed (%s); retrying in %.1f s", str(exc)[:200], backoff)
                await pause(stop, backoff)
                backoff = min(self.cfg.retry_max_s, backoff * 2)
                continue
            await pause(stop, self.cfg.flush_s)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._conn is not None:
            self._conn.close()
