"""Simulated Modbus devices: a register map from protocols/registers.py served from the model.

Each device becomes a pymodbus ``SimDevice`` whose register blocks follow the map's readable
windows (undocumented addresses inside a window read 0, addresses outside answer exception 02,
read-only registers refuse writes with 02) and whose ``action`` fills the requested registers
from the model at the simulated instant of the request and validates writes.
"""

from __future__ import annotations

import bisect
import logging
import math
import struct
from typing import Any

import pymodbus
from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from protocols import registers as regs
from protocols.modbus import ILLEGAL_ADDRESS, ILLEGAL_VALUE
from sim_hardware.simulator.clock import SimClock
from sim_hardware.simulator.faults import FaultSchedule
from sim_hardware.simulator.household import FEEDER_ID, Neighbourhood, Household
from sim_hardware.simulator.metering import DEMAND_PERIODS_MIN, MeterAccumulator

log = logging.getLogger(__name__)

# SimDevice with per-request actions and servers taking SimDevice lists: the 3.16 data model
# (older 3.x releases routed the same calls through datastore contexts, with other semantics).
MIN_PYMODBUS = (3, 16)
if tuple(int(p) for p in pymodbus.__version__.split(".")[:2]) < MIN_PYMODBUS:
    raise ImportError(f"sim_hardware needs pymodbus >= {'.'.join(map(str, MIN_PYMODBUS))}, "
                      f"found {pymodbus.__version__}: pip install -U 'pymodbus>=3.16'")

Entry = tuple[str, int, str, str, str]


class ModbusDevice:
    """Common part: register layout, reads and writes through the map."""

    kind = "device"

    def __init__(self, device_id: str, unit: int, regmap: regs.RegisterMap,
                 neighbourhood: Neighbourhood, clock: SimClock) -> None:
        self.device_id = device_id
        self.unit = unit
        self.regmap = regmap
        self.neighbourhood = neighbourhood
        self.clock = clock
        # Per table, entries sorted by address with their end: requests find theirs by bisection.
        self._index = {fc: sorted((e[regs.ADDRESS], e[regs.ADDRESS] + regs.width(e[regs.TYPE]), e)
                                  for e in regmap.table(fc)) for fc in (3, 4)}
        self.reads = 0
        self.writes = 0
        self.last_t = math.nan  # simulated time of the last request the device served

    # ------------------------------------------------------------------ model interface
    def values(self, function: int, t: float) -> dict[str, Any]:
        raise NotImplementedError

    def validate(self, changes: dict[str, Any], t: float) -> int | None:
        """An exception code when ``changes`` (register name -> value) are not acceptable."""
        raise NotImplementedError

    def apply(self, changes: dict[str, Any], t: float) -> None:
        raise NotImplementedError

    def is_powered(self, faults: FaultSchedule, t: float) -> bool:
        return faults.powered(self.device_id, t)

    # ------------------------------------------------------------------ pymodbus glue
    def simdevice(self) -> SimDevice:
        return SimDevice(self.unit, simdata=register_layout(self.regmap), action=self._action)

    async def _action(self, function: int, block_start: int, address: int, count: int,
                      registers: list[int], values: list[int] | None) -> ExcCodes | None:
        try:
            t = self.last_t = self.clock.now()
            if values is None or function in (3, 4):
                self.reads += 1
                self._fill(3 if function == 6 else function, block_start, address, count,
                           registers, t)
                return None
            self.writes += 1
            return self._write(address, list(values), t)
        except Exception:  # a model bug must not kill the server: answer "device failure"
            log.exception("device action failed device=%s fc=%d address=%d", self.device_id,
                          function, address)
            return ExcCodes.DEVICE_FAILURE

    def _entries(self, function: int, address: int, count: int) -> list[Entry]:
        index = self._index[function]
        i = bisect.bisect_left(index, (address - 1,))
        end = address + count
        out = []
        for start, stop, entry in index[i:]:
            if start >= end:
                break
            if stop > address:
                out.append(entry)
        return out

    def _fill(self, function: int, block_start: int, address: int, count: int,
              registers: list[int], t: float) -> None:
        entries = self._entries(function, address, count)
        if not entries:
            return
        values = self.values(function, t)
        low_first = self.regmap.word_order == regs.LOW_FIRST
        for name, start, dtype, _unit, _access in entries:
            value = values.get(name)
            if value is None:
                continue
            words = _encode(dtype, value)
            if low_first and len(words) == 2:
                words = (words[1], words[0])
            offset = start - block_start
            registers[offset:offset + len(words)] = words

    def _write(self, address: int, values: list[int], t: float) -> ExcCodes | None:
        entries = self._entries(3, address, len(values))
        changes: dict[str, Any] = {}
        for entry in entries:
            start, width = entry[regs.ADDRESS], regs.width(entry[regs.TYPE])
            if start < address or start + width > address + len(values):
                return ExcCodes.ILLEGAL_ADDRESS  # part of a 32-bit value
            words = values[start - address:start - address + width]
            if width == 2 and self.regmap.word_order == regs.LOW_FIRST:
                words = words[::-1]
            changes[entry[regs.NAME]] = _decode(entry[regs.TYPE], words)
        code = self.validate(changes, t)
        if code is not None:
            log.info("write refused device=%s changes=%s code=%d", self.device_id, changes, code)
            return ExcCodes(code)
        self.apply(changes, t)
        log.info("write applied device=%s changes=%s", self.device_id, changes)
        return None

    def manifest(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "kind": self.kind, "unit": self.unit,
                "map": self.regmap.name, "word_order": self.regmap.word_order}


