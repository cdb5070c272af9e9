"""A whole community on one machine: broker, simulated households, one firmware instance per
household (MicroPython unix port, or CPython for large N), the gateway process and an
observer; runs a scenario with its faults and checks the invariants afterwards.

It is what `tmeter demo`, `tmeter bench run`, the end-to-end tests and bench/e2e.py share:

    with CommunityRun(scenario, out_dir) as community:
        community.run()                    # until the scenario's end, faults applied on time
        community.drain()                  # until every record is acknowledged and settled
    report = community.invariants()        # after stop: nothing lost, ledger verifies, ...

Every process writes its log under ``out_dir/logs``; the gateway database, the meters' state
folders and configs stay in ``out_dir`` for inspection (``tmeter ledger verify --db``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sim_hardware.simulator.clock import SimClock
from sim_hardware.simulator.faultproxy import FaultProxy
from sim_hardware.netutil import free_port, stop_process
from sim_hardware.harness.observer import CommunityObserver
from sim_hardware.harness.scenario import Board, FaultStep, Scenario
from sim_hardware.simulator.server import SimConfig, SimulatorThread

if TYPE_CHECKING:
    from sim_hardware.harness.invariants import InvariantReport

log = logging.getLogger(__name__)

FEEDER = "feeder"
LEAD_S = 3.0  # real seconds between start-up and the scenario's first instant
STATUS_S = 5  # real seconds between meter status messages
FLEET_SIZE = 25  # CPython meters per process
GRACE_REAL_S = 1.0  # real seconds readings get after an interval ends before it is settled
REAL_TIME = {"start": None, "epoch": None, "speed": 1}  # a board's clock: NTP, not simulated


class Broker(Protocol):
    host: str
    port: int

    def start(self) -> Any: ...
    def stop(self) -> None: ...


class ExternalBroker:
    """A broker someone else runs (``--broker HOST:PORT``): never started or stopped here."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"broker address must be HOST:PORT, not {address!r}")
        self.host, self.port = host, int(port)

    def start(self) -> ExternalBroker:
        return self

    def stop(self) -> None:
        pass


def make_broker(kind: str, workdir: Path) -> Broker:
    if kind == "embedded":
        from sim_hardware.harness.embedded_broker import EmbeddedBroker

        return EmbeddedBroker()
    if kind == "mosquitto":
        from sim_hardware.harness.mosquitto import MosquittoBroker

        workdir.mkdir(parents=True, exist_ok=True)
        return MosquittoBroker(workdir=workdir)
    return ExternalBroker(kind)


class Process:
    """A child process with its output in a log file; restartable after a kill."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.name, self.cmd, self.env, self.cwd, self.log_path = name, cmd, env, cwd, log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.popen = subprocess.Popen(self.cmd, env=self.env, cwd=self.cwd, stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: a power cut, no chance to clean up."""
        if self.alive:
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is not None:
            stop_process(self.popen, timeout)


