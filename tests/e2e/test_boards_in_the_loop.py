"""The hardware-in-the-loop path without hardware: each "board" is the real firmware under the
MicroPython unix port talking Modbus RTU over a serial line (a socat pty pair) that the
simulator serves as the household's RS-485 bus, exactly as a USB RS-485 adapter would be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim_hardware.harness.community import run_scenario
from sim_hardware.harness.scenario import Board, Scenario, ScenarioError


@pytest.mark.micropython
@pytest.mark.mosquitto
def test_emulated_boards_on_serial_lines(tmp_path: Path) -> None:
    # Slower than the TCP runs: a Modbus transaction over the tty takes real milliseconds that
    # an accelerated clock turns into simulated minutes.
    scenario = Scenario(name="boards", meters=2, hours=2, speed=240,
                        boards=[Board(emulate=True), Board(emulate=True)])
    result = run_scenario(scenario, tmp_path / "run", broker="mosquitto", drain_s=60)
    assert result.drained
    assert result.report.ok, [f"{c.name}: {c.detail}" for c in result.report.failures()]
    links = {json.loads((m.folder / "config.json").read_text())["modbus"]["link"]
             for m in result.community.meters[:2]}
    assert len(links) == 2 and all(link.startswith("tty:") for link in links)  # one line each


def test_real_boards_need_real_time_and_a_reachable_broker() -> None:
    board = Board(rs485="/dev/ttyUSB0")
    with pytest.raises(ScenarioError, match="real time"):
        Scenario(meters=1, boards=[board], speed=720)
    with pytest.raises(ScenarioError, match="broker_host"):
        Scenario(meters=1, boards=[board], speed=1, start=0)
    with pytest.raises(ScenarioError, match="one household per board"):
        Scenario(meters=2, boards=[board], speed=1, start=0, broker_host="192.0.2.1")
    with pytest.raises(ScenarioError, match="rs485"):
        Board()
    Scenario(meters=1, boards=[board], speed=1, start=0, broker_host="192.0.2.1")