def register_layout(regmap: regs.RegisterMap) -> tuple[list[SimData], ...]:
    """pymodbus blocks (coils, discrete inputs, holding, input) for ``regmap``: every readable
    window covered, one SimData per register (read-only unless writable), zero-filled gaps.
    Coils and discrete inputs are placeholders: the bus layer refuses their function codes."""
    bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
    return (bits, bits, _blocks(regmap, 3), _blocks(regmap, 4))


def _blocks(regmap: regs.RegisterMap, function: int) -> list[SimData]:
    blocks: list[SimData] = []
    entries = sorted(regmap.table(function), key=lambda e: e[regs.ADDRESS])
    for lo, hi in regmap.windows(function):
        address = lo
        for entry in entries:
            start = entry[regs.ADDRESS]
            if not lo <= start < hi:
                continue
            if start > address:
                blocks.append(_zeros(address, start - address))
            width = regs.width(entry[regs.TYPE])
            blocks.append(SimData(start, values=[0] * width, datatype=DataType.REGISTERS,
                                  readonly="w" not in entry[regs.ACCESS]))
            address = start + width
        if address < hi:
            blocks.append(_zeros(address, hi - address))
    return blocks or [SimData(0, datatype=DataType.INVALID)]


def _zeros(address: int, count: int) -> SimData:
    return SimData(address, values=[0] * count, datatype=DataType.REGISTERS, readonly=True)


_F32 = struct.Struct(">f")
_WORDS = struct.Struct(">HH")


def _encode(dtype: str, value: float | int) -> tuple[int, ...]:
    """Registers (high word first) for ``value``: the hot path of every read, so floats go
    through precompiled structs rather than the general encoder in protocols.registers."""
    if dtype == regs.F32:
        return _WORDS.unpack(_F32.pack(value))
    return tuple(regs.int_to_words(int(value), dtype))


def _decode(dtype: str, words: list[int]) -> float | int:
    if dtype == regs.F32:
        return regs.words_to_float(words[0], words[1])
    return regs.scaled_value(dtype, words)


# ------------------------------------------------------------------------------------ meter

# Eastron holding registers: allowed values (from the protocol documents' tables).
_METER_CHOICES: dict[str, set[int]] = {
    "demand_period": set(DEMAND_PERIODS_MIN),
    "system_type": {1, 2, 3},
    "pulse1_width": {60, 100, 200},
    "parity_stop": {0, 1, 2, 3},
    "modbus_address": set(range(1, 248)),
    "pulse1_divisor": {0, 1, 2, 3, 4, 5},
    "pulse1_energy_type": {1, 2, 4, 5, 6, 8},
    "pulse1_mode": {1, 2, 4},
    "password": set(range(0, 10000)),
    "password_lock": set(range(0, 10000)),
    "reset": {0},
}
_BAUD_CHOICES = {"sdm630": {0, 1, 2, 3, 4}, "sdm120": {0, 1, 2, 5}}
BAUD_CODES = {2400: 0, 4800: 1, 9600: 2, 19200: 3, 38400: 4, 1200: 5}


