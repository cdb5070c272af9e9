"""The households' Modbus buses in a community run: one simulator thread serves every bus,
over RTU-over-TCP to local meters, or over a serial line to a board in the loop (its USB
RS-485 adapter, or for an emulated board one end of a socat pty pair whose other end the
local firmware opens)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from sim_hardware.harness.scenario import Board, Scenario
from sim_hardware.simulator.clock import SimClock
from sim_hardware.simulator.server import SimConfig, Simulator, SimulatorThread


def sim_config(sc: Scenario) -> SimConfig:
    """The simulated community of a scenario: its households, their meters, the feeder."""
    return SimConfig(meters=sc.meters, seed=sc.seed, profile=sc.profile, transport="rtu-tcp", feeder=True)


class Buses:
    """The simulator with the lines to its meters; ``pty_dir`` holds the emulated boards' ptys."""

    def __init__(self, scenario: Scenario, clock: SimClock, pty_dir: Path) -> None:
        self.scenario, self.clock, self.pty_dir = scenario, clock, pty_dir
        self.thread: SimulatorThread | None = None
        self.ptys: list[subprocess.Popen[bytes]] = []

    def start(self) -> Simulator:
        sc = self.scenario
        config = sim_config(sc)
        if sc.boards:
            # Each household's bus on the serial port its board is wired to; the feeder stays
            # on RTU over TCP with a local meter process.
            config.transport = "serial"
            config.serial_ports = [self._serial_port(i, b) for i, b in enumerate(sc.boards)]
            # Real RS-485 at the meters' 9600 baud; emulated lines as fast as the TCP links,
            # since an accelerated clock would stretch 9600-baud frames into minutes.
            config.baudrate = 115200 if all(b.emulate for b in sc.boards) else 9600
        self.thread = SimulatorThread(config, clock=self.clock)
        return self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None
        for pty in self.ptys:
            pty.terminate()
            pty.wait(5)
        self.ptys.clear()

    def board(self, index: int) -> Board | None:
        """The board of household ``index`` (-1: the feeder, never a board)."""
        boards = self.scenario.boards
        return boards[index] if 0 <= index < len(boards) else None

    def link(self, sim: Simulator, device: str, index: int) -> str:
        """The link the meter at household ``index`` (-1: feeder) reads its bus through, as its
        device config names it."""
        board = self.board(index)
        if board is not None:
            return "tty:" + str(self._pty_end(index, "board")) if board.emulate else "uart"
        endpoint = sim.endpoint_of(device)
        return f"tcp:{endpoint.host}:{endpoint.port}"

    def _pty_end(self, index: int, side: str) -> Path:
        return self.pty_dir / f"bus{index}-{side}"

    def _serial_port(self, index: int, board: Board) -> str:
        """The simulator's end of a board's RS-485 line."""
        if not board.emulate:
            return board.rs485
        self.pty_dir.mkdir(parents=True, exist_ok=True)
        sim_end, board_end = self._pty_end(index, "sim"), self._pty_end(index, "board")
        self.ptys.append(subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={sim_end}", f"pty,raw,echo=0,link={board_end}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + 10
        while not (sim_end.exists() and board_end.exists()):
            if time.time() > deadline:
                raise RuntimeError("socat did not create the pty pair (apt-get install socat)")
            time.sleep(0.05)
        return str(sim_end)
