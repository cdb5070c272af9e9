"""A simulated community: N households (meter at unit 1, battery inverter at unit 2 on one bus
each) and a feeder meter on its own bus, all on one clock and one fault schedule.

In-process use (tests, bench, firmware harness)::

    sim = Simulator(SimConfig(meters=3, transport="rtu-tcp"), clock=SimClock(speed=60))
    async with sim:                       # or SimulatorThread(...) from synchronous code
        sim.manifest()                    # endpoints, units, clock triple
        sim.faults.add("timeout", "hh001-meter", duration=600)
        sim.battery_power_w(0)            # what the inverter of household 0 delivers now
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from protocols import registers
from sim_hardware.simulator.bus import TRANSPORTS, BusEndpoint
from sim_hardware.simulator.clock import SimClock
from sim_hardware.simulator.devices import BatteryDevice, MeterDevice, ModbusDevice
from sim_hardware.simulator.faults import FaultSchedule
from sim_hardware.simulator.household import FEEDER_ID, Neighbourhood, Household, build_neighbourhood

log = logging.getLogger(__name__)
T = TypeVar("T")

METER_UNIT = 1
BATTERY_UNIT = 2
MANIFEST_VERSION = 1


@dataclass
class SimConfig:
    meters: int = 1
    seed: int = 0
    profile: str = "synthetic"
    transport: str = "rtu-tcp"
    host: str = "127.0.0.1"
    meter_kind: str = "sdm630"  # sdm630 | sdm120 | mixed (every third household single-phase)
    battery_word_order: str = registers.HIGH_FIRST
    feeder: bool = True
    serial_ports: list[str] = field(default_factory=list)  # serial: one per household (+ feeder)
    baudrate: int = 9600
    base_port: int | None = None  # consecutive TCP ports from here; default: free ports

    def kinds(self) -> list[str]:
        if self.meter_kind == "mixed":
            return ["sdm120" if i % 3 == 2 else "sdm630" for i in range(self.meters)]
        if self.meter_kind not in ("sdm630", "sdm120"):
            raise ValueError("meter kind must be sdm630, sdm120 or mixed")
        return [self.meter_kind] * self.meters


class Simulator:
    """Builds the community and its bus endpoints; ``start()``/``stop()`` serve them."""

    def __init__(self, config: SimConfig, clock: SimClock | None = None,
                 faults: FaultSchedule | None = None) -> None:
        if config.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}")
        if config.meters < 0:
            raise ValueError("meters must be >= 0")
        self.config = config
        self.clock = clock or SimClock.realtime()
        self.faults = faults or FaultSchedule(self.clock)
        if self.faults.clock is None:
            self.faults.clock = self.clock
        self.neighbourhood: Neighbourhood = build_neighbourhood(
            config.meters, config.seed, config.profile, self.clock.now(), self.faults,
            config.kinds(), config.feeder)
        self.devices: dict[str, ModbusDevice] = {}
        self.endpoints: list[BusEndpoint] = self._build_endpoints()
        self.started = False

    # ----------------------------------------------------------------------- building
    def _build_endpoints(self) -> list[BusEndpoint]:
        cfg = self.config
        battery_map = registers.battery(cfg.battery_word_order)
        endpoints = []
        for h in self.neighbourhood.households:
            meter = MeterDevice(h.meter_id, METER_UNIT, registers.by_name(h.kind), self.neighbourhood,
                                self.clock, self._serial_number(h.index), h, cfg.baudrate)
            battery = BatteryDevice(h.battery_id, BATTERY_UNIT, battery_map, self.neighbourhood,
                                    self.clock, h)
            endpoints.append(self._endpoint(h.id + "-bus", [meter, battery], h.index))
        if self.neighbourhood.feeder is not None:
            feeder = MeterDevice(FEEDER_ID, METER_UNIT, registers.sdm630(), self.neighbourhood,
                                 self.clock, self._serial_number(9999), None, cfg.baudrate)
            endpoints.append(self._endpoint("feeder-bus", [feeder], len(endpoints)))
        return endpoints

    def _serial_number(self, index: int) -> int:
        return 21000000 + (self.config.seed % 100) * 10000 + index

    def _endpoint(self, name: str, devices: list[ModbusDevice], slot: int) -> BusEndpoint:
        cfg = self.config
        for d in devices:
            self.devices[d.device_id] = d
        transport, serial_port, port = cfg.transport, None, None
        if transport == "serial":
            if slot < len(cfg.serial_ports):
                serial_port = cfg.serial_ports[slot]
            elif name == "feeder-bus":
                transport = "rtu-tcp"  # no tty left for the feeder: serve it over RTU-over-TCP
            else:
                raise ValueError(f"transport serial: no serial port for {name}")
        if transport != "serial" and cfg.base_port:
            port = cfg.base_port + slot
        return BusEndpoint(name, devices, transport, self.clock, self.faults, cfg.host, port,
                           serial_port, cfg.baudrate)

    # ----------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        try:
            for endpoint in self.endpoints:
                await endpoint.start()
        except BaseException:
            await self.stop()
            raise
        self.started = True
        log.info("simulator up households=%d transport=%s clock=%s", len(self.households),
                 self.config.transport, self.clock.to_dict())

    async def stop(self) -> None:
        for endpoint in self.endpoints:
            try:
                await endpoint.stop()
            except Exception:  # keep stopping the others
                log.exception("stopping %s failed", endpoint.name)
        self.started = False

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------------- queries
    @property
    def households(self) -> list[Household]:
        return self.neighbourhood.households

    def household(self, index: int) -> Household:
        return self.neighbourhood.households[index]

    def endpoint_of(self, device_id: str) -> BusEndpoint:
        for endpoint in self.endpoints:
            if any(d.device_id == device_id for d in endpoint.devices.values()):
                return endpoint
        raise KeyError(device_id)

    def battery_power_w(self, index: int) -> float:
        """AC power the battery of household ``index`` delivers now (+ discharge)."""
        h = self.household(index)
        return float(self.neighbourhood.battery_values(h, self.clock.now())["power"])

    def battery_state(self, index: int) -> dict[str, int]:
        """The battery's registers (setpoint, soc, power, ...) now, as integers."""
        return self.neighbourhood.battery_values(self.household(index), self.clock.now())

    def meter_energy_wh(self, device_id: str, t: float | None = None) -> tuple[float, float]:
        """(import Wh, export Wh) of a meter at ``t`` (default now), unrounded."""
        return self.neighbourhood.meter_energy_wh(device_id, self.clock.now() if t is None else t)

    def manifest(self) -> dict[str, Any]:
        devices = [entry for endpoint in self.endpoints for entry in endpoint.manifest()]
        return {
            "version": MANIFEST_VERSION,
            "clock": self.clock.to_dict(),
            "seed": self.config.seed,
            "profile": self.config.profile,
            "households": [{"id": h.id, "index": h.index, "meter": h.meter_id,
                            "battery": h.battery_id, "meter_kind": h.kind,
                            "profile": h.profile.describe()} for h in self.households],
            "feeder": FEEDER_ID if self.neighbourhood.feeder is not None else None,
            "devices": devices,
        }

    def write_manifest(self, path: Path | str) -> None:
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.manifest(), indent=1) + "\n")
        tmp.replace(path)  # readers never see half a manifest


class SimulatorThread:
    """Runs a Simulator on its own event loop in a background thread, for synchronous callers
    (pytest without asyncio, the bench harness). Context manager; ``run`` runs a coroutine on the
    simulator's loop and returns its result."""

    def __init__(self, config: SimConfig, clock: SimClock | None = None,
                 faults: FaultSchedule | None = None) -> None:
        self.config, self._clock, self._faults = config, clock, faults
        self.sim: Simulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None

    def start(self, timeout: float = 30.0) -> Simulator:
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("simulator did not start")
        if self._error is not None:
            raise RuntimeError("simulator failed to start") from self._error
        assert self.sim is not None
        return self.sim

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.sim = Simulator(self.config, self._clock, self._faults)
            await self.sim.start()
        except BaseException as exc:  # report to the starting thread instead of dying silently
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.sim.stop()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the simulator's loop and wait for its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
