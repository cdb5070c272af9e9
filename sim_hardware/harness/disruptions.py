"""A scenario's disruptions of a running community: its fault steps (the actions of
sim_hardware/harness/scenario.py) applied when they are due, and each undone when its time is
up. The simulator's own Modbus fault schedule (sim_hardware/simulator/faults.py) is one of the
things they act on: a ``modbus_storm`` step adds to it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sim_hardware.harness.brokers import Broker
from sim_hardware.harness.processes import Process
from sim_hardware.harness.provisioning import Meter
from sim_hardware.harness.scenario import FaultStep
from sim_hardware.simulator.clock import SimClock
from sim_hardware.simulator.faultproxy import FaultProxy
from sim_hardware.simulator.faults import FaultSchedule

log = logging.getLogger(__name__)

LINK_ACTIONS = ("meter_offline", "link_delay")  # they need the meter's link through a fault proxy


def link_targets(steps: Iterable[FaultStep]) -> set[str]:
    """The meters whose MQTT link the steps cut or delay."""
    return {s.target for s in steps if s.action in LINK_ACTIONS}


def kill_targets(steps: Iterable[FaultStep]) -> set[str]:
    """The meters the steps kill: each needs a firmware process of its own."""
    return {s.target for s in steps if s.action == "meter_kill"}


@dataclass
class Targets:
    """What the steps act on."""

    broker: Broker
    gateway: Process
    meters: list[Meter]
    modbus: FaultSchedule  # the simulator's
    gateway_toml: Path | None = None  # for the tools that read the gateway's database


class Disruptions:
    """The steps of one run; ``apply_due`` is called as its time goes on."""

    def __init__(self, steps: Iterable[FaultStep], start: float, interval_s: int, clock: SimClock,
                 targets: Targets) -> None:
        self.start, self.interval_s, self.clock, self.targets = start, interval_s, clock, targets
        self.events: list[str] = []  # "<simulated time> <action> <target>", as applied
        self._pending = sorted(steps, key=lambda s: s.at_h)
        self._undo: list[tuple[float, Callable[[], None]]] = []
        self._meters = {m.meter: m for m in targets.meters}
        self._actions: dict[str, Callable[[FaultStep], None]] = {
            "broker_restart": self._broker_restart, "gateway_kill": self._gateway_kill,
            "meter_kill": self._meter_kill, "meter_offline": self._meter_offline,
            "link_delay": self._link_delay, "modbus_storm": self._modbus_storm,
            "key_rotate": self._key_rotate,
        }
        self.rotated: dict[str, str] = {}  # meter -> the tool's one-line answer

    def apply_due(self) -> None:
        """Undo what is over, then apply every step whose time has come."""
        now = self.clock.now()
        for due, undo in list(self._undo):
            if now >= due:
                undo()
                self._undo.remove((due, undo))
        while self._pending and now >= self.start + self._pending[0].at_h * 3600:
            step = self._pending.pop(0)
            self.events.append(f"{now:.0f} {step.action} {step.target}".strip())
            log.info("fault %s %s at %.0f", step.action, step.target, now)
            self._actions[step.action](step)

    def undo_all(self) -> None:
        for _due, undo in self._undo:
            undo()
        self._undo.clear()

    def _later(self, step: FaultStep, undo: Callable[[], None]) -> None:
        self._undo.append((self.clock.now() + step.intervals * self.interval_s, undo))

    def _proxy(self, meter_id: str) -> FaultProxy:
        proxy = self._meters[meter_id].proxy
        assert proxy is not None, f"{meter_id} has no fault proxy (see link_targets)"
        return proxy

    # Broker and gateway outages last real seconds: the run waits them out.
    def _broker_restart(self, step: FaultStep) -> None:
        self.targets.broker.stop()
        time.sleep(step.down_s)
        self.targets.broker.start()

    def _gateway_kill(self, step: FaultStep) -> None:
        self.targets.gateway.kill()
        time.sleep(step.down_s)
        self.targets.gateway.start()

    def _meter_kill(self, step: FaultStep) -> None:
        process = self._meters[step.target].process
        assert process is not None
        process.kill()
        self._later(step, process.start)

    def _meter_offline(self, step: FaultStep) -> None:
        proxy = self._proxy(step.target)
        proxy.refuse(True)
        proxy.cut()
        self._later(step, proxy.heal)

    def _link_delay(self, step: FaultStep) -> None:
        proxy = self._proxy(step.target)
        proxy.set_delay(step.delay_s)
        self._later(step, proxy.heal)

    def _key_rotate(self, step: FaultStep) -> None:
        # The operator's command, as a child process: it waits for the meter's answer (its
        # switch once its queue is empty), a few real seconds at most.
        from sim_hardware.harness.redteam import tmeter

        assert self.targets.gateway_toml is not None, "key_rotate needs the gateway's config"
        res = tmeter("fw", "rotate-key", step.target, "--config", str(self.targets.gateway_toml),
                     "--timeout", "40")
        self.rotated[step.target] = (res.stdout or res.stderr).strip()
        if res.returncode != 0:
            log.warning("key rotation of %s: %s", step.target, res.stderr.strip())

    def _modbus_storm(self, step: FaultStep) -> None:
        pattern = step.target or "hh*-meter"
        self.targets.modbus.add("crc", pattern, duration=step.intervals * self.interval_s, rate=step.rate)
