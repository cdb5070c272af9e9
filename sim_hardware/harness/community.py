"""A whole community on one machine: broker, simulated households, one firmware instance per
household (MicroPython unix port, or CPython for large N), the gateway process and an
observer; runs a scenario with its faults and checks the invariants afterwards.

It is what `tmeter demo`, `tmeter bench run`, the end-to-end tests and bench/e2e.py share:

    with CommunityRun(scenario, out_dir) as community:
        community.run()                    # until the scenario's end, faults applied on time
        community.drain()                  # until every record is acknowledged and settled
    report = community.invariants()        # after stop: nothing lost, ledger verifies, ...

Every process writes its log under ``out_dir/logs``; the gateway database, the meters' state
folders and configs stay in ``out_dir`` for inspection (``tmeter ledger verify --db``). The
parts it composes: brokers.py, buses.py, provisioning.py, gateway_process.py,
firmware_processes.py, disruptions.py (all in sim_hardware/harness/).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim_hardware.harness.brokers import Broker, make_broker
from sim_hardware.harness.buses import Buses
from sim_hardware.harness.disruptions import Disruptions, Targets, kill_targets, link_targets
from sim_hardware.harness.firmware_processes import start_firmware
from sim_hardware.harness.gateway_process import gateway_config, start_gateway, write_config
from sim_hardware.harness.invariants import InvariantReport
from sim_hardware.harness.invariants import check as check_invariants
from sim_hardware.harness.observer import CommunityObserver
from sim_hardware.harness.processes import Process
from sim_hardware.harness.provisioning import (
    Meter,
    provision,
    queued,
    route_through_proxies,
    stop_proxies,
)
from sim_hardware.harness.scenario import Scenario
from sim_hardware.simulator.clock import SimClock
from sim_hardware.simulator.server import Simulator

LEAD_S = 3.0  # real seconds between start-up and the scenario's first instant


class CommunityRun:
    def __init__(self, scenario: Scenario, out: Path, broker: str = "embedded") -> None:
        if scenario.start == 0:  # "now": the next boundary (boards in the loop keep real time)
            start = (int(time.time() + LEAD_S) // scenario.interval_s + 1) * scenario.interval_s
            scenario = dataclasses.replace(scenario, start=start)
        self.scenario = scenario
        self.out = Path(out).resolve()  # child processes run in other folders
        self.broker_kind = broker
        self.broker: Broker | None = None
        epoch = scenario.start if scenario.speed == 1 and any(not b.emulate for b in scenario.boards) \
            else time.time() + LEAD_S
        self.clock = SimClock(scenario.start, epoch, scenario.speed)
        self.buses = Buses(scenario, self.clock, self.out / "pty")
        self.sim: Simulator | None = None
        self.meters: list[Meter] = []
        self.keys: dict[tuple[str, int], bytes] = {}
        self.gateway: Process | None = None
        self._gateway_config: dict[str, Any] | None = None
        self.observer: CommunityObserver | None = None
        self._observer_stop: Callable[[], None] | None = None
        self._observer_thread: threading.Thread | None = None
        self.disruptions: Disruptions | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def db_path(self) -> Path:
        return self.out / "gateway.db"

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    def start(self) -> CommunityRun:
        if self.db_path.exists() or (self.out / "meters").exists():
            # A second run over the first would meet its database and meter state: its
            # intervals already settled, its sequence numbers taken.
            raise FileExistsError(f"{self.out} holds an earlier run: choose a new folder")
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        try:
            self._start_parts()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_parts(self) -> None:
        sc = self.scenario
        self.broker = broker = make_broker(self.broker_kind, self.out / "mosquitto")
        broker.start()
        self.sim = sim = self.buses.start()
        assert self.buses.thread is not None
        self.meters, self.keys = provision(sc, sim, self.buses, broker, self.clock, self.db_path,
                                           self.out / "meters")
        route_through_proxies(self.meters, link_targets(sc.faults), broker, self.buses.thread.run)
        self._gateway_config = gateway_config(sc, self.db_path, broker, self.clock)
        write_config(self._gateway_config, self.out / "gateway.toml")
        self.gateway = start_gateway(self.out / "gateway.toml", self.out, self.logs / "gateway.log")
        self._start_observer(broker)
        start_firmware(self.meters, sc.runtime, kill_targets(sc.faults), self.out, self.logs)
        self.disruptions = Disruptions(sc.faults, sc.start, sc.interval_s, self.clock,
                                       Targets(broker, self.gateway, self.meters, sim.faults,
                                               self.out / "gateway.toml"))

    def stop(self) -> None:
        """Stop everything that runs, meters first (their last records stay queued on disk)."""
        for meter in self.meters:
            if meter.process is not None:
                meter.process.stop()
        if self.gateway is not None:
            self.gateway.stop(timeout=30)
        if self._observer_stop is not None:
            self._observer_stop()
            if self._observer_thread is not None:
                self._observer_thread.join(10)
            self._observer_stop = None
        if self.buses.thread is not None:
            stop_proxies(self.meters, self.buses.thread.run)
        self.buses.stop()
        if self.broker is not None:
            self.broker.stop()

    def __enter__(self) -> CommunityRun:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def gateway_config(self) -> dict[str, Any]:
        """The config the gateway was started with."""
        assert self._gateway_config is not None, "the run has not started"
        return self._gateway_config

    def _key(self, meter: str, kid: int) -> bytes | None:
        """A meter's key: the provisioned ones, or one a rotation (key_rotate) made since."""
        key = self.keys.get((meter, kid))
        if key is None:
            from gateway.registry import Registry

            reg = Registry(self.db_path)
            try:
                key = reg.key(meter, kid)
            finally:
                reg.close()
            if key is not None:
                self.keys[(meter, kid)] = key
        return key

    def _start_observer(self, broker: Broker) -> None:
        """The observer on its own event loop in a thread, for the live table and the report."""
        sc = self.scenario
        observer = CommunityObserver(sc.community, self._key,
                                     span=(sc.start // sc.interval_s, self.end_iv))
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()

        def main() -> None:
            loop.run_until_complete(observer.run(broker.host, broker.port, stop))
            loop.close()

        self.observer = observer
        self._observer_stop = lambda: loop.call_soon_threadsafe(stop.set)
        self._observer_thread = threading.Thread(target=main, name="observer", daemon=True)
        self._observer_thread.start()

    # ------------------------------------------------------------------ running
    @property
    def events(self) -> list[str]:
        """The faults applied so far, "<simulated time> <action> <target>"."""
        return self.disruptions.events if self.disruptions is not None else []

    def now(self) -> float:
        return self.clock.now()

    def run(self, until: float | None = None, on_tick: Callable[[], None] | None = None,
            tick_s: float = 0.5) -> None:
        """Run until simulated time ``until`` (default: the scenario's end plus one interval,
        so the last interval is read and cleared), applying faults when they are due."""
        assert self.disruptions is not None, "start the run first"
        end = until if until is not None else self.scenario.end + self.scenario.interval_s
        while self.now() < end:
            self.disruptions.apply_due()
            if self.gateway is not None and not self.gateway.alive:
                raise RuntimeError(f"the gateway exited; see {self.gateway.log_path}")
            if on_tick is not None:
                on_tick()
            time.sleep(min(tick_s, max(0.01, self.clock.wall_at(end) - time.time())))
        self.disruptions.undo_all()

    # ------------------------------------------------------------------ after the run
    @property
    def end_iv(self) -> int:
        """The first interval after the scenario: records from here on may stay queued."""
        return self.scenario.end // self.scenario.interval_s

    def queued(self, before_iv: int | None = None) -> list[tuple[str, int, int]]:
        """(meter, seq, iv) of records still waiting on the meters' flash for an ack,
        only those of intervals before ``before_iv`` when given."""
        return queued(self.meters, before_iv)

    def drain(self, timeout: float = 60.0) -> bool:
        """Wait (real seconds) until every record of the scenario's intervals is acknowledged
        and every one of its intervals is settled. True when that happened in time."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.queued(self.end_iv) and self._settled_through(self.scenario.end - self.scenario.interval_s):
                return True
            time.sleep(0.5)
        return False

    def _settled_through(self, t: float) -> bool:
        last_iv = int(t) // self.scenario.interval_s
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)) as c:
            row = c.execute("SELECT COUNT(*) FROM intervals WHERE iv<=? AND iv>=? AND state!='settled'",
                            (last_iv, self.scenario.start // self.scenario.interval_s)).fetchone()
            settled = c.execute("SELECT MAX(iv) FROM intervals WHERE state='settled'").fetchone()
        return row[0] == 0 and settled[0] is not None and settled[0] >= last_iv

    def invariants(self) -> InvariantReport:
        return check_invariants(self)


def log_to_file(path: Path) -> None:
    """Send this process's logs (simulator, pymodbus, harness) to a file, so they do not break
    the live table a person is watching; the file stays beside the run's other logs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("pymodbus").setLevel(logging.WARNING)


@dataclass
class RunResult:
    community: CommunityRun
    report: InvariantReport
    drained: bool
    real_s: float


def run_scenario(scenario: Scenario, out: Path, broker: str = "embedded",
                 on_tick: Callable[[CommunityRun], None] | None = None, drain_s: float = 60.0) -> RunResult:
    """Start a community, run the scenario to its end, let every record be acknowledged and
    every interval settled, stop, and check the invariants."""
    began = time.time()
    community = CommunityRun(scenario, out, broker)
    with community:
        community.run(on_tick=(lambda: on_tick(community)) if on_tick else None)
        drained = community.drain(drain_s)
    return RunResult(community, community.invariants(), drained, time.time() - began)
