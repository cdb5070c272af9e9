"""The daemon as systemd runs it: sd_notify READY and WATCHDOG, clean SIGTERM; the example config."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from gateway import config
from sim_hardware.harness.mosquitto import MosquittoBroker
from tests.gateway.conftest import make_config
from tests.gateway.test_crash import start, write_toml

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.mosquitto


def test_example_config_loads_with_every_section() -> None:
    cfg = config.load(ROOT / "deploy" / "gateway.toml")
    assert cfg.community == "c1" and cfg.market.mechanism == "uniform" and cfg.ledger.origin
    with pytest.raises(config.ConfigError):
        config.from_dict({"mqtt": {"hots": "x"}})


def test_systemd_notify_watchdog_and_clean_sigterm(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    cfg = make_config(tmp_path, mosquitto)
    toml = write_toml(cfg, tmp_path / "gateway.toml")
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(15)
    proc = start(toml, tmp_path / "log", NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="400000")
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 15
        while not ({"READY=1", "WATCHDOG=1"} <= set(seen)) and time.monotonic() < deadline:
            seen.extend(sock.recv(4096).decode().split("\n"))
        assert "READY=1" in seen and "WATCHDOG=1" in seen
        proc.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in seen:
            seen.extend(sock.recv(4096).decode().split("\n"))
            if len(seen) > 30:
                proc.send_signal(signal.SIGUSR2)
                time.sleep(1)
                print((tmp_path / "log").read_text())
                break
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_broker_warnings_name_the_broker(tmp_path: Path) -> None:
    # An operator reading the log must see which broker did not answer.
    import signal
    import socket
    import time

    from sim_hardware.harness.redteam import start
    from tests.gateway.conftest import make_config
    from tests.gateway.test_crash import write_toml

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = make_config(tmp_path, None)
    cfg.mqtt.host, cfg.mqtt.port = "127.0.0.1", port
    log = tmp_path / "gateway.log"
    proc = start(write_toml(cfg, tmp_path / "gateway.toml"), log)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and f"broker 127.0.0.1:{port}" not in log.read_text():
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert f"broker 127.0.0.1:{port}" in log.read_text()


def test_an_unreadable_operator_token_file_is_one_line_at_start(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    import subprocess
    import sys

    from tests.gateway.conftest import ROOT, make_config
    from tests.gateway.test_crash import write_toml

    cfg = make_config(tmp_path, mosquitto)
    toml = write_toml(cfg, tmp_path / "gateway.toml")
    (tmp_path / "token-dir").mkdir()
    toml.write_text(toml.read_text() + f'[web]\noperator_token_file = "{tmp_path / "token-dir"}"\n')
    out = subprocess.run([sys.executable, "-m", "tmeter", "gateway", "run", "--config", str(toml)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1].startswith("tmeter gateway run: operator token file")
    assert "Traceback" not in out.stderr
