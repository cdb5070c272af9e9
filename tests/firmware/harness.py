"""Test harness: a Mosquitto broker, simulated households (sim_hardware), the fake gateway,
and meter firmware processes (MicroPython unix port, or CPython) with their own folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sim_hardware.simulator.clock import SimClock
from sim_hardware.simulator.server import SimConfig, SimulatorThread
from tmeter.fwtools.runner import find_micropython, micropython_env

REPO = Path(__file__).resolve().parents[2]
START = 1_710_000_000  # simulated start: a whole number of intervals


def meter_key(meter: str) -> bytes:
    return bytes((i * 7 + len(meter) + ord(meter[-1])) & 0xFF for i in range(32))


def signing_key(folder: Path, skid: int = 1) -> bytes:
    """Give the meter in ``folder`` its signing key pair, as `tmeter fw keygen` does on the
    device (firmware/keygen.py, run here in CPython); returns the public key."""
    from firmware import keygen
    folder.mkdir(parents=True, exist_ok=True)
    pub = keygen.make(str(folder), skid)
    assert pub is not None, f"{folder} has a signing key already"
    return pub


def sim_clock(speed: float) -> SimClock:
    return SimClock(START, time.time(), speed)


def start_sim(meters: int, clock: SimClock) -> tuple[SimulatorThread, object]:
    thread = SimulatorThread(SimConfig(meters=meters, transport="rtu-tcp", feeder=False), clock=clock)
    sim = thread.start()
    return thread, sim


def device_link(sim, index: int) -> str:
    h = sim.household(index)
    ep = sim.endpoint_of(h.meter_id)
    return f"tcp:{ep.host}:{ep.port}"


def write_config(folder: Path, meter: str, broker_port: int, link: str, clock: SimClock,
                 interval_s: int = 60, gate_closure_s: int = 10, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "meter": meter, "community": "c1", "kid": 1, "key": meter_key(meter).hex(),
        "interval_s": interval_s, "gate_closure_s": gate_closure_s,
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "user": None, "password": None,
                 "tls": False, "ca": None, "keepalive_s": 5, "retry_s": 2, "backoff_max_s": 2},
        "wifi": {"ssid": "", "password": ""}, "ntp_host": "pool.ntp.org",
        "modbus": {"link": link, "baud": 115200, "meter_unit": 1, "meter_model": "sdm630",
                   "battery_unit": 2, "timeout_ms": 150, "retries": 2},
        "prefs": {"pv_price": 10000, "import_wtp": 300000, "battery_price_empty": 250000,
                  "battery_price_full": 50000, "import_price": 300000, "feed_in_price": 50000},
        "clock": clock.to_dict(),
        "ack_timeout_s": 3, "status_s": 2, "poll_s": 5,
    }
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    path = folder / "config.json"
    path.write_text(json.dumps(cfg))
    from tmeter.fwtools import build as fw_build
    fw_build.write_plan(path)  # as `tmeter fw run/deploy` do
    return path


def firmware_command(config: Path, runtime: str = "micropython", heapsize: str | None = None,
                     build: Path | None = None) -> tuple[list[str], dict[str, str]]:
    env = micropython_env()
    if runtime == "micropython":
        cmd = [find_micropython()]
        if heapsize:
            cmd += ["-X", f"heapsize={heapsize}"]
        cmd += ["-m", "firmware.main", str(config), str(config.parent)]
        if build is not None:
            env["MICROPYPATH"] = ".frozen:" + str(build)
    else:
        cmd = [sys.executable, "-m", "firmware.main", str(config), str(config.parent)]
        env["PYTHONPATH"] = str(REPO)
    return cmd, env


class Meter:
    """One firmware process; its output goes to <folder>/log.txt."""

    def __init__(self, config: Path, runtime: str = "micropython", heapsize: str | None = None,
                 build: Path | None = None) -> None:
        self.config = config
        self.runtime = runtime
        self.heapsize = heapsize
        self.build = build
        self.proc: subprocess.Popen | None = None
        self.log = config.parent / "log.txt"

    def start(self) -> "Meter":
        cmd, env = firmware_command(self.config, self.runtime, self.heapsize, self.build)
        out = open(self.log, "a")
        # cwd: the meter's folder, so `firmware` is imported from MICROPYPATH, not ./firmware
        self.proc = subprocess.Popen(cmd, env=env, cwd=self.config.parent, stdout=out,
                                     stderr=subprocess.STDOUT)
        out.close()
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def assert_all_acked_once(gw, meter: str, folder: Path, expect_min: int) -> list[dict]:
    """Every reading the meter produced is stored exactly once by the gateway, none lost: the
    sequence numbers run without a gap from 0, nothing is left queued on the meter, and no
    two different bodies ever shared a (meter, boot, seq)."""
    readings = gw.snapshot(meter)
    seqs = [r["seq"] for r in readings]
    assert seqs == list(range(len(seqs))), f"gap or duplicate in sequence numbers: {seqs}"
    assert len(readings) >= expect_min, f"only {len(readings)} readings"
    assert gw.rejected.get("conflict", 0) == 0
    queued = [n for n in os.listdir(folder / "q") if not n.endswith(".tmp")]
    assert queued == [], f"still queued on the meter: {queued}"
    ivs = [r["iv"] for r in readings]
    assert len(set(ivs)) == len(ivs), "two readings for one interval"
    with gw.lock:
        for r in readings:
            ident = (meter, r["boot"], r["seq"])
            assert gw.acks_sent[ident] >= 1
    for r in readings:
        assert r["imp_wh"] >= 0 and r["exp_wh"] >= 0
    return readings
