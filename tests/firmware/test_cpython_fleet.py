"""The same firmware code under CPython: 50 meters in one process against 50 simulated
households and a real Mosquitto, every reading stored once and acknowledged."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.firmware import harness

pytestmark = [pytest.mark.mosquitto]

N = 50


def test_fifty_meters_in_one_cpython_process(tmp_path, mosquitto, gateway):
    clock = harness.sim_clock(60)
    thread, sim = harness.start_sim(N, clock)
    try:
        configs = []
        for i in range(N):
            name = f"m{i:02d}"
            configs.append(harness.write_config(tmp_path / name, name, mosquitto.port,
                                                harness.device_link(sim, i), clock,
                                                max_intervals=4, poll_s=15))
        cmd, env = harness.firmware_command(configs[0], runtime="cpython")
        proc = subprocess.run([sys.executable, "-m", "tests.firmware.fleet", *map(str, configs)],
                              env=env, cwd=harness.REPO, capture_output=True, text=True,
                              timeout=240)
    finally:
        thread.stop()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    for i in range(N):
        name = f"m{i:02d}"
        harness.assert_all_acked_once(gateway, name, configs[i].parent, 4)
    assert len(gateway.snapshot()) >= 4 * N
