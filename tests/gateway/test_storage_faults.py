"""Storage faults against the real daemon process, real files and Mosquitto: the database removed
while running (no ack into the orphan, /health 503, a rescued copy, no silent new ledger at the
next start), a database locked by another process and a full disk (/health 503 with the reason,
nothing acked, back to 200 by itself)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from protocols import messages
from sim_hardware.harness.mosquitto import MosquittoBroker
from sim_hardware.harness.redteam import health, start, status, stop
from sim_hardware.netutil import free_port
from tests.gateway.conftest import make_config, provision, wait_until
from tests.gateway.meters import AckCollector, Fleet, publisher
from tests.gateway.test_crash import write_toml

pytestmark = pytest.mark.mosquitto
ROOT = Path(__file__).parents[2]


def gateway_toml(cfg: GatewayConfig, path: Path) -> tuple[Path, int]:
    port = free_port()
    write_toml(cfg, path)
    path.write_text(path.read_text().replace("http_port = 0", f"http_port = {port}"))
    return path, port


class Meters:
    """A fleet that resends what was not acked, and everything it was ever acked."""

    def __init__(self, cfg: GatewayConfig, broker: MosquittoBroker, n: int) -> None:
        self.cfg = cfg
        self.specs = provision(cfg, n)
        self.fleet = Fleet(cfg.community, cfg.interval_s, self.specs)
        self.acks = AckCollector(broker.host, broker.port, cfg.community, {s.meter: s.key for s in self.specs})
        self.pub = publisher(broker.host, broker.port)

    def produce_and_send(self) -> set[tuple[str, int, int]]:
        before = set(self.fleet.unacked)
        self.fleet.produce(messages.interval_index(time.time(), self.cfg.interval_s))
        self.fleet.send(self.pub)
        return set(self.fleet.unacked) - before

    def acked(self) -> set[tuple[str, int, int]]:
        with self.acks.lock:
            self.fleet.forget_acked(self.acks.acks)
            return set(self.acks.acks)

    def resend_until_acked(self, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.acked()
            if not self.fleet.unacked:
                return True
            self.fleet.send(self.pub)
            time.sleep(0.5)
        return False

    def close(self) -> None:
        self.pub.loop_stop()
        self.acks.close()


def stored(db: str | Path) -> set[tuple[str, int, int]]:
    conn = sqlite3.connect(str(db))
    try:
        return set(conn.execute("SELECT meter, boot, seq FROM readings"))
    finally:
        conn.close()


def run_once(toml: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tmeter", "gateway", "run", "--config", str(toml), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def serve_until_healthy(toml: Path, port: int, log: Path, *extra: str) -> None:
    """Run the daemon until /health says 200, then stop it cleanly (exit 0)."""
    proc = start(toml, log, *extra)
    try:
        assert wait_until(lambda: health(port)[0] == 200, 30)
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_database_removed_while_running_stops_acks_and_needs_init(tmp_path: Path,
                                                                  mosquitto: MosquittoBroker) -> None:
    cfg = make_config(tmp_path, mosquitto)
    toml, port = gateway_toml(cfg, tmp_path / "gateway.toml")
    meters = Meters(cfg, mosquitto, 3)
    proc = start(toml, tmp_path / "log")
    try:
        assert wait_until(lambda: health(port)[0] == 200, 30), health(port)
        meters.produce_and_send()
        assert meters.resend_until_acked()
        acked_before = meters.acked()
        os.remove(cfg.db)
        after = meters.produce_and_send()
        assert wait_until(lambda: health(port)[0] == 503, 15)
        code, body = health(port)
        assert body["health"] == "storage" and any("database replaced or removed" in r for r in body["reasons"])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # scraped on, without it
            scraped = r.read().decode()
        assert 'tmeter_problem{code="storage"} 1.0' in scraped and "tmeter_database_readable 0.0" in scraped
        assert "tmeter_ledger_leaves" not in scraped  # nothing read from whatever is at the path now
        for _ in range(6):  # meters keep resending: never acked into the orphaned file
            meters.fleet.send(meters.pub)
            time.sleep(0.5)
        assert not (meters.acked() & after)
        assert status(port)["counters"].get("db_replaced") == 1
        assert status(port)["counters"].get("store_refused", 0) >= 1
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not Path(cfg.db).exists() and not Path(f"{cfg.db}-wal").exists()
    rescued = sorted(tmp_path.glob("gateway.db.rescued-*"))
    assert len(rescued) == 1 and rescued[0].stat().st_mode & 0o777 == 0o600
    assert acked_before <= stored(rescued[0]) and not (stored(rescued[0]) & after)

    # The next start refuses to begin a second ledger beside the existing key ...
    out = run_once(toml)
    assert out.returncode == 2 and not Path(cfg.db).exists()
    assert "--init" in out.stderr and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    # ... and --init never replaces a database that exists.
    rescued[0].rename(cfg.db)
    out = run_once(toml, "--init")
    assert out.returncode == 2 and "exists" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    proc = start(toml, tmp_path / "log")  # the restored database: everything acked is there
    try:
        assert meters.resend_until_acked(), "the meters' records were not taken after the restore"
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        meters.close()
    assert meters.acked() <= stored(cfg.db)


def test_init_creates_a_new_ledger_only_when_asked(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    cfg = make_config(tmp_path, mosquitto)
    toml, port = gateway_toml(cfg, tmp_path / "gateway.toml")
    serve_until_healthy(toml, port, tmp_path / "log")  # the very first run needs no --init
    assert cfg.key_path.exists()
    os.remove(cfg.db)
    assert run_once(toml).returncode == 2
    serve_until_healthy(toml, port, tmp_path / "log", "--init")
    assert Path(cfg.db).exists()


def test_locked_database_makes_health_503_and_recovers(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    cfg = make_config(tmp_path, mosquitto)
    toml, port = gateway_toml(cfg, tmp_path / "gateway.toml")
    meters = Meters(cfg, mosquitto, 3)
    proc = start(toml, tmp_path / "log")
    other = sqlite3.connect(cfg.db, isolation_level=None, timeout=1)
    try:
        assert wait_until(lambda: health(port)[0] == 200, 30)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        sent = meters.produce_and_send()
        assert wait_until(lambda: health(port)[0] == 503, 20), health(port)
        body = health(port)[1]
        assert body["health"] == "storage" and any("waited" in r for r in body["reasons"])
        assert not (meters.acked() & sent)
        other.execute("ROLLBACK")
        assert meters.resend_until_acked()
        assert wait_until(lambda: health(port)[0] == 200, 30), health(port)
        assert stop(proc) == 0
    finally:
        other.close()
        if proc.poll() is None:
            proc.kill()
        meters.close()
    assert meters.acked() <= stored(cfg.db)


@pytest.fixture
def small_disk(tmp_path: Path):  # noqa: ANN201
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_disk_full_makes_health_503_and_recovers(tmp_path: Path, mosquitto: MosquittoBroker,
                                                 small_disk: Path) -> None:
    cfg = make_config(tmp_path, mosquitto, db=str(small_disk / "gateway.db"))
    toml, port = gateway_toml(cfg, tmp_path / "gateway.toml")
    meters = Meters(cfg, mosquitto, 3)
    proc = start(toml, tmp_path / "log")
    filler = small_disk / "filler"
    try:
        assert wait_until(lambda: health(port)[0] == 200, 30)
        with filler.open("wb") as f:  # fill the disk to the last block
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        sent: set[tuple[str, int, int]] = set()
        for _ in range(20):
            sent |= meters.produce_and_send()
            if health(port)[0] == 503:
                break
            time.sleep(0.5)
        code, body = health(port)
        assert code == 503 and body["health"] == "storage", body
        assert any("cannot be stored" in r for r in body["reasons"])
        assert status(port)["counters"].get("store_failed", 0) >= 1
        unacked = set(meters.fleet.unacked)
        filler.unlink()
        assert meters.resend_until_acked()
        assert wait_until(lambda: health(port)[0] == 200, 30), health(port)
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        meters.close()
    assert unacked and meters.acked() <= stored(cfg.db)
