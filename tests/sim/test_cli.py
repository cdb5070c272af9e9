"""`tmeter sim run`: prints every device's endpoint, writes the manifest, applies a faults file,
and stops cleanly on SIGTERM and on Ctrl-C (SIGINT)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.framer import FramerType

from tests.sim.conftest import T0

REPO = Path(__file__).resolve().parents[2]


def start(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "tmeter", "sim", "run", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO)


def wait_ready(proc: subprocess.Popen[str], timeout: float = 30.0) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.strip() == "ready":
            return lines
    proc.kill()
    raise AssertionError(f"no 'ready' line; stdout {lines}, stderr {proc.communicate()[1]}")


def stop(proc: subprocess.Popen[str], sig: int) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sim_run_manifest_faults_and_clean_stop(tmp_path: Path, sig: int) -> None:
    manifest_path = tmp_path / "manifest.json"
    faults = tmp_path / "faults.toml"
    faults.write_text('[[fault]]\nkind = "exception"\ndevice = "hh001-meter"\ncode = 6\n'
                      'start = 0\nduration = 86400\n')
    proc = start("--meters", "2", "--speed", "60", "--start", str(T0), "--transport", "tcp",
                 "--manifest", str(manifest_path), "--faults", str(faults), "--meter-kind",
                 "mixed", "--log-level", "WARNING")
    lines = wait_ready(proc)
    manifest = json.loads(manifest_path.read_text())
    devices = {d["device_id"]: d for d in manifest["devices"]}
    assert set(devices) == {"hh000-meter", "hh000-battery", "hh001-meter", "hh001-battery",
                            "feeder-meter"}
    for d in devices.values():
        assert {"device_id", "kind", "transport", "host", "port", "unit"} <= set(d)
        assert d["transport"] == "tcp" and d["host"] == "127.0.0.1"
        assert any(d["device_id"] in line and f":{d['port']}" in line for line in lines)
    assert devices["hh000-meter"]["unit"] == 1 and devices["hh000-battery"]["unit"] == 2
    assert devices["hh000-meter"]["port"] == devices["hh000-battery"]["port"]
    assert devices["feeder-meter"]["port"] != devices["hh000-meter"]["port"]
    assert manifest["clock"]["start"] == T0 and manifest["clock"]["speed"] == 60

    try:
        hh0 = ModbusTcpClient("127.0.0.1", port=devices["hh000-meter"]["port"],
                              framer=FramerType.SOCKET, timeout=2, retries=0)
        hh1 = ModbusTcpClient("127.0.0.1", port=devices["hh001-meter"]["port"],
                              framer=FramerType.SOCKET, timeout=2, retries=0)
        assert hh0.connect() and hh1.connect()
        assert not hh0.read_input_registers(0x48, count=4, device_id=1).isError()
        rr = hh1.read_input_registers(0x48, count=4, device_id=1)
        assert rr.isError() and rr.exception_code == 6  # from the faults file
        hh0.close()
        hh1.close()
    finally:
        code = stop(proc, sig)
    assert code == 0


def test_sim_run_reports_a_bad_faults_file(tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text('{"faults": [{"kind": "meltdown", "device": "x"}]}')
    proc = start("--meters", "1", "--faults", str(faults))
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "meltdown" in err


def test_sim_without_subcommand_prints_help() -> None:
    result = subprocess.run([sys.executable, "-m", "tmeter", "sim"], capture_output=True,
                            text=True, timeout=30, cwd=REPO)
    assert result.returncode == 2 and "run" in result.stdout
