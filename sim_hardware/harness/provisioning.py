"""The meters of a community run: each household's meter and the feeder meter registered in
the gateway's registry, with a device config in a folder of its own (tuned for an accelerated
run, its MQTT link through a fault proxy where the scenario disrupts it), and, afterwards,
what each one still holds queued on its flash.

Households get a place for the peer-to-peer market (gateway/registry.py Place): positions on a
street grid HOUSE_SPACING_KM apart, in one village or, with ``villages=2``, in two villages
``village_km`` apart (the two-villages example of Sorin, Bobo & Pinson 2019), each with the
preference c_n ``preference`` (micro-currency per kWh per km). The feeder meter has no place:
it is not a member."""

from __future__ import annotations

import contextlib
import json
import math
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
HOUSE_SPACING_KM = 0.05  # households 50 m apart on a square street grid
VILLAGE_KM = 3.0  # centre to centre, with two villages
PREFERENCE = 20_000  # c_n, micro-currency per kWh per km: 0.02 per kWh for each km
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


def household_positions(n: int, villages: int = 1, village_km: float = VILLAGE_KM) -> list[tuple[float, float]]:
    """Positions (km) of n households: square street grids, one per village, the villages'
    origins ``village_km`` apart on the x axis; household i is in village i * villages // n."""
    if villages not in (1, 2) or not village_km >= 0:
        raise ValueError("villages is 1 or 2, village_km a distance >= 0")
    out = []
    for v in range(villages):
        members = [i for i in range(n) if i * villages // n == v]
        side = max(1, math.ceil(math.sqrt(len(members))))
        for j, _ in enumerate(members):
            out.append((round(v * village_km + HOUSE_SPACING_KM * (j % side), 6),
                        round(HOUSE_SPACING_KM * (j // side), 6)))
    return out


def provision(scenario: Scenario, sim: Simulator, buses: Buses, broker: Broker, clock: SimClock,
              db_path: Path, meters_dir: Path, villages: int | None = None,
              village_km: float | None = None, preference: int | None = None) -> tuple[list[Meter], Keys]:
    """Register every household's meter and the feeder meter in the registry at ``db_path``
    and write each one's device config and register plan into ``meters_dir/<meter id>``.
    Places (see the module docstring): ``villages``, ``village_km`` and ``preference`` left
    None take the scenario's (when it has them) or this module's defaults."""
    villages = villages if villages is not None else int(getattr(scenario, "villages", 1))
    village_km = village_km if village_km is not None else float(getattr(scenario, "village_km", VILLAGE_KM))
    preference = preference if preference is not None else int(getattr(scenario, "preference", PREFERENCE))
    positions = household_positions(len(sim.households), villages, village_km)
    places = {h.id: xy for h, xy in zip(sim.households, positions)}
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
                position=places.get(meter_id), preference=preference if meter_id in places else None,
                clock=REAL_TIME if real_board else clock.to_dict(),
                modbus={"link": buses.link(sim, device, index), "baud": 9600 if real_board else 115200,
                        "meter_unit": 1, "meter_model": "sdm630", "battery_unit": battery_unit},
                prefs={"import_price": scenario.import_price, "feed_in_price": scenario.export_price},
            )
            keys[(meter_id, cfg.kid)] = cfg.key
            meter = Meter(meter_id, device, meters_dir / meter_id, board=board)
            cfg.write(meter.config_path)
            tune_device_config(meter.config_path, scenario)
            write_plan(meter.config_path)
            meters.append(meter)
        write_places(meters_dir / "places.json", registry)
    finally:
        registry.close()
    return meters, keys


def write_places(path: Path, registry: Registry) -> None:
    """Every meter's position (km, null: none) and preference c_n (micro-currency per kWh per
    km) as provisioned, one JSON object keyed by meter id, for reports and plots."""
    places = {m: {"position": None if p.position is None else list(p.position), "preference": p.preference}
              for m, p in registry.places().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(places, indent=1, sort_keys=True) + "\n")


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
