"""The member page and operator view served by the real daemon (real Mosquitto), on a database
with two members' bids, readings, awards and settlements over two days: login by the
provisioning link, the session cookie, 403 on another member's data, wrong and replaced links,
the rate limit, the CSV against gateway/bills.py, escaping; and a real headless Chromium driven
over the DevTools protocol logging in, reading the bill, being refused the other member's page
and downloading a proof that `tmeter ledger check-proof` accepts."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway import bills
from gateway.config import GatewayConfig
from gateway.daemon import GatewayThread
from gateway.registry import Registry
from gateway.web.auth import COOKIE
from gateway.web.member import SITE
from sim_hardware.harness.mosquitto import MosquittoBroker
from tests.gateway.conftest import INTERVAL_S, Offline, first_point_clearing, make_config, populate, wait_until

pytestmark = pytest.mark.mosquitto
ROOT = Path(__file__).parents[2]
# Two minutes before a UTC midnight: the populated intervals fall on two days.
START = 1_700_006_400.0 - 2 * INTERVAL_S


@dataclass
class Served:
    cfg: GatewayConfig
    base: str
    tokens: dict[str, str]
    operator: str
    gw: GatewayThread


def serve(tmp_path: Path, broker: MosquittoBroker, intervals: int = 3, **web: Any) -> Served:
    cfg = make_config(tmp_path, broker, interval_s=INTERVAL_S, gate_closure_s=10)
    cfg.settlement.grace_s = 5
    for name, value in web.items():
        setattr(cfg.web, name, value)
    off = Offline(cfg, START)
    populate(off, meters=2, intervals=intervals)
    off.conn.close()
    reg = Registry(cfg.db)
    tokens = {m: reg.issue_member_token(m) for m in reg.meters()}
    reg.close()
    gw = GatewayThread(cfg, first_point_clearing).start()
    assert gw.gateway.status_server is not None
    operator = cfg.operator_token_path.read_text().strip()
    assert cfg.operator_token_path.stat().st_mode & 0o077 == 0
    return Served(cfg, f"http://127.0.0.1:{gw.gateway.status_server.port}", tokens, operator, gw)


@pytest.fixture
def served(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[Served]:
    s = serve(tmp_path, mosquitto, login_failures=5)
    try:
        yield s
    finally:
        s.gw.stop()


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes
    session: str | None  # the session cookie it set

    @property
    def text(self) -> str:
        return self.body.decode()


def get(url: str, session: str | None = None) -> Reply:
    async def go() -> Reply:
        headers = {"Cookie": f"{COOKIE}={session}"} if session else {}
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client, \
                client.get(url, headers=headers, allow_redirects=False) as r:
            morsel = r.cookies.get(COOKIE)
            return Reply(r.status, r.headers, await r.read(), morsel.value if morsel else None)
    return asyncio.run(go())


def login(s: Served, meter: str) -> str:
    r = get(f"{s.base}/m/{meter}?t={s.tokens[meter]}")
    assert r.status == 200 and r.session, r.text
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert s.tokens[meter] not in r.text.replace(f"?t={s.tokens[meter]}", "")  # the page drops the token
    return r.session


def bill_of(cfg: GatewayConfig, meter: str, first_iv: int | None = None, last_iv: int | None = None) -> bills.MemberBill:
    from gateway import db

    conn = db.connect_readonly(cfg.db)
    try:
        got = bills.member_bills(conn, bills.Tariff(cfg.market.import_price, cfg.market.export_price), first_iv, last_iv)
    finally:
        conn.close()
    return next(b for b in got if b.member == meter)


def test_a_member_link_logs_in_and_the_page_shows_its_bill_in_money(served: Served) -> None:
    session = login(served, "m000")
    page = get(f"{served.base}/m/m000", session)
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    whole = bill_of(served.cfg, "m000")
    assert whole.community != 0 and whole.intervals == 3
    # One month: its line is the whole bill, in money, and so is the saving against going it alone.
    assert f"{bills.currency(whole.community)} EUR" in page.text
    assert f"saving <span class=\"{'gain' if whole.saving >= 0 else 'loss'}\">{bills.currency(whole.saving)} EUR" \
        in page.text
    assert "Alone = the same energy at the grid prices" in page.text
    for section in ("Current interval", "Bids", "Awards", "Trades", "Readings", "Inclusion proofs"):
        assert f"<h2>{section}" in page.text
    assert page.text.count('class="proof"') == 3  # one per interval with records
    assert get(f"{served.base}/web.css").status == 200


def test_no_session_a_wrong_link_and_a_replaced_link_are_refused(served: Served) -> None:
    assert get(f"{served.base}/m/m000").status == 401
    assert get(f"{served.base}/m/m000?t=not-the-token").status == 403
    assert get(f"{served.base}/m/m000?t={served.tokens['m001']}").status == 403  # another member's link
    assert get(f"{served.base}/m/nobody?t={served.tokens['m000']}").status == 403
    session = login(served, "m000")
    forged = session.replace("m000", "m001", 1)
    assert get(f"{served.base}/m/m001", forged).status == 401  # the signature covers the meter
    tampered = session[:-1] + ("0" if session[-1] != "0" else "1")
    assert get(f"{served.base}/m/m000", tampered).status == 401
    reg = Registry(served.cfg.db)
    new = reg.issue_member_token("m000")
    reg.close()
    assert get(f"{served.base}/m/m000?t={served.tokens['m000']}").status == 403  # the old link ...
    assert get(f"{served.base}/m/m000", session).status == 403  # ... and its session end
    served.tokens["m000"] = new
    assert get(f"{served.base}/m/m000", login(served, "m000")).status == 200


def test_a_member_cannot_open_another_members_page_bills_or_proofs(served: Served) -> None:
    session = login(served, "m000")
    cp = get(f"{served.base}/m/m000/checkpoint", session)
    assert cp.status == 200
    size = int(cp.text.splitlines()[1])
    for path in ("", "/bills.csv", f"/proof?iv={int(START) // INTERVAL_S + 1}&size={size}", "/checkpoint",
                 "/pubkey"):
        assert get(f"{served.base}/m/m001{path}", session).status == 403, path
        assert get(f"{served.base}/m/m000{path}", session).status == 200, path
        assert get(f"{served.base}/m/m000{path}").status == 401, path


def test_wrong_links_from_one_address_are_rate_limited(served: Served) -> None:
    for _ in range(5):  # [web] login_failures = 5
        assert get(f"{served.base}/m/m000?t=guess").status == 403
    assert get(f"{served.base}/m/m000?t=guess").status == 429
    assert get(f"{served.base}/m/m000?t={served.tokens['m000']}").status == 429  # even the right one, for now
    assert get(f"{served.base}/operator?t={served.operator}").status == 429
    assert served.gw.gateway.status_server is not None
    site = served.gw.gateway.status_server.app[SITE]
    assert (site.limit.failed, site.limit.refused) == (5, 3)


def test_the_csv_has_the_numbers_of_gateway_bills_per_day(served: Served) -> None:
    r = get(f"{served.base}/m/m001/bills.csv", login(served, "m001"))
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/csv")
    assert 'filename="m001-bills.csv"' in r.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["day"] for row in rows] == ["2023-11-14", "2023-11-15"]
    assert sum(int(row["intervals"]) for row in rows) == 3
    for row in rows:
        want = bill_of(served.cfg, "m001", int(row["first_iv"]), int(row["last_iv"]))
        assert (int(row["bill_community_micro"]), int(row["bill_alone_micro"]), int(row["saving_micro"]),
                int(row["energy_in_wh"]), int(row["energy_out_wh"]), int(row["intervals"])) == \
            (want.community, want.alone, want.saving, want.energy_in_wh, want.energy_out_wh, want.intervals)
        assert row["alone_basis"] == "tariff" and row["member"] == "m001"
    assert sum(int(row["bill_community_micro"]) for row in rows) == bill_of(served.cfg, "m001").community


def test_the_operator_view_lists_meters_escaped_and_the_ledger(served: Served) -> None:
    from gateway import db

    conn = db.connect(served.cfg.db)  # a row no registry call would write: an id that is markup
    conn.execute("INSERT INTO meters(meter, community, created, mqtt_hash) VALUES (?, 'c1', 0, 'x')",
                 ("<script>alert(1)</script>",))
    conn.close()
    assert get(f"{served.base}/operator").status == 401
    assert get(f"{served.base}/operator?t=wrong").status == 403
    assert get(f"{served.base}/operator", login(served, "m000")).status == 401  # a member is not the operator
    r = get(f"{served.base}/operator?t={served.operator}")
    assert r.status == 200 and r.session
    page = get(f"{served.base}/operator", r.session).text
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<td>m000</td>" in page and "<td>m001</td>" in page
    conn = db.connect_readonly(served.cfg.db)
    leaves, size = conn.execute("SELECT (SELECT COUNT(*) FROM leaves), (SELECT MAX(size) FROM checkpoints)").fetchone()
    conn.close()
    assert f"{leaves} leaves; latest checkpoint size {size} " in page
    assert "<td>not reported</td>" in page  # the firmware version: the status does not carry one


# --- A real browser: Debian's chromium, headless, over the Chrome DevTools protocol.

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium with a page, driven over its DevTools websocket (CDP)."""

    def __init__(self, profile: Path, downloads: Path) -> None:
        self.profile, self.downloads = profile, downloads
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--disable-extensions",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        assert wait_until(lambda: port_file.exists() and len(port_file.read_text().splitlines()) >= 2, timeout=30)
        self.port = int(port_file.read_text().splitlines()[0])
        self._id = 0

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    async def session(self) -> Any:
        async with aiohttp.ClientSession() as client, client.get(f"http://127.0.0.1:{self.port}/json/list") as r:
            pages = [t for t in await r.json() if t["type"] == "page"]
        return pages[0]["webSocketDebuggerUrl"]


