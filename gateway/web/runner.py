"""Serving the web application on the daemon's own event loop, with explicit start and stop.

Requests are bounded so a stuck or hostile client cannot hold the daemon: header lines and
fields are capped (aiohttp refuses larger ones with 400), bodies by the application's
``client_max_size``, and a connection idle for ``IDLE_S`` (before its first request too) is
closed.
"""

from __future__ import annotations

import logging

from aiohttp import web

# aiohttp logs every malformed request with a traceback at ERROR: a hostile client could fill the
# Pi's log with them. Handler failures are logged by the application (app.py ``json_errors``).
logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)

IDLE_S = 5.0
MAX_LINE = 8190
MAX_HEADERS = 64


class WebServer:
    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port  # 0: any free port; the real one once started
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, keepalive_timeout=IDLE_S,
                                     max_line_size=MAX_LINE, max_field_size=MAX_LINE, max_headers=MAX_HEADERS,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
