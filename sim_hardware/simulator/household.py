"""Households (load + PV + battery behind one meter) and the community's feeder meter.

The model advances by events: every minute (profile steps, voltage), a battery reaching an
energy limit, a fault starting or ending, a demand-period boundary, a setpoint write. Between
events every flow is constant, so the meters' counters, integrated in closed form, equal the
integral of the household model exactly; the feeder meter carries the sum of the households'
phase flows, so its counters equal the households' sum by construction.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

import numpy as np

from sim_hardware.simulator.battery import Battery, BatterySpec
from sim_hardware.simulator.faults import FaultSchedule
from sim_hardware.simulator.metering import MeterAccumulator
from sim_hardware.simulator.profiles import Profile, household_profile

log = logging.getLogger(__name__)

GRID_S = 60  # voltage and frequency change every minute
LOAD_TAN_PHI = 0.25  # household load at a power factor of about 0.97 (inductive)
FEEDER_ID = "feeder-meter"
METER_KINDS = ("sdm630", "sdm120")


def _wobble(*key: int) -> float:
    """A deterministic pseudo-random number in [-0.5, 0.5) from integers (cheap, no RNG state)."""
    h = 0x9E3779B97F4A7C15
    for k in key:
        h = ((h ^ (k & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return (h & 0xFFFFFF) / float(0x1000000) - 0.5


def grid_voltage(site: int, t: float, phase: int) -> float:
    """Phase voltage in V at ``site`` (a household index, -1 for the feeder), per minute: a
    daily swing (higher at noon with PV) and a little noise."""
    minute = math.floor(t / GRID_S)
    day_angle = 2 * math.pi * ((minute % 1440) / 1440.0)
    return 230.0 + 2.5 * math.sin(day_angle - math.pi / 2) + 1.0 * _wobble(site, minute, phase) \
        - 0.6 * (site >= 0)


def grid_frequency(t: float) -> float:
    minute = math.floor(t / GRID_S)
    return 50.0 + 0.04 * _wobble(minute, 50)


class Household:
    """One house: its profile, its battery and the meter at its grid connection."""

    def __init__(self, index: int, profile: Profile, kind: str, battery: Battery,
                 meter: MeterAccumulator) -> None:
        if kind not in METER_KINDS:
            raise ValueError(f"meter kind must be one of {METER_KINDS}")
        self.index = index
        self.id = f"hh{index:03d}"
        self.meter_id = self.id + "-meter"
        self.battery_id = self.id + "-battery"
        self.kind = kind
        self.profile = profile
        self.battery = battery
        self.meter = meter
        self.phase = index % 3  # where a single-phase house is connected
        self.powered = True
        self.load_w = self.pv_w = 0.0
        self.grid_p = [0.0, 0.0, 0.0]  # per feeder phase, + import
        self.grid_q = [0.0, 0.0, 0.0]
        self.limit_time = math.inf  # when the battery reaches an energy limit at current power

    @property
    def net_w(self) -> float:
        """Grid exchange now, + import."""
        return self.load_w - self.pv_w - self.battery.power_w

    def settle(self, t: float) -> None:
        self.meter.settle(t)
        self.battery.settle(t, limit_reached=t >= self.limit_time)

    def update(self, t: float, faults: FaultSchedule) -> None:
        """Choose every flow from ``t`` on (call settle(t) first)."""
        self.powered = faults.powered(self.meter_id, t)
        battery_on = self.powered and faults.powered(self.battery_id, t)
        if battery_on and not self.battery.powered:
            self.battery.power_on()
            log.info("battery power restored id=%s t=%.0f", self.battery_id, t)
        elif not battery_on and self.battery.powered:
            self.battery.power_off()
            log.info("battery power lost id=%s t=%.0f", self.battery_id, t)
        self.load_w = self.profile.load_w(t) if self.powered else 0.0
        self.pv_w = self.profile.pv_w(t) if self.powered else 0.0
        self.battery.update(self.load_w - self.pv_w)
        self._set_flows(t)
        self.limit_time = t + self.battery.time_to_limit()

    def _set_flows(self, t: float) -> None:
        shares = self.profile.phase_shares
        source = self.pv_w + self.battery.power_w  # PV and battery inverters feed all phases evenly
        if self.kind == "sdm120":
            p = [self.load_w - source]
            q = [LOAD_TAN_PHI * self.load_w]
            phases = [self.phase]
        else:
            p = [self.load_w * s - source / 3.0 for s in shares]
            q = [LOAD_TAN_PHI * self.load_w * s for s in shares]
            phases = [0, 1, 2]
        v = [grid_voltage(self.index, t, ph) if self.powered else 0.0 for ph in phases]
        self.meter.set_flows(t, p, q, v, grid_frequency(t) if self.powered else 0.0)
        self.grid_p, self.grid_q = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        for k, ph in enumerate(phases):
            self.grid_p[ph] += p[k]
            self.grid_q[ph] += q[k]


class Neighbourhood:
    """Households and the feeder meter, advanced together through simulated time."""

    def __init__(self, households: list[Household], feeder: MeterAccumulator | None,
                 faults: FaultSchedule, t0: float) -> None:
        self.households = households
        self.feeder = feeder
        self.faults = faults
        self.t = t0  # time of the last processed event
        self.last_t = t0  # latest time anything was read or changed
        self.next_event = t0
        self.feeder_powered = True
        self._revision = faults.revision
        self._applied_resets: set[int] = set()
        self._lock = threading.RLock()
        self.events = 0
        self.advance(t0)

    # -------------------------------------------------------------------------- advancing
    def advance(self, t: float) -> None:
        """Process every event up to ``t``."""
        with self._lock:
            t = max(t, self.last_t)
            changed = self.faults.revision != self._revision
            if changed:
                # A fault added or removed now acts from now: never rewrite what was read.
                self._revision = self.faults.revision
                self.next_event = min(self.next_event,
                                      max(self.faults.next_boundary(self.t), self.last_t))
            while self.next_event <= t:
                self._event(self.next_event)
            if changed:
                self._event(t)
            self.last_t = t

    def _event(self, te: float) -> None:
        prev = self.t
        for h in self.households:
            h.settle(te)
        if self.feeder is not None:
            self.feeder.settle(te)
        self._apply_resets(te)
        self._close_demand_periods(prev, te)
        for h in self.households:
            h.update(te, self.faults)
        self._update_feeder(te)
        self.t = te
        self.events += 1
        self.next_event = self._next_event_after(te)

    def _apply_resets(self, te: float) -> None:
        meters = [(h.meter_id, h.meter) for h in self.households]
        if self.feeder is not None:
            meters.append((FEEDER_ID, self.feeder))
        for device, meter in meters:
            for fault in self.faults.due_resets(device, te, self._applied_resets):
                self._applied_resets.add(fault.id)
                meter.set_counters(fault.value_kwh, 0.0)
                log.info("meter counters reset device=%s t=%.0f value_kwh=%s", device, te,
                         fault.value_kwh)

    def _meters(self) -> list[MeterAccumulator]:
        meters = [h.meter for h in self.households]
        return meters + ([self.feeder] if self.feeder is not None else [])

    def _close_demand_periods(self, prev: float, te: float) -> None:
        for meter in self._meters():
            if meter.next_demand_boundary(prev) <= te:
                meter.close_demand_period(te)

    def _update_feeder(self, te: float) -> None:
        if self.feeder is None:
            return
        self.feeder_powered = self.faults.powered(FEEDER_ID, te)
        if not self.feeder_powered:
            self.feeder.set_flows(te, [0.0] * 3, [0.0] * 3, [0.0] * 3, 0.0)
            return
        p = np.sum([h.grid_p for h in self.households], axis=0) if self.households else [0.0] * 3
        q = np.sum([h.grid_q for h in self.households], axis=0) if self.households else [0.0] * 3
        v = [grid_voltage(-1, te, k) for k in range(3)]
        self.feeder.set_flows(te, [float(x) for x in p], [float(x) for x in q], v,
                              grid_frequency(te))

    def _next_event_after(self, te: float) -> float:
        candidates = [(math.floor(te / GRID_S) + 1) * GRID_S, self.faults.next_boundary(te)]
        candidates += [h.limit_time for h in self.households]
        candidates += [m.next_demand_boundary(te) for m in self._meters()]
        return min(c for c in candidates if c > te)

    # ---------------------------------------------------------------------- interaction
    def change_household(self, h: Household, t: float, change: Callable[[Household], None]) -> None:
        """Apply ``change`` (e.g. a new battery setpoint) to ``h`` at ``t``, exactly."""
        with self._lock:
            self.advance(t)
            t = self.last_t
            h.settle(t)
            if self.feeder is not None:
                self.feeder.settle(t)
            change(h)
            h.update(t, self.faults)
            self._update_feeder(t)
            self.next_event = min(self.next_event, h.limit_time)

    def change_meter(self, device: str, t: float, change: Callable[[MeterAccumulator], None]) -> None:
        """Apply ``change`` (e.g. a new demand period) to the meter ``device`` at ``t``."""
        with self._lock:
            self.advance(t)
            meter = self.meter(device)
            meter.settle(self.last_t)
            change(meter)
            self.next_event = min(self.next_event, meter.next_demand_boundary(self.last_t))

    def meter(self, device: str) -> MeterAccumulator:
        if device == FEEDER_ID and self.feeder is not None:
            return self.feeder
        for h in self.households:
            if h.meter_id == device:
                return h.meter
        raise KeyError(device)

    def meter_values(self, device: str, t: float) -> dict[str, float]:
        with self._lock:
            self.advance(t)
            return self.meter(device).values(self.last_t)

    def meter_energy_wh(self, device: str, t: float) -> tuple[float, float]:
        """(import Wh, export Wh) of a meter at ``t``, before any float32 rounding. The model
        only moves forward: ``t`` before the latest time anything was read is refused."""
        with self._lock:
            if t < self.last_t - 1e-3:
                raise ValueError(f"t={t} is before the model's present {self.last_t}")
            self.advance(t)
            return self.meter(device).energy_wh(self.last_t)

    def battery_values(self, h: Household, t: float) -> dict[str, int]:
        with self._lock:
            self.advance(t)
            return h.battery.values(self.last_t)


def household_params(index: int, seed: int) -> tuple[BatterySpec, int, float, float]:
    """(battery spec, initial SoC in 0.01 %, initial import kWh, initial export kWh)."""
    rng = np.random.default_rng(np.random.SeedSequence([abs(seed), index, 0xBA7]))
    capacity = int(rng.choice([5000, 7500, 10000, 13500]))
    power = min(capacity // 2, 5000) // 100 * 100
    soc = int(rng.integers(2000, 8001))
    return (BatterySpec(capacity, power, power), soc, float(rng.uniform(100.0, 3000.0)),
            float(rng.uniform(0.0, 800.0)))


def build_household(index: int, seed: int, source: str, kind: str, t0: float) -> Household:
    profile = household_profile(index, seed, source)
    spec, soc, imp, exp = household_params(index, seed)
    n_phases = 1 if kind == "sdm120" else 3
    meter = MeterAccumulator(n_phases, t0, imp, exp if profile.kwp > 0 else 0.0)
    return Household(index, profile, kind, Battery(spec, t0, soc), meter)


def build_neighbourhood(n: int, seed: int, source: str, t0: float, faults: FaultSchedule,
                    kinds: list[str], feeder: bool = True) -> Neighbourhood:
    """``n`` households (meter kind ``kinds[i]``) and, with ``feeder``, the feeder meter."""
    households = [build_household(i, seed, source, kinds[i], t0) for i in range(n)]
    rng = np.random.default_rng(np.random.SeedSequence([abs(seed), 0xFEED]))
    feeder_meter = (MeterAccumulator(3, t0, float(rng.uniform(1000, 2000)),
                                     float(rng.uniform(100, 500))) if feeder else None)
    return Neighbourhood(households, feeder_meter, faults, t0)
