"""The aiohttp application of the gateway's web endpoints.

GET /status (or /) returns the daemon's status JSON; GET /health returns {"ok", "health",
"reasons"} with 200 or 503 (the reasons say why, in words), for a monitoring probe; GET /metrics
is the Prometheus text exposition (gateway/ops/metrics.py). Errors of these are JSON too, so a
client never has to parse HTML. The member page and operator view (HTML, gateway/web/member.py)
are added when the app is made for a running gateway.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("tmeter.gateway.web")

MAX_BODY = 8192  # nothing here takes a body: a larger one is refused (413) before it is read
Snapshot = Callable[[], dict[str, Any]]
Metrics = Callable[[], Awaitable[tuple[bytes, str]]]  # -> (exposition, its content type)
SNAPSHOT = web.AppKey("snapshot", Snapshot)
METRICS = web.AppKey("metrics", Metrics)


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=json.dumps(body, sort_keys=True).encode(),
                        content_type="application/json")


async def status(request: web.Request) -> web.Response:
    return _json(200, request.app[SNAPSHOT]())


async def health(request: web.Request) -> web.Response:
    snap = request.app[SNAPSHOT]()
    ok = snap["health"] == "ok"
    return _json(200 if ok else 503, {"ok": ok, "health": snap["health"], "reasons": snap.get("reasons", [])})


async def metrics(request: web.Request) -> web.Response:
    body, content_type = await request.app[METRICS]()
    # prometheus-client's type carries parameters (version, charset): set the header whole.
    return web.Response(body=body, headers={"Content-Type": content_type})


@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    """404, 405 and 413 as JSON, and a handler's bug as a 500 that never reaches the daemon. A body
    larger than MAX_BODY (or of no stated length) is refused before any handler sees it: aiohttp's
    ``client_max_size`` only bounds bodies a handler reads."""
    if request.body_exists and (request.content_length is None or request.content_length > MAX_BODY):
        return _json(413, {"error": "request body too large"})
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed:
        return _json(405, {"error": "only GET"})
    except web.HTTPException as exc:
        return _json(exc.status, {"error": (exc.reason or "error").lower()})
    except Exception:  # noqa: BLE001 - a status page bug must not reach the daemon
        log.exception("web endpoint %s failed", request.path)
        return _json(500, {"error": "internal"})


def create_app(snapshot: Snapshot, scrape: Metrics | None = None, site: Any = None) -> web.Application:
    """``site``: the member pages' MemberSite (gateway/web/member.py), None for none."""
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY)
    if site is not None:
        from gateway.web.member import add_routes  # noqa: PLC0415

        add_routes(app, site)
    app[SNAPSHOT] = snapshot
    app.router.add_get("/", status)
    app.router.add_get("/status", status)
    app.router.add_get("/health", health)
    if scrape is not None:
        app[METRICS] = scrape
        app.router.add_get("/metrics", metrics)
    return app