class Page:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        await self.ws.send_json({"id": self._id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=30)
            if msg.get("id") == self._id:
                assert "error" not in msg, msg
                return msg["result"]

    async def navigate(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # loaded, and past the login page's refresh
            state = await self.eval("document.readyState + ' ' + location.href")
            if state.startswith("complete") and "?t=" not in state:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"page did not load: {url}")

    async def eval(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (tests/peers.sh installs it)")
def test_in_chromium_a_member_logs_in_sees_the_bill_is_refused_another_page_and_checks_a_proof(
        served: Served, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser = Browser(Path(tempfile.mkdtemp(dir=tmp_path)), downloads)
    whole = bill_of(served.cfg, "m000")

    async def drive() -> dict[str, Any]:
        async with aiohttp.ClientSession() as client, \
                client.ws_connect(await browser.session(), max_msg_size=0) as ws:
            page = Page(ws)
            await page.call("Page.enable")
            await page.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
            await page.call("Emulation.setDeviceMetricsOverride", width=360, height=740, deviceScaleFactor=2,
                            mobile=True)  # a phone
            await page.navigate(f"{served.base}/m/m000?t={served.tokens['m000']}")
            seen: dict[str, Any] = {
                "url": await page.eval("location.href"),
                "bill": await page.eval("document.getElementById('bill').innerText"),
                "status": await page.eval("performance.getEntriesByType('navigation')[0].responseStatus"),
                "overflow": await page.eval("document.documentElement.scrollWidth - window.innerWidth"),
                "cookie_visible": await page.eval("document.cookie"),
            }
            await page.eval("document.querySelector('a.proof').click()")
            await page.eval("document.getElementById('checkpoint').click()")
            await page.eval("document.getElementById('pubkey').click()")
            await asyncio.to_thread(wait_until, lambda: len([p for p in downloads.iterdir()
                                                             if not p.name.endswith(".crdownload")]) >= 3, 30)
            await page.navigate(f"{served.base}/m/m001")
            seen["other_status"] = await page.eval("performance.getEntriesByType('navigation')[0].responseStatus")
            seen["other_text"] = await page.eval("document.body.innerText")
            return seen

    try:
        seen = asyncio.run(drive())
    finally:
        browser.close()
    assert seen["url"] == f"{served.base}/m/m000" and seen["status"] == 200  # the token left the address bar
    assert f"{bills.currency(whole.community)} EUR" in seen["bill"] and "saving" in seen["bill"]
    assert seen["overflow"] <= 0, "the page scrolls sideways on a phone"
    assert seen["cookie_visible"] == ""  # HttpOnly: no script reads the session
    assert seen["other_status"] == 403 and "another member" in seen["other_text"]
    files = {p.name: p for p in downloads.iterdir()}
    proof = next(p for n, p in files.items() if n.endswith("-proof.json"))
    note = next(p for n, p in files.items() if n.endswith(".note"))
    out = subprocess.run([sys.executable, "-m", "tmeter", "ledger", "check-proof", "--proof", str(proof),
                          "--checkpoint", str(note), "--pubkey", str(files["gateway-ledger.pub.pem"])],
                         capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "proof OK" in out.stdout and "meter=m000" in out.stdout
    assert json.loads(proof.read_text())["verified"] is True


def test_provision_prints_a_working_link_once_and_rotate_member_link_replaces_it(tmp_path: Path) -> None:
    from gateway import db
    from gateway.web import memberdata

    toml = tmp_path / "gateway.toml"
    toml.write_text('community = "c1"\ndb = "g.db"\n[web]\npublic_url = "https://energy.example.org/"\n')

    def provision(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tmeter", "provision", "m01", "--config", str(toml), "--out",
                               str(tmp_path / "m01.json"), *extra], capture_output=True, text=True, timeout=60,
                              cwd=ROOT)

    def token(out: subprocess.CompletedProcess[str]) -> str:
        assert out.returncode == 0, out.stderr
        (line,) = [x for x in out.stdout.splitlines() if "member link" in x]
        link = line.rsplit(" ", 1)[1]
        assert link.startswith("https://energy.example.org/m/m01?t=")
        return link.split("?t=", 1)[1]

    def stored() -> str | None:
        conn = db.connect_readonly(tmp_path / "g.db")
        try:
            return memberdata.web_hash(conn, "m01")
        finally:
            conn.close()

    first = token(provision())
    assert memberdata.token_matches(stored(), first)
    device = (tmp_path / "m01.json").read_text()
    assert first not in device and json.loads(device)["key"] not in first
    rotated = provision("--rotate")  # a new key keeps the member's link
    assert rotated.returncode == 0 and "member link" not in rotated.stdout
    assert memberdata.token_matches(stored(), first)
    second = token(provision("--rotate-member-link"))
    assert second != first and memberdata.token_matches(stored(), second)
    assert not memberdata.token_matches(stored(), first)
    assert provision("--rotate-member-link").returncode == 0
    unknown = subprocess.run([sys.executable, "-m", "tmeter", "provision", "nobody", "--db", str(tmp_path / "g.db"),
                              "--rotate-member-link"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert unknown.returncode == 2 and "not provisioned" in unknown.stderr


def test_a_session_expires_and_names_the_member_it_was_issued_to() -> None:
    from gateway.web.auth import Sessions

    sessions = Sessions(lifetime_s=3600)
    value = sessions.issue("member", "m01", "ab" * 32, now=1000.0)
    assert sessions.check(value, now=1000.0 + 3599) is not None
    assert sessions.check(value, now=1000.0 + 3601) is None
    assert Sessions(3600).check(value, now=1000.0) is None  # another start-up's key: not ours
    session = sessions.check(value, now=1000.0)
    assert session is not None and (session.role, session.subject) == ("member", "m01")


def test_the_page_escapes_what_it_shows_and_lists_trades() -> None:
    from gateway.web import memberdata, pages

    view = memberdata.MemberView("m01", 100, "open")
    view.awards = [(99, 500, 120_000, [["<img src=x onerror=alert(1)>", 300, 110_000], ["m02", 200, 130_000]])]
    view.months = [memberdata.BillLine("2026-12", 1, 1, 1, 500, 0, 60_000, 150_000)]
    html = pages.member_page(view, 900, "EUR", 0.0)
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<td>m02</td><td>200 Wh</td><td>0.13 EUR</td>" in html
    assert 'Latest month (2026-12): 0.06 EUR, saving <span class="gain">0.09 EUR</span>' in html
    assert pages.render("<p>{x}</p>", x='"><script>') == "<p>&quot;&gt;&lt;script&gt;</p>"


def test_audit_paths_in_one_walk_are_rfc_6962_paths() -> None:
    import random

    from gateway.ledger import merkle
    from gateway.web.memberdata import audit_paths

    rng = random.Random(14)
    for n in range(1, 70):
        hashes = [rng.randbytes(32) for _ in range(n)]
        targets = rng.sample(range(n), min(n, 5))
        got = audit_paths(hashes, targets)
        assert {t: got[t] for t in targets} == {t: merkle.inclusion_proof(t, hashes) for t in targets}, n


def test_under_the_running_daemon_a_prune_leaves_kept_proofs_and_names_pruned_ones(
        tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    """`tmeter ledger archive` and `prune --before --yes` (VACUUM included) while the daemon runs:
    it goes on serving, a kept record's proof verifies, a pruned one's request says it was archived."""
    served = serve(tmp_path / "gw", mosquitto, intervals=6)
    try:
        _prune_under(served, tmp_path)
    finally:
        served.gw.stop()


def _prune_under(served: Served, tmp_path: Path) -> None:
    import sqlite3

    from gateway.ledger import archive
    from tests.gateway.conftest import tmeter

    db = str(served.cfg.db)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    first_iv = int(START) // INTERVAL_S + 1
    last_leaf = conn.execute("SELECT MAX(idx) FROM leaves WHERE iv=? AND meter='m000'", (first_iv,)).fetchone()[0]
    # The first checkpoint whose cut lies after the first interval's leaves: it goes, later ones stay.
    mid = next(size for (size,) in conn.execute("SELECT size FROM checkpoints ORDER BY size")
               if archive.period_start(conn, size) > last_leaf)
    res = tmeter("ledger", "archive", "--db", db, "--from", "0", "--to", str(mid), "--out", str(tmp_path / "p.db"))
    assert res.returncode == 0, res.stderr
    res = tmeter("ledger", "prune", "--db", db, "--before", str(mid), "--yes")
    assert res.returncode == 0 and "VACUUM" in res.stdout, res.stdout + res.stderr
    ivs = [r[0] for r in conn.execute("SELECT iv FROM readings WHERE meter='m000' ORDER BY iv")]
    conn.close()
    assert first_iv not in ivs and ivs, (ivs, res.stdout)  # the first interval went, a later one stayed
    session = login(served, "m000")
    size = int(get(f"{served.base}/m/m000/checkpoint", session).text.splitlines()[1])
    gone = get(f"{served.base}/m/m000/proof?iv={first_iv}&size={size}", session)
    assert gone.status == 404 and "archived (checkpoints 0.." in gone.text and str(tmp_path) not in gone.text
    kept = get(f"{served.base}/m/m000/proof?iv={ivs[-1]}&size={size}", session)
    assert kept.status == 200 and json.loads(kept.text)["verified"], kept.text
    assert get(f"{served.base}/m/m000", session).status == 200
