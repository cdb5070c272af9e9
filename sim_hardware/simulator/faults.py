"""Fault injection: what goes wrong, on which device, over which stretch of simulated time.

Communication faults act on Modbus requests as the bus layer sees them:
  timeout    the device does not answer (the master's response timeout expires)
  delay      the device answers ``delay_s`` wall seconds late
  crc        the response leaves with corrupted CRC bytes (RTU framing)
  exception  the device answers with exception ``code`` (e.g. 04 device failure, 06 busy)
Model faults change the simulated hardware:
  power_loss     the device is off: no answers; a household meter's house is off (no load, PV or
                 battery flow, counters frozen); a battery inverter stops and comes back with
                 its volatile settings reset
  counter_reset  at ``start`` the meter's energy counters restart at ``value_kwh`` (replacement)

``rate`` < 1 affects that fraction of matching requests in a fixed, evenly spread pattern, so a
test sees exactly the configured share. Devices are matched with shell patterns ("hh*-meter").
A fault added while the simulator runs takes effect from the moment it is added.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim_hardware.simulator.clock import SimClock

log = logging.getLogger(__name__)

COMM_KINDS = ("timeout", "delay", "crc", "exception")
MODEL_KINDS = ("power_loss", "counter_reset")
KINDS = COMM_KINDS + MODEL_KINDS


@dataclass
class Fault:
    kind: str
    device: str
    start: float
    end: float = math.inf
    code: int = 4  # exception code (04: server device failure)
    delay_s: float = 0.0
    rate: float = 1.0
    value_kwh: float = 0.0
    functions: tuple[int, ...] = ()  # empty: every function code
    id: int = 0
    seen: int = field(default=0, compare=False)  # matching requests so far
    hits: int = field(default=0, compare=False)  # requests it acted on

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        if self.end < self.start:
            raise ValueError("a fault cannot end before it starts")
        if self.kind == "exception" and not 1 <= self.code <= 255:
            raise ValueError("exception code must be 1..255")

    def matches(self, device: str, t: float, function: int | None = None) -> bool:
        if not (self.start <= t < self.end and fnmatch.fnmatchcase(device, self.device)):
            return False
        return function is None or not self.functions or function in self.functions

    def take(self) -> bool:
        """Count one matching request; True when this one is affected (evenly spread rate)."""
        n = self.seen
        self.seen += 1
        hit = math.floor((n + 1) * self.rate) > math.floor(n * self.rate)
        self.hits += hit
        return hit


class FaultSchedule:
    """The faults of one simulation; thread-safe, changeable while it runs."""

    def __init__(self, clock: SimClock | None = None) -> None:
        self.clock = clock
        self._faults: list[Fault] = []
        self._next_id = 1
        self._lock = threading.Lock()
        self.revision = 0  # bumped on every change, so the model re-plans its events

    # ------------------------------------------------------------------------ editing
    def add(self, kind: str, device: str, start: float | None = None, end: float | None = None,
            duration: float | None = None, **params: Any) -> Fault:
        """Add a fault from ``start`` (simulated unix time; default: now) until ``end`` or for
        ``duration`` simulated seconds (default: until removed)."""
        if start is None:
            if self.clock is None:
                raise ValueError("start is required without a clock")
            start = self.clock.now()
        if end is None:
            end = start + duration if duration is not None else math.inf
        return self.add_fault(Fault(kind, device, float(start), float(end), **params))

    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            fault.id = self._next_id
            self._next_id += 1
            self._faults.append(fault)
            self.revision += 1
        log.info("fault added id=%d kind=%s device=%s start=%.1f end=%s", fault.id, fault.kind,
                 fault.device, fault.start, fault.end)
        return fault

    def remove(self, fault: Fault | int) -> None:
        fid = fault if isinstance(fault, int) else fault.id
        with self._lock:
            self._faults = [f for f in self._faults if f.id != fid]
            self.revision += 1
        log.info("fault removed id=%d", fid)

    def clear(self, device: str | None = None) -> None:
        """Remove every fault (of ``device``, when given)."""
        with self._lock:
            self._faults = [f for f in self._faults if device is not None and f.device != device]
            self.revision += 1

    def end_now(self, fault: Fault) -> None:
        """End a running fault at the current simulated time (a power loss's return)."""
        assert self.clock is not None
        with self._lock:
            fault.end = max(fault.start, self.clock.now())
            self.revision += 1

    def faults(self, device: str | None = None) -> list[Fault]:
        with self._lock:
            return [f for f in self._faults if device is None or f.device == device]

    # ------------------------------------------------------------------------ queries
    def request_fault(self, device: str, t: float, function: int) -> Fault | None:
        """The timeout, exception or delay fault that acts on this request, if any."""
        with self._lock:
            for kind in ("timeout", "exception", "delay"):
                for f in self._faults:
                    if f.kind == kind and f.matches(device, t, function) and f.take():
                        return f
        return None

    def corrupts(self, device: str, t: float) -> bool:
        """True when this response's CRC is to be corrupted."""
        with self._lock:
            return any(f.kind == "crc" and f.matches(device, t) and f.take()
                       for f in self._faults)

    def powered(self, device: str, t: float) -> bool:
        with self._lock:
            return not any(f.kind == "power_loss" and f.matches(device, t) for f in self._faults)

    def next_boundary(self, t: float) -> float:
        """The first start or end of a model fault after ``t``."""
        best = math.inf
        with self._lock:
            for f in self._faults:
                if f.kind not in MODEL_KINDS:
                    continue
                for edge in (f.start, f.end):
                    if t < edge < best:
                        best = edge
        return best

    def due_resets(self, device: str, t: float, applied: set[int]) -> list[Fault]:
        """Counter resets of ``device`` due by ``t`` and not in ``applied`` (ids)."""
        with self._lock:
            return [f for f in self._faults if f.kind == "counter_reset" and f.id not in applied
                    and f.start <= t and fnmatch.fnmatchcase(device, f.device)]


# ------------------------------------------------------------------------- faults files


def load_faults(path: Path | str, schedule: FaultSchedule, run_start: float) -> list[Fault]:
    """Add the faults of a TOML or JSON file to ``schedule``.

    Times are simulated seconds after the run's start instant (``start``, ``end``,
    ``duration``), or absolute unix times (``start_unix``, ``end_unix``)::

        [[fault]]
        kind = "exception"
        device = "hh001-meter"
        start = 3600
        duration = 900
        code = 6

    JSON: {"faults": [{...}, ...]} with the same keys.
    """
    path = Path(path)
    text = path.read_text()
    doc = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    entries = doc.get("faults", doc.get("fault", []))
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of faults")
    return [schedule.add_fault(_fault_from_entry(e, run_start, path)) for e in entries]


def _fault_from_entry(entry: dict[str, Any], run_start: float, path: Path) -> Fault:
    entry = dict(entry)
    try:
        kind, device = entry.pop("kind"), entry.pop("device")
    except KeyError as exc:
        raise ValueError(f"{path}: a fault needs {exc.args[0]!r}") from None
    start = entry.pop("start_unix", None)
    start = float(start) if start is not None else run_start + float(entry.pop("start", 0.0))
    end = entry.pop("end_unix", None)
    if end is None and "end" in entry:
        end = run_start + float(entry.pop("end"))
    if end is None and "duration" in entry:
        end = start + float(entry.pop("duration"))
    functions = tuple(entry.pop("functions", ()))
    allowed = {"code", "delay_s", "rate", "value_kwh"}
    unknown = set(entry) - allowed
    if unknown:
        raise ValueError(f"{path}: unknown fault keys {sorted(unknown)}")
    return Fault(kind, device, start, math.inf if end is None else float(end),
                 functions=functions, **entry)
