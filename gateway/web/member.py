"""The member page (``/m/<meter>``) and the operator view (``/operator``) on the gateway's web server.

A member opens the link from provisioning once (``?t=<token>``, gateway/registry.py): the token
is checked against its stored hash and traded for a session cookie (gateway/web/auth.py), and the
page reloads without the token. Another member's page, its CSV and its proofs answer 403; no
session answers 401; a wrong link is counted against the client's address and past the limit
answered 429. The operator logs in the same way with the token of ``[web] operator_token_file``
(``/operator?t=<token>``). Everything is GET and changes nothing, so no request from another
site can do harm; the cookie is SameSite=Strict besides.

Downloads: the member's bills per day as CSV (gateway/bills.py's columns for a period), a proof
of the member's records in one interval as `tmeter ledger prove` writes it, the checkpoint note
it was made under, and the gateway's public key: with these three, `tmeter ledger check-proof`
gives its verdict offline. The database is read on a read-only connection in a worker thread
(gateway/web/memberdata.py); proofs one at a time, since each reads the tree's leaves.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from gateway.bills import BILL_COLUMNS, Tariff
from gateway.ledger import note, retention
from gateway.registry import token_hash
from gateway.web import memberdata as data
from gateway.web import pages
from gateway.web.auth import COOKIE, FailureLimit, Session, Sessions, fingerprint_matches, load_or_create_token

# The daemon's Gateway (gateway/daemon.py) is passed in, typed as Any: the daemon imports this
# module, and an import back (even for types only) would make a circle of the two.
Gateway = Any

log = logging.getLogger("tmeter.gateway.web")
T = TypeVar("T")
DB_TIMEOUT_S = 10.0
PROOF_TIMEOUT_S = 60.0
OPERATOR = "-"
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none';"
                               " frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


@dataclass
class MemberSite:
    """What the pages need of the gateway, gathered once at start."""

    db_path: str
    community: str
    interval_s: int
    tariff: Tariff
    unit: str
    current_iv: Callable[[], int]
    now: Callable[[], float]  # the gateway's clock: status and reading times are on it
    public_pem: bytes
    operator_hash: str
    sessions: Sessions
    limit: FailureLimit
    secure: bool
    available: Callable[[], bool] = lambda: True

    @classmethod
    def from_gateway(cls, gw: Gateway) -> MemberSite:
        cfg = gw.cfg
        return cls(cfg.db, cfg.community, cfg.interval_s, Tariff(cfg.market.import_price, cfg.market.export_price),
                   cfg.homeassistant.currency, lambda: gw.current_iv, gw.clock.now,
                   note.public_pem(gw.ledger.signing_key.public_key()),
                   token_hash(load_or_create_token(cfg.operator_token_path)), Sessions(cfg.web.session_s),
                   FailureLimit(cfg.web.login_failures, cfg.web.login_window_s),
                   cfg.web_url.startswith("https://"), lambda: not gw.db_gone)

    def __post_init__(self) -> None:
        self._proofs = asyncio.Semaphore(1)

    async def read(self, fn: Callable[[sqlite3.Connection], T], timeout: float = DB_TIMEOUT_S) -> T:
        return await asyncio.wait_for(asyncio.to_thread(data.read, self.db_path, fn), timeout)


SITE = web.AppKey("member_site", MemberSite)


def _html(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/html", charset="utf-8", headers=HEADERS)


def _refused(status: int) -> web.Response:
    title, text = {
        401: ("Please log in", "Open the member link your operator gave you."),
        403: ("Not yours", "This page belongs to another member, or the link is no longer valid (it may have"
                           " been replaced: ask your operator for the new one)."),
        429: ("Too many attempts", "Too many wrong links from this address: try again later."),
        503: ("Not available", "The gateway cannot read its database right now."),
    }[status]
    return _html(status, pages.message(title, text))


def _login(site: MemberSite, role: str, subject: str, stored: str, to: str) -> web.Response:
    """Trade a valid link for a session cookie and reload without the token. A 200 page that moves
    on by itself, not a redirect: a browser opening the link from a mail or chat app would not
    send a SameSite=Strict cookie on a redirect that app's navigation started."""
    resp = _html(200, pages.page("Logged in", pages.render(
        '<meta http-equiv="refresh" content="0; url={to}"><p>Logged in. <a href="{to}">Continue</a></p>', to=to)))
    resp.set_cookie(COOKIE, site.sessions.issue(role, subject, stored), max_age=site.sessions.lifetime_s,
                    path="/", httponly=True, samesite="Strict", secure=site.secure)
    return resp


def _session(site: MemberSite, request: web.Request) -> Session | None:
    return site.sessions.check(request.cookies.get(COOKIE))


async def _member(site: MemberSite, request: web.Request, meter: str) -> web.Response | None:
    """None if the request may see ``meter``'s data, else the answer that refuses it."""
    if not site.available():
        return _refused(503)
    session = _session(site, request)
    if session is None or session.role != "member":
        return _refused(401)
    if session.subject != meter:
        return _refused(403)
    stored = await site.read(lambda c: data.web_hash(c, meter))
    return None if fingerprint_matches(session, stored) else _refused(403)


async def _token_login(site: MemberSite, request: web.Request, token: str, role: str, subject: str,
                       stored: Callable[[], Any], to: str) -> web.Response:
    address = request.remote or "?"
    if site.limit.blocked(address):
        return _refused(429)
    known = await stored()
    if not data.token_matches(known, token):
        site.limit.fail(address)
        log.info("web: wrong %s link from %s", role, address)
        return _refused(403)
    return _login(site, role, subject, known, to)


