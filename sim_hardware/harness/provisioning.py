"""The meters of a community run: each household's meter and the feeder meter registered in
the gateway's registry, with a device config in a folder of its own (tuned for an accelerated
run, its MQTT link through a fault proxy where the scenario disrupts it), and, afterwards,
what each one still holds queued on its flash."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.registry import Registry
from sim_hardware.harness.brokers import Broker
from sim_hardware.harness.buses import Buses
from sim_hardware.harness.processes import Process
from sim_hardware.harness.scenario import Board, Scenario
from sim_hardware.simulator.clock import SimClock
from sim_hardware.simulator.faultproxy import FaultProxy
from sim_hardware.simulator.server import Simulator
from tmeter.fwtools.build import write_plan

FEEDER = "feeder"  # meter id of the community's connection point
STATUS_S = 5  # real seconds between status messages (meters and gateway)
REAL_TIME = {"start": None, "epoch": None, "speed": 1}  # a board's clock: NTP, not simulated

Keys = dict[tuple[str, int], bytes]  # a meter's key by (meter, key id)
RunOnLoop = Callable[[Coroutine[Any, Any, Any]], Any]


@dataclass
class Meter:
    meter: str  # meter id, as provisioned
    device: str  # the simulator's meter device id
    folder: Path  # config.json and the state folder
    process: Process | None = None
    proxy: FaultProxy | None = None  # MQTT link through a fault proxy, when the scenario needs one
    board: Board | None = None  # hardware in the loop: the firmware runs there, not here

    @property
    def config_path(self) -> Path:
        return self.folder / "config.json"


def provision(scenario: Scenario, sim: Simulator, buses: Buses, broker: Broker, clock: SimClock,
              db_path: Path, meters_dir: Path) -> tuple[list[Meter], Keys]:
    """Register every household's meter and the feeder meter in the registry at ``db_path``
    and write each one's device config and register plan into ``meters_dir/<meter id>``."""
    entries = [(h.id, h.meter_id, 2, h.index) for h in sim.households]
    entries.append((FEEDER, "feeder-meter", None, -1))
    meters: list[Meter] = []
    keys: Keys = {}
    registry = Registry(db_path)
    try:
        for meter_id, device, battery_unit, index in entries:
            board = buses.board(index)
            real_board = board is not None and not board.emulate
            cfg = registry.provision(
                meter_id, scenario.community, mqtt_host=scenario.broker_host if real_board else broker.host,
                mqtt_port=broker.port, keepalive_s=10, interval_s=scenario.interval_s,
                gate_closure_s=scenario.gate_closure_s, feeder=meter_id == FEEDER,
                clock=REAL_TIME if real_board else clock.to_dict(),
                modbus={"link": buses.link(sim, device, index), "baud": 9600 if real_board else 115200,
                        "meter_unit": 1, "meter_model": "sdm630", "battery_unit": battery_unit},
            )
            keys[(meter_id, cfg.kid)] = cfg.key
            meter = Meter(meter_id, device, meters_dir / meter_id, board=board)
            cfg.write(meter.config_path)
            tune_device_config(meter.config_path, scenario)
            write_plan(meter.config_path)
            meters.append(meter)
    finally:
        registry.close()
    return meters, keys


def tune_device_config(path: Path, scenario: Scenario) -> None:
    """Accelerated runs need shorter real-time periods than a board in the field."""
    cfg = json.loads(path.read_text())
    cfg.update({"poll_s": scenario.poll_s, "status_s": STATUS_S, "ack_timeout_s": 5})
    cfg["mqtt"].update({"retry_s": 3, "backoff_max_s": 3})
    # One simulator thread serves every bus: with hundreds of meters its answers can take
    # longer, and a timeout makes a meter drop and reopen its link (a reconnect storm).
    cfg["modbus"].update({"timeout_ms": 200 if scenario.meters < 100 else 1000, "retries": 2})
    path.write_text(json.dumps(cfg))


def point_mqtt_at(path: Path, host: str, port: int) -> None:
    """Make the device config at ``path`` reach its broker at host:port."""
    cfg = json.loads(path.read_text())
    cfg["mqtt"].update({"host": host, "port": port})
    path.write_text(json.dumps(cfg))


def route_through_proxies(meters: list[Meter], targets: set[str], broker: Broker, run: RunOnLoop) -> None:
    """Give each meter named in ``targets`` its own fault proxy to the broker, so its link can
    be cut or delayed alone; ``run`` runs a coroutine on the event loop the proxies live on."""
    unknown = targets - {m.meter for m in meters}
    if unknown:
        raise ValueError(f"faults name unknown meters: {', '.join(sorted(unknown))}")
    for meter in meters:
        if meter.meter in targets:
            meter.proxy = FaultProxy(broker.host, broker.port)
            run(meter.proxy.start())
            point_mqtt_at(meter.config_path, meter.proxy.host, meter.proxy.port)


def stop_proxies(meters: list[Meter], run: RunOnLoop) -> None:
    for meter in meters:
        if meter.proxy is not None:
            with contextlib.suppress(Exception):
                run(meter.proxy.stop())


def queued_interval(path: Path) -> int | None:
    """The interval of a record file in a meter's queue (None if unreadable, e.g. torn)."""
    try:
        return int(json.loads(path.read_bytes().split(b"\n")[0])["iv"])
    except (OSError, ValueError, KeyError):
        return None


def queued(meters: Sequence[Meter], before_iv: int | None = None) -> list[tuple[str, int, int]]:
    """(meter, seq, iv) of records still waiting on the meters' flash for an ack, only those
    of intervals before ``before_iv`` when given."""
    out = []
    for meter in meters:
        for path in sorted((meter.folder / "q").glob("*-*")):
            iv = queued_interval(path)
            if iv is not None and (before_iv is None or iv < before_iv):
                out.append((meter.meter, int(path.name.split("-")[0]), iv))
    return out
