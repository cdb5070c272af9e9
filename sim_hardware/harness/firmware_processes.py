"""The meters' firmware in a community run: under MicroPython one process per meter, like one
board per household; under CPython fleets of meters sharing a process (sim_hardware/harness/fleet.py),
so hundreds fit on one machine; on real boards in the loop, deployed with mpremote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sim_hardware.harness.processes import Process
from sim_hardware.harness.provisioning import Meter
from tmeter.fwtools.build import DEFAULT_BUILD, build, deploy_commands
from tmeter.fwtools.runner import firmware_command

FLEET_SIZE = 25  # CPython meters per process


def start_firmware(meters: list[Meter], runtime: str, alone: set[str], cwd: Path, logs: Path) -> None:
    """Start every meter's firmware, each meter named in ``alone`` in a process of its own (so
    killing it takes only that meter down); each meter's ``process`` is set."""
    if runtime == "micropython":
        for meter in meters:
            if meter.board is not None and not meter.board.emulate:
                deploy_to_board(meter)
            else:
                start_process(meter.meter, [meter], "micropython", cwd, logs)
        return
    groups = [[m] for m in meters if m.meter in alone]
    rest = [m for m in meters if m.meter not in alone]
    groups += [rest[i:i + FLEET_SIZE] for i in range(0, len(rest), FLEET_SIZE)]
    for n, group in enumerate(groups):
        start_process(f"fleet-{n}", group, "cpython", cwd, logs)


def start_process(name: str, meters: list[Meter], runtime: str, cwd: Path, logs: Path) -> Process:
    """One process running the firmware of ``meters``, its log at ``logs/<name>.log``."""
    first = meters[0]
    cmd, env = firmware_command(first.config_path, first.folder, runtime)
    if len(meters) > 1:
        cmd = [sys.executable, "-m", "sim_hardware.harness.fleet"] + [str(m.config_path.resolve()) for m in meters]
    process = Process(name, cmd, env, cwd, logs / f"{name}.log")
    for meter in meters:
        meter.process = process
    process.start()
    return process


def deploy_to_board(meter: Meter) -> None:
    """Flash config and firmware onto a real board over its USB port (mpremote), or say how
    to; the board then runs on its own and joins over MQTT."""
    assert meter.board is not None
    if not meter.board.usb:
        print(f"{meter.meter}: flash the board wired to {meter.board.rs485} with: "
              f"tmeter fw deploy --port <its USB port> --config {meter.config_path}", flush=True)
        return
    if not (DEFAULT_BUILD / "xtensawin").is_dir():
        build(DEFAULT_BUILD)
    for cmd in deploy_commands(DEFAULT_BUILD, meter.board.usb, meter.config_path):
        subprocess.run(cmd, check=True, timeout=300)
