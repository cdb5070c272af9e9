"""The gateway's web endpoints on aiohttp, against the real daemon (in-process, real Mosquitto):
the routes and their JSON errors, and the bounds a stuck or hostile client meets (an oversized
header, an idle connection, a body where none is taken)."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.config import GatewayConfig
from gateway.daemon import GatewayThread
from gateway.web.runner import IDLE_S
from sim_hardware.harness.mosquitto import MosquittoBroker
from tests.gateway.conftest import first_point_clearing, provision

pytestmark = pytest.mark.mosquitto


@pytest.fixture
def port(gw_config: GatewayConfig, mosquitto: MosquittoBroker) -> Iterator[int]:
    provision(gw_config, 2)
    gw = GatewayThread(gw_config, first_point_clearing).start()
    try:
        assert gw.gateway.status_server is not None
        yield gw.gateway.status_server.port
    finally:
        gw.stop()


def request(port: int, path: str, method: str = "GET", data: bytes | None = None) -> tuple[int, str, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


def raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes as they are and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_routes_answer_json_as_before(port: int) -> None:
    code, ctype, body = request(port, "/status")
    snap = json.loads(body)
    assert code == 200 and ctype.startswith("application/json") and snap["community"] == "c1"
    assert json.loads(request(port, "/")[2])["community"] == "c1"
    code, _, body = request(port, "/health")
    assert (code, json.loads(body)) == (200, {"health": "ok", "ok": True, "reasons": []})
    code, ctype, body = request(port, "/nope")
    assert code == 404 and ctype.startswith("application/json") and json.loads(body) == {"error": "not found"}
    code, _, body = request(port, "/status", "POST", b"{}")
    assert code == 405 and json.loads(body) == {"error": "only GET"}
    code, ctype, body = request(port, "/metrics")
    assert code == 200 and ctype.startswith("text/plain") and b"tmeter_healthy 1.0" in body


def test_requests_are_bounded(port: int) -> None:
    huge = b"GET /status HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 20_000 + b"\r\n\r\n"
    assert raw(port, huge).split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
    body = b"x" * 100_000
    code, _, _ = request(port, "/health", "GET", body)
    assert code == 413
    # A client that connects and sends nothing, or half a request, is dropped after IDLE_S.
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        idle = list(pool.map(lambda p: raw(port, p, timeout=IDLE_S * 4), (b"", b"GET /status HTTP/1.1\r\nHost:")))
    assert idle == [b"", b""] and time.monotonic() - started < IDLE_S * 3
    assert request(port, "/health")[0] == 200  # and the daemon serves on
