"""The local status endpoint: a tiny HTTP/1.1 server on asyncio streams (stdlib only).

GET /status (or /) returns the gateway's status JSON; GET /health returns {"ok", "health",
"reasons"} with 200 or 503 (the reasons say why, in words), for a monitoring probe. One request per connection, bounded in
size and time, so a stuck or hostile client cannot hold the daemon.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("tmeter.gateway.status")

MAX_REQUEST = 8192
REQUEST_TIMEOUT_S = 5.0


class StatusServer:
    def __init__(self, snapshot: Callable[[], dict[str, Any]], host: str, port: int) -> None:
        self.snapshot = snapshot
        self.host = host
        self.port = port
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=MAX_REQUEST)
        self.port = self._server.sockets[0].getsockname()[1]  # the real one when port was 0

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            method, path = (parts[0], parts[1].split(b"?")[0]) if len(parts) == 3 else (b"", b"")
            status, body = self._route(method, path)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            status, body = 400, {"error": "bad request"}
        except Exception:  # noqa: BLE001 - a status page bug must not reach the daemon
            log.exception("status endpoint failed")
            status, body = 500, {"error": "internal"}
        data = json.dumps(body, sort_keys=True).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  500: "Internal Server Error", 503: "Service Unavailable"}[status]
        try:
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT_S)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()

    def _route(self, method: bytes, path: bytes) -> tuple[int, dict[str, Any]]:
        if method != b"GET":
            return 405, {"error": "only GET"}
        if path in (b"/", b"/status"):
            return 200, self.snapshot()
        if path == b"/health":
            snap = self.snapshot()
            ok = snap["health"] == "ok"
            return (200 if ok else 503), {"ok": ok, "health": snap["health"], "reasons": snap.get("reasons", [])}
        return 404, {"error": "not found"}
