"""What a simulated community run is: households, time, market, and faults over time.

A scenario is a TOML file (``tmeter bench run SCENARIO.toml``) or built in code (the demo,
the end-to-end tests). Times of faults are simulated hours after the start.

    name = "broker-restart"
    meters = 5
    hours = 6
    speed = 600
    [[faults]]
    at_h = 2.0
    action = "broker_restart"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# 2026-06-10 00:00 UTC: a summer day, so PV surplus and the market have something to do.
DEFAULT_START = 1_781_049_600

ACTIONS = {
    "broker_restart": "stop the MQTT broker and start it again after `down_s` real seconds",
    "gateway_kill": "SIGKILL the gateway and restart it after `down_s` real seconds",
    "meter_kill": "SIGKILL a meter's firmware (power cut) and restart it `intervals` later",
    "meter_offline": "cut a meter's MQTT link for `intervals` market intervals",
    "link_delay": "delay a meter's MQTT link by `delay_s` for `intervals` intervals",
    "modbus_storm": "corrupt `rate` of Modbus answers of devices `target` for `intervals`",
    "key_rotate": "give meter `target` a new key over MQTT while it runs (`tmeter fw rotate-key`)",
}


class ScenarioError(ValueError):
    pass


@dataclass
class FaultStep:
    at_h: float
    action: str
    target: str = ""  # meter id, or a device pattern for modbus_storm ("hh*-meter")
    intervals: float = 1.0
    down_s: float = 2.0
    delay_s: float = 0.5
    rate: float = 0.5

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ScenarioError(f"unknown fault action {self.action!r}: one of {', '.join(ACTIONS)}")
        if self.at_h < 0 or self.intervals <= 0 or self.down_s < 0 or not 0 < self.rate <= 1:
            raise ScenarioError(f"fault {self.action} at {self.at_h} h: times and rate out of range")
        if self.action in ("meter_kill", "meter_offline", "link_delay", "key_rotate") and not self.target:
            raise ScenarioError(f"fault {self.action} at {self.at_h} h needs a target meter")


@dataclass
class Board:
    """A meter board in the loop. Its RS-485 port is wired to the USB RS-485 adapter at
    ``rs485``, which the simulator serves as the household's bus (meter unit 1, battery unit 2).
    With ``usb`` (the board's own USB serial port) the bench deploys the firmware and config
    itself with mpremote. ``emulate`` stands a local MicroPython process in for the board on a
    pty pair, so the serial path is tested without hardware."""

    rs485: str = ""
    usb: str = ""
    emulate: bool = False

    def __post_init__(self) -> None:
        if not self.emulate and not self.rs485:
            raise ScenarioError("a board needs rs485 = the serial port of its RS-485 adapter")


@dataclass
class Scenario:
    name: str = "community"
    community: str = "c1"
    meters: int = 10
    hours: float = 24.0
    speed: float = 720.0  # one day in two minutes
    interval_s: int = 900
    gate_closure_s: int = 60
    grace_s: int = 120
    mechanism: str = "uniform"
    runtime: str = "micropython"  # or "cpython": the same firmware code, for large N
    profile: str = "synthetic"
    seed: int = 0
    start: int = DEFAULT_START
    import_price: int = 300_000  # micro-currency per kWh
    export_price: int = 50_000
    allocation: str = "marginal"
    poll_s: int = 60  # simulated seconds between meter polls
    loss_tolerance: float = 0.01  # meters of accuracy class 1
    boards: list[Board] = field(default_factory=list)  # hardware in the loop, one per household
    broker_host: str = ""  # the broker's address as the boards reach it (HIL)
    faults: list[FaultStep] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.faults = [f if isinstance(f, FaultStep) else FaultStep(**f) for f in self.faults]
        self.boards = [b if isinstance(b, Board) else Board(**b) for b in self.boards]
        if self.meters < 1 or self.hours <= 0 or self.speed <= 0:
            raise ScenarioError("meters, hours and speed must be positive")
        if self.mechanism not in ("uniform", "p2p"):
            raise ScenarioError("mechanism must be uniform or p2p")
        if self.runtime not in ("micropython", "cpython"):
            raise ScenarioError("runtime must be micropython or cpython")
        if self.interval_s <= self.gate_closure_s or self.start % self.interval_s:  # 0: now
            raise ScenarioError("interval must exceed gate closure, and start on an interval boundary")
        if self.boards:
            self._check_boards()

    def _check_boards(self) -> None:
        if len(self.boards) != self.meters:
            raise ScenarioError("with boards, there is one household per board: meters = len(boards)")
        real = [b for b in self.boards if not b.emulate]
        if real and (self.speed != 1 or self.start != 0):
            raise ScenarioError("real boards keep real time: speed = 1 and start = 0 (now)")
        if real and not self.broker_host:
            raise ScenarioError("real boards need broker_host: the broker's address on their network")
        if self.runtime != "micropython":
            raise ScenarioError("boards run MicroPython")

    @property
    def end(self) -> int:
        """Simulated end: the last whole interval within ``hours``."""
        span = int(self.hours * 3600) // self.interval_s * self.interval_s
        return self.start + max(span, self.interval_s)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ScenarioError(f"unknown scenario keys: {', '.join(sorted(unknown))}")
        try:
            return cls(**data)
        except TypeError as e:
            raise ScenarioError(str(e)) from None

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ScenarioError(f"{path}: {e}") from None
        data.setdefault("name", Path(path).stem)
        return cls.from_dict(data)