async def member_page(request: web.Request) -> web.Response:
    site, meter = request.app[SITE], request.match_info["meter"]
    token = request.query.get("t")
    if token is not None:
        if not site.available():
            return _refused(503)
        return await _token_login(site, request, token, "member", meter,
                                  lambda: site.read(lambda c: data.web_hash(c, meter)), f"/m/{meter}")
    if (refused := await _member(site, request, meter)) is not None:
        return refused
    iv = site.current_iv()
    view = await site.read(lambda c: data.member_view(c, meter, iv, site.interval_s, site.tariff))
    return _html(200, pages.member_page(view, site.interval_s, site.unit, site.now()))


def bills_csv_text(days: list[data.BillLine], meter: str, basis: str) -> str:
    """One row per day: the day, then gateway/bills.py's columns (BILL_COLUMNS) for that day's
    intervals, money in integer micro-currency (+ the member pays)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(("day", *BILL_COLUMNS))
    for b in days:
        w.writerow((b.period, meter, b.first_iv, b.last_iv, b.intervals, b.energy_in_wh, b.energy_out_wh,
                    b.community, b.alone, b.saving, basis))
    return out.getvalue()


async def bills_csv(request: web.Request) -> web.Response:
    site, meter = request.app[SITE], request.match_info["meter"]
    if (refused := await _member(site, request, meter)) is not None:
        return refused
    days = await site.read(lambda c: data.all_bill_days(c, meter, site.interval_s, site.tariff))
    return web.Response(text=bills_csv_text(days, meter, site.tariff.basis), content_type="text/csv",
                        charset="utf-8", headers={**HEADERS, "Content-Disposition":
                                                  f'attachment; filename="{meter}-bills.csv"'})


def _int(request: web.Request, name: str) -> int | None:
    try:
        value = int(request.query[name])
    except (KeyError, ValueError):
        return None
    return value if 0 <= value < 2 ** 62 else None


async def proof(request: web.Request) -> web.Response:
    site, meter = request.app[SITE], request.match_info["meter"]
    if (refused := await _member(site, request, meter)) is not None:
        return refused
    iv, size = _int(request, "iv"), _int(request, "size")
    if iv is None or size is None:
        return _html(400, pages.message("Bad request", "A proof needs an interval and a checkpoint size."))
    async with site._proofs:
        doc = await site.read(lambda c: data.proof_document(c, meter, iv, size), PROOF_TIMEOUT_S)
    if doc is None:
        held = await site.read(lambda c: retention.where_pruned(c, iv))
        if held is not None:  # the member learns which archive, not where the operator keeps it
            return _html(404, pages.message("Pruned", f"That interval's records were archived (checkpoints"
                                            f" {held.first}..{held.last}, SHA-256 {held.sha256[:16]}...) and"
                                            " pruned from the gateway: ask the operator for a proof from the"
                                            " archive."))
        return _html(404, pages.message("No proof", "No record of yours in that interval under that checkpoint."))
    return web.Response(text=json.dumps(doc, indent=1) + "\n", content_type="application/json", headers={
        **HEADERS, "Content-Disposition": f'attachment; filename="{meter}-{iv}-proof.json"'})


async def checkpoint(request: web.Request) -> web.Response:
    site, meter = request.app[SITE], request.match_info["meter"]
    if (refused := await _member(site, request, meter)) is not None:
        return refused
    size = _int(request, "size")
    cp = await site.read(lambda c: data.latest_checkpoint(c, size))
    if cp is None:
        return _html(404, pages.message("No checkpoint", "No signed checkpoint of that size."))
    return web.Response(body=cp.note, content_type="text/plain", headers={
        **HEADERS, "Content-Disposition": f'attachment; filename="checkpoint-{cp.size}.note"'})


async def pubkey(request: web.Request) -> web.Response:
    site, meter = request.app[SITE], request.match_info["meter"]
    if (refused := await _member(site, request, meter)) is not None:
        return refused
    return web.Response(body=site.public_pem, content_type="application/x-pem-file", headers={
        **HEADERS, "Content-Disposition": 'attachment; filename="gateway-ledger.pub.pem"'})


async def operator(request: web.Request) -> web.Response:
    site = request.app[SITE]
    if not site.available():
        return _refused(503)
    token = request.query.get("t")
    if token is not None:
        async def stored() -> str:
            return site.operator_hash
        return await _token_login(site, request, token, "operator", OPERATOR, stored, "/operator")
    session = _session(site, request)
    if session is None or session.role != "operator":
        return _refused(401)
    if not fingerprint_matches(session, site.operator_hash):
        return _refused(403)
    view = await site.read(lambda c: data.operator_view(c, site.community))
    return _html(200, pages.operator_page(view, site.interval_s, site.now(), site.limit.failed, site.limit.refused))


async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(text=pages.CSS, content_type="text/css", headers={"Cache-Control": "max-age=3600"})


def add_routes(app: web.Application, site: MemberSite) -> None:
    app[SITE] = site
    app.router.add_get("/web.css", stylesheet)
    app.router.add_get("/operator", operator)
    app.router.add_get("/m/{meter}", member_page)
    app.router.add_get("/m/{meter}/bills.csv", bills_csv)
    app.router.add_get("/m/{meter}/proof", proof)
    app.router.add_get("/m/{meter}/checkpoint", checkpoint)
    app.router.add_get("/m/{meter}/pubkey", pubkey)