@dataclass
class Meter:
    meter: str  # meter id, as provisioned
    device: str  # the simulator's meter device id
    folder: Path  # config.json and the state folder
    process: Process | None = None
    proxy: FaultProxy | None = None  # MQTT link through a fault proxy, when the scenario needs one
    board: Board | None = None  # hardware in the loop: the firmware runs there, not here


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
        self.ptys: list[subprocess.Popen[bytes]] = []
        self.sim_thread: SimulatorThread | None = None
        self.meters: list[Meter] = []
        self.gateway: Process | None = None
        self.observer: CommunityObserver | None = None
        self._observer_stop: Any = None
        self._observer_thread: threading.Thread | None = None
        self._pending: list[FaultStep] = sorted(scenario.faults, key=lambda f: f.at_h)
        self._undo: list[tuple[float, Callable[[], None]]] = []
        self.events: list[str] = []
        self.keys: dict[tuple[str, int], bytes] = {}

    # ------------------------------------------------------------------ lifecycle
    @property
    def db_path(self) -> Path:
        return self.out / "gateway.db"

    def start(self) -> CommunityRun:
        if self.db_path.exists() or (self.out / "meters").exists():
            # A second run over the first would meet its database and meter state: its
            # intervals already settled, its sequence numbers taken.
            raise FileExistsError(f"{self.out} holds an earlier run: choose a new folder")
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "logs").mkdir(exist_ok=True)
        try:
            self.broker = make_broker(self.broker_kind, self.out / "mosquitto")
            self.broker.start()
            self._start_simulator()
            self._provision()
            self._start_proxies()
            self._start_gateway()
            self._start_observer()
            self._start_firmware()
        except BaseException:
            self.stop()
            raise
        return self

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
        if self.sim_thread is not None:
            for meter in self.meters:
                if meter.proxy is not None:
                    with contextlib.suppress(Exception):
                        self.sim_thread.run(meter.proxy.stop())
            self.sim_thread.stop()
            self.sim_thread = None
        if self.broker is not None:
            self.broker.stop()
        for pty in self.ptys:
            pty.terminate()
            pty.wait(5)
        self.ptys.clear()

    def __enter__(self) -> CommunityRun:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ start-up steps
    def _start_simulator(self) -> None:
        sc = self.scenario
        config = SimConfig(meters=sc.meters, seed=sc.seed, profile=sc.profile, transport="rtu-tcp",
                           feeder=True)
        if sc.boards:
            # Each household's bus on the serial port its board is wired to; the feeder stays
            # on RTU over TCP with a local meter process.
            config.transport = "serial"
            config.serial_ports = [self._bus_port(i, b) for i, b in enumerate(sc.boards)]
            # Real RS-485 at the meters' 9600 baud; emulated lines as fast as the TCP links,
            # since an accelerated clock would stretch 9600-baud frames into minutes.
            config.baudrate = 115200 if all(b.emulate for b in sc.boards) else 9600
        self.sim_thread = SimulatorThread(config, clock=self.clock)
        self.sim = self.sim_thread.start()

    def _bus_port(self, index: int, board: Board) -> str:
        """The simulator's end of a board's RS-485 line: the adapter, or for an emulated board
        one end of a pty pair whose other end the local firmware opens."""
        if not board.emulate:
            return board.rs485
        pty_dir = self.out / "pty"
        pty_dir.mkdir(parents=True, exist_ok=True)
        sim_end, board_end = pty_dir / f"bus{index}-sim", pty_dir / f"bus{index}-board"
        self.ptys.append(subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={sim_end}", f"pty,raw,echo=0,link={board_end}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + 10
        while not (sim_end.exists() and board_end.exists()):
            if time.time() > deadline:
                raise RuntimeError("socat did not create the pty pair (apt-get install socat)")
            time.sleep(0.05)
        return str(sim_end)

    def _board(self, index: int) -> Board | None:
        boards = self.scenario.boards
        return boards[index] if index < len(boards) else None

    def _modbus_link(self, device: str, index: int) -> str:
        """The link the meter at household ``index`` (-1: feeder) reads its bus through."""
        board = self._board(index) if index >= 0 else None
        if board is not None:
            return "tty:" + str(self.out / "pty" / f"bus{index}-board") if board.emulate else "uart"
        endpoint = self.sim.endpoint_of(device)
        return f"tcp:{endpoint.host}:{endpoint.port}"

    def _provision(self) -> None:
        from tmeter.fwtools.build import write_plan
        from gateway.registry import Registry

        sc = self.scenario
        assert self.broker is not None
        registry = Registry(self.db_path)
        try:
            entries = [(h.id, h.meter_id, 2, h.index) for h in self.sim.households]
            entries.append((FEEDER, "feeder-meter", None, -1))
            for meter_id, device, battery_unit, index in entries:
                board = self._board(index) if index >= 0 else None
                folder = self.out / "meters" / meter_id
                real_board = board is not None and not board.emulate
                cfg = registry.provision(
                    meter_id, sc.community, mqtt_host=sc.broker_host if real_board else self.broker.host,
                    mqtt_port=self.broker.port, keepalive_s=10, interval_s=sc.interval_s,
                    gate_closure_s=sc.gate_closure_s, feeder=meter_id == FEEDER,
                    clock=REAL_TIME if real_board else self.clock.to_dict(),
                    modbus={"link": self._modbus_link(device, index), "baud": 9600 if real_board else 115200,
                            "meter_unit": 1, "meter_model": "sdm630", "battery_unit": battery_unit},
                )
                self.keys[(meter_id, cfg.kid)] = cfg.key
                cfg.write(folder / "config.json")
                self._tune_device_config(folder / "config.json")
                write_plan(folder / "config.json")
                self.meters.append(Meter(meter_id, device, folder, board=board))
        finally:
            registry.close()

    def _tune_device_config(self, path: Path) -> None:
        """Accelerated runs need shorter real-time periods than a board in the field."""
        import json

        cfg = json.loads(path.read_text())
        cfg.update({"poll_s": self.scenario.poll_s, "status_s": STATUS_S, "ack_timeout_s": 5})
        cfg["mqtt"].update({"retry_s": 3, "backoff_max_s": 3})
        # One simulator thread serves every bus: with hundreds of meters its answers can take
        # longer, and a timeout makes a meter drop and reopen its link (a reconnect storm).
        cfg["modbus"].update({"timeout_ms": 200 if self.scenario.meters < 100 else 1000, "retries": 2})
        path.write_text(json.dumps(cfg))

    def _link_fault_targets(self) -> set[str]:
        return {f.target for f in self.scenario.faults if f.action in ("meter_offline", "link_delay")}

    def _start_proxies(self) -> None:
        assert self.broker is not None and self.sim_thread is not None
        targets = self._link_fault_targets()
        unknown = targets - {m.meter for m in self.meters}
        if unknown:
            raise ValueError(f"faults name unknown meters: {', '.join(sorted(unknown))}")
        for meter in self.meters:
            if meter.meter in targets:
                meter.proxy = FaultProxy(self.broker.host, self.broker.port)
                self.sim_thread.run(meter.proxy.start())
                self._point_mqtt_at(meter, meter.proxy.host, meter.proxy.port)

    def _point_mqtt_at(self, meter: Meter, host: str, port: int) -> None:
        import json

        path = meter.folder / "config.json"
        cfg = json.loads(path.read_text())
        cfg["mqtt"].update({"host": host, "port": port})
        path.write_text(json.dumps(cfg))

    def gateway_config(self) -> dict[str, Any]:
        sc = self.scenario
        assert self.broker is not None
        return {
            "community": sc.community, "db": str(self.db_path), "interval_s": sc.interval_s,
            "gate_closure_s": sc.gate_closure_s, "synchronous": "NORMAL",
            "mqtt": {"host": self.broker.host, "port": self.broker.port, "user": "", "password": "",
                     "client_id": f"tmeter-gateway-{sc.community}", "keepalive_s": 10},
            "market": {"mechanism": sc.mechanism, "import_price": sc.import_price,
                       "export_price": sc.export_price, "allocation": sc.allocation},
            # At high speed a grace of simulated minutes is a fraction of a real second: give
            # the readings at least a real second to arrive before the interval is settled.
            "settlement": {"grace_s": max(sc.grace_s, int(sc.speed * GRACE_REAL_S)), "feeder_meter": FEEDER,
                           "loss_tolerance": sc.loss_tolerance},
            "ledger": {"origin": f"tmeter.demo/{sc.community}"},  # key beside the database
            "status": {"http_host": "127.0.0.1", "http_port": free_port(), "publish_s": STATUS_S},
            "clock": self.clock.to_dict(),
        }

    def _start_gateway(self) -> None:
        path = self.out / "gateway.toml"
        path.write_text(toml_text(self.gateway_config()))
        cmd = [sys.executable, "-m", "tmeter", "gateway", "run", "--config", str(path)]
        self.gateway = Process("gateway", cmd, dict(os.environ), self.out, self.out / "logs" / "gateway.log")
        self.gateway.start()

    def _start_firmware(self) -> None:
        """MicroPython: one process per meter, like one board per household. CPython: fleets of
        meters sharing a process, so hundreds fit on one machine; a meter the scenario kills
        runs alone, so the kill takes only it down."""
        if self.scenario.runtime == "micropython":
            for meter in self.meters:
                if meter.board is not None and not meter.board.emulate:
                    self._deploy_to_board(meter)
                else:
                    self._start_process(meter.meter, [meter], "micropython")
            return
        alone = {f.target for f in self.scenario.faults if f.action == "meter_kill"}
        groups = [[m] for m in self.meters if m.meter in alone]
        rest = [m for m in self.meters if m.meter not in alone]
        groups += [rest[i:i + FLEET_SIZE] for i in range(0, len(rest), FLEET_SIZE)]
        for n, group in enumerate(groups):
            self._start_process(f"fleet-{n}", group, "cpython")

    def _deploy_to_board(self, meter: Meter) -> None:
        """Flash config and firmware onto a real board over its USB port (mpremote), or say
        how to; the board then runs on its own and joins over MQTT."""
        from tmeter.fwtools.build import DEFAULT_BUILD, build, deploy_commands

        assert meter.board is not None
        config = meter.folder / "config.json"
        if not meter.board.usb:
            print(f"{meter.meter}: flash the board wired to {meter.board.rs485} with: "
                  f"tmeter fw deploy --port <its USB port> --config {config}", flush=True)
            return
        if not (DEFAULT_BUILD / "xtensawin").is_dir():
            build(DEFAULT_BUILD)
        for cmd in deploy_commands(DEFAULT_BUILD, meter.board.usb, config):
            subprocess.run(cmd, check=True, timeout=300)

    def _start_process(self, name: str, meters: list[Meter], runtime: str) -> None:
        from tmeter.fwtools.runner import firmware_command

        first = meters[0]
        cmd, env = firmware_command(first.folder / "config.json", first.folder, runtime)
        if len(meters) > 1:
            cmd = [sys.executable, "-m", "sim_hardware.harness.fleet"] + [str((m.folder / "config.json").resolve()) for m in meters]
        process = Process(name, cmd, env, self.out, self.out / "logs" / f"{name}.log")
        for meter in meters:
            meter.process = process
        process.start()

    def _start_observer(self) -> None:
        import asyncio

        assert self.broker is not None
        self.observer = CommunityObserver(self.scenario.community, lambda m, k: self.keys.get((m, k)))
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        broker = self.broker

        def main() -> None:
            loop.run_until_complete(self.observer.run(broker.host, broker.port, stop))  # type: ignore[union-attr]
            loop.close()

        self._observer_stop = lambda: loop.call_soon_threadsafe(stop.set)
        self._observer_thread = threading.Thread(target=main, name="observer", daemon=True)
        self._observer_thread.start()

    # ------------------------------------------------------------------ running
    def now(self) -> float:
        return self.clock.now()

    def run(self, until: float | None = None, on_tick: Callable[[], None] | None = None,
            tick_s: float = 0.5) -> None:
        """Run until simulated time ``until`` (default: the scenario's end plus one interval,
        so the last interval is read and cleared), applying faults when they are due."""
        end = until if until is not None else self.scenario.end + self.scenario.interval_s
        while self.now() < end:
            self._apply_due_faults()
            self._check_processes()
            if on_tick is not None:
                on_tick()
            time.sleep(min(tick_s, max(0.01, self.clock.wall_at(end) - time.time())))
        for _due, undo in self._undo:
            undo()
        self._undo.clear()

    def _check_processes(self) -> None:
        if self.gateway is not None and not self.gateway.alive and not self._gateway_down:
            raise RuntimeError(f"the gateway exited; see {self.gateway.log_path}")

    _gateway_down = False

    def _apply_due_faults(self) -> None:
        now = self.now()
        for due, undo in list(self._undo):
            if now >= due:
                undo()
                self._undo.remove((due, undo))
        while self._pending and now >= self.scenario.start + self._pending[0].at_h * 3600:
            step = self._pending.pop(0)
            self.events.append(f"{now:.0f} {step.action} {step.target}".strip())
            log.info("fault %s %s at %.0f", step.action, step.target, now)
            getattr(self, f"_fault_{step.action}")(step)

    def _later(self, step: FaultStep, undo: Callable[[], None]) -> None:
        self._undo.append((self.now() + step.intervals * self.scenario.interval_s, undo))

    def _meter(self, meter_id: str) -> Meter:
        for meter in self.meters:
            if meter.meter == meter_id:
                return meter
        raise KeyError(meter_id)

    def _fault_broker_restart(self, step: FaultStep) -> None:
        assert self.broker is not None
        self.broker.stop()
        time.sleep(step.down_s)
        self.broker.start()

    def _fault_gateway_kill(self, step: FaultStep) -> None:
        assert self.gateway is not None
        self._gateway_down = True
        self.gateway.kill()
        time.sleep(step.down_s)
        self.gateway.start()
        self._gateway_down = False

    def _fault_meter_kill(self, step: FaultStep) -> None:
        process = self._meter(step.target).process
        assert process is not None
        process.kill()
        self._later(step, process.start)

    def _fault_meter_offline(self, step: FaultStep) -> None:
        proxy = self._meter(step.target).proxy
        assert proxy is not None
        proxy.refuse(True)
        proxy.cut()
        self._later(step, proxy.heal)

    def _fault_link_delay(self, step: FaultStep) -> None:
        proxy = self._meter(step.target).proxy
        assert proxy is not None
        proxy.set_delay(step.delay_s)
        self._later(step, proxy.heal)

    def _fault_modbus_storm(self, step: FaultStep) -> None:
        pattern = step.target or "hh*-meter"
        duration = step.intervals * self.scenario.interval_s
        self.sim.faults.add("crc", pattern, duration=duration, rate=step.rate)

    # ------------------------------------------------------------------ after the run
    @property
    def end_iv(self) -> int:
        """The first interval after the scenario: records from here on may stay queued."""
        return self.scenario.end // self.scenario.interval_s

    def queued(self, before_iv: int | None = None) -> list[tuple[str, int, int]]:
        """(meter, seq, iv) of records still waiting on the meters' flash for an ack,
        only those of intervals before ``before_iv`` when given."""
        out = []
        for meter in self.meters:
            for path in sorted((meter.folder / "q").glob("*-*")):
                iv = queued_interval(path)
                if iv is not None and (before_iv is None or iv < before_iv):
                    out.append((meter.meter, int(path.name.split("-")[0]), iv))
        return out

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
        import sqlite3

        last_iv = int(t) // self.scenario.interval_s
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)) as c:
            row = c.execute("SELECT COUNT(*) FROM intervals WHERE iv<=? AND iv>=? AND state!='settled'",
                            (last_iv, self.scenario.start // self.scenario.interval_s)).fetchone()
            settled = c.execute("SELECT MAX(iv) FROM intervals WHERE state='settled'").fetchone()
        return row[0] == 0 and settled[0] is not None and settled[0] >= last_iv

    def invariants(self) -> InvariantReport:
        from sim_hardware.harness.invariants import check

        return check(self)


def queued_interval(path: Path) -> int | None:
    """The interval of a record file in a meter's queue (None if unreadable, e.g. torn)."""
    import json

    try:
        return int(json.loads(path.read_bytes().split(b"\n")[0])["iv"])
    except (OSError, ValueError, KeyError):
        return None


def toml_text(data: dict[str, Any]) -> str:
    """TOML for a two-level dict of scalars (what a gateway config needs)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, table in data.items():
        if isinstance(table, dict):
            lines.append(f"\n[{section}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


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