class MeterDevice(ModbusDevice):
    """An Eastron SDM630 or SDM120 metering a household, or the feeder."""

    def __init__(self, device_id: str, unit: int, regmap: regs.RegisterMap,
                 neighbourhood: Neighbourhood, clock: SimClock, serial_number: int,
                 household: Household | None = None, baudrate: int = 9600) -> None:
        super().__init__(device_id, unit, regmap, neighbourhood, clock)
        self.kind = regmap.name
        self.household = household
        self.config: dict[str, Any] = {
            "demand_period": 60.0, "system_type": 3.0 if regmap.name == "sdm630" else 1.0,
            "pulse1_width": 100.0, "password_lock": 0.0, "parity_stop": 0.0,
            "modbus_address": float(unit), "pulse1_divisor": 3.0, "password": 1000.0,
            "baud_rate": float(BAUD_CODES.get(baudrate, 2)), "pulse1_energy_type": 4.0,
            "pulse1_mode": 4.0, "reset": 0, "serial_number": serial_number,
        }

    def values(self, function: int, t: float) -> dict[str, Any]:
        if function == 3:
            return self.config
        return self.neighbourhood.meter_values(self.device_id, t)

    def validate(self, changes: dict[str, Any], t: float) -> int | None:
        for name, value in changes.items():
            choices = _BAUD_CHOICES[self.kind] if name == "baud_rate" else _METER_CHOICES.get(name)
            if choices is None:
                return ILLEGAL_ADDRESS
            if not (isinstance(value, int) or (math.isfinite(value) and value == int(value))):
                return ILLEGAL_VALUE
            if int(value) not in choices:
                return ILLEGAL_VALUE
        return None

    def apply(self, changes: dict[str, Any], t: float) -> None:
        for name, value in changes.items():
            if name == "reset":
                self.neighbourhood.change_meter(self.device_id, t, MeterAccumulator.reset_max_demand)
                continue
            self.config[name] = float(value)
            if name == "demand_period":
                minutes = int(value)
                self.neighbourhood.change_meter(
                    self.device_id, t, lambda m: m.set_demand_period(m.t0, minutes))

    def manifest(self) -> dict[str, Any]:
        out = super().manifest()
        out["role"] = "feeder" if self.device_id == FEEDER_ID else "household"
        if self.household is not None:
            out["household"] = self.household.id
        return out


# ---------------------------------------------------------------------------------- battery


class BatteryDevice(ModbusDevice):
    """The household's battery inverter (tmeter battery map)."""

    kind = "battery"

    def __init__(self, device_id: str, unit: int, regmap: regs.RegisterMap,
                 neighbourhood: Neighbourhood, clock: SimClock, household: Household) -> None:
        super().__init__(device_id, unit, regmap, neighbourhood, clock)
        self.household = household

    def values(self, function: int, t: float) -> dict[str, Any]:
        return self.neighbourhood.battery_values(self.household, t)

    def validate(self, changes: dict[str, Any], t: float) -> int | None:
        battery = self.household.battery
        spec = battery.spec
        if "setpoint" in changes and not (
                -spec.max_charge_w <= changes["setpoint"] <= spec.max_discharge_w):
            return ILLEGAL_VALUE
        if "mode" in changes and changes["mode"] not in (regs.BATTERY_MODE_SETPOINT,
                                                         regs.BATTERY_MODE_SELF_CONSUMPTION,
                                                         regs.BATTERY_MODE_GRID_TARGET):
            return ILLEGAL_VALUE
        if not 0 <= changes.get("target_charge_max", 0) <= spec.max_charge_w:
            return ILLEGAL_VALUE
        if not 0 <= changes.get("target_discharge_max", 0) <= spec.max_discharge_w:
            return ILLEGAL_VALUE
        soc_min = changes.get("soc_min", battery.soc_min_centi)
        soc_max = changes.get("soc_max", battery.soc_max_centi)
        if not 0 <= soc_min <= soc_max <= 10000:
            return ILLEGAL_VALUE
        return None

    def apply(self, changes: dict[str, Any], t: float) -> None:
        def change(h: Household) -> None:
            battery = h.battery
            battery.setpoint_w = int(changes.get("setpoint", battery.setpoint_w))
            battery.grid_setpoint_w = int(changes.get("grid_setpoint", battery.grid_setpoint_w))
            battery.target_charge_w = int(changes.get("target_charge_max", battery.target_charge_w))
            battery.target_discharge_w = int(changes.get("target_discharge_max",
                                                         battery.target_discharge_w))
            battery.mode = int(changes.get("mode", battery.mode))
            battery.soc_min_centi = int(changes.get("soc_min", battery.soc_min_centi))
            battery.soc_max_centi = int(changes.get("soc_max", battery.soc_max_centi))

        self.neighbourhood.change_household(self.household, t, change)

    def is_powered(self, faults: FaultSchedule, t: float) -> bool:
        # The inverter is off when it, or the whole house, has lost power.
        return (faults.powered(self.device_id, t)
                and faults.powered(self.household.meter_id, t))

    def manifest(self) -> dict[str, Any]:
        out = super().manifest()
        out["household"] = self.household.id
        return out

