"""A home battery behind an inverter: follows its setpoint within power and energy limits.

AC power is constant between events, so stored energy changes linearly and the moment it reaches
a limit is computed exactly; the simulator makes that moment an event where the power drops to
zero. Sign convention (as on the wire): + discharges into the house, - charges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from protocols import registers

MODE_SETPOINT = registers.BATTERY_MODE_SETPOINT
MODE_SELF_CONSUMPTION = registers.BATTERY_MODE_SELF_CONSUMPTION
MODE_GRID_TARGET = registers.BATTERY_MODE_GRID_TARGET


@dataclass(frozen=True)
class BatterySpec:
    capacity_wh: int = 10000
    max_charge_w: int = 5000
    max_discharge_w: int = 5000
    eta_charge: float = 0.95  # AC to stored energy
    eta_discharge: float = 0.95  # stored energy to AC


class Battery:
    """State of one battery inverter. Integrate with ``settle(t)`` before changing anything."""

    def __init__(self, spec: BatterySpec, t0: float, soc_centi: int = 5000) -> None:
        self.spec = spec
        self.t0 = t0
        self.energy_wh = spec.capacity_wh * soc_centi / 10000.0
        self.setpoint_w = 0
        self.grid_setpoint_w = 0  # household export held in MODE_GRID_TARGET, within:
        self.target_charge_w = spec.max_charge_w
        self.target_discharge_w = spec.max_discharge_w
        self.mode = MODE_SETPOINT
        self.soc_min_centi = 500
        self.soc_max_centi = 10000
        self.power_w = 0.0  # actual AC power now
        self.requested_w = 0.0  # what the mode asked for before energy limits
        self.charged_wh = 0.0
        self.discharged_wh = 0.0
        self.powered = True

    # ------------------------------------------------------------------------- limits
    @property
    def e_min(self) -> float:
        return self.spec.capacity_wh * self.soc_min_centi / 10000.0

    @property
    def e_max(self) -> float:
        return self.spec.capacity_wh * self.soc_max_centi / 10000.0

    def clamp(self, watts: float) -> float:
        return min(max(watts, -self.spec.max_charge_w), self.spec.max_discharge_w)

    # ----------------------------------------------------------------------- dynamics
    def _rate_wh_per_h(self, p: float) -> float:
        """Stored-energy change per hour at AC power ``p``."""
        if p > 0:
            return -p / self.spec.eta_discharge
        return -p * self.spec.eta_charge

    def energy_at(self, t: float) -> float:
        return self.energy_wh + self._rate_wh_per_h(self.power_w) * (max(t - self.t0, 0.0) / 3600)

    def settle(self, t: float, limit_reached: bool = False) -> None:
        """Integrate to ``t``. ``limit_reached`` snaps the energy onto the limit the current power
        drives towards (the event the simulator scheduled from time_to_limit)."""
        if t <= self.t0:
            return
        hours = (t - self.t0) / 3600.0
        p = self.power_w
        if p > 0:
            self.discharged_wh += p * hours
        else:
            self.charged_wh += -p * hours
        self.energy_wh = self.energy_at(t)
        if limit_reached:
            self.energy_wh = self.e_min if p > 0 else self.e_max
        self.energy_wh = min(max(self.energy_wh, 0.0), float(self.spec.capacity_wh))
        self.t0 = t

    def update(self, household_net_w: float) -> None:
        """Choose the AC power from now on. ``household_net_w`` is load minus PV (what the house
        would draw from the grid without the battery), used by self-consumption and by the
        grid target (export = battery - household_net_w, so the battery gives target + net)."""
        if not self.powered:
            self.requested_w = self.power_w = 0.0
            return
        if self.mode == MODE_SELF_CONSUMPTION:
            self.requested_w = self.clamp(household_net_w)
        elif self.mode == MODE_GRID_TARGET:
            p = self.clamp(household_net_w + self.grid_setpoint_w)
            self.requested_w = min(max(p, -self.target_charge_w), self.target_discharge_w)
        else:
            self.requested_w = float(self.setpoint_w)
        p = self.requested_w
        if (p > 0 and self.energy_wh <= self.e_min + 1e-9) or (
                p < 0 and self.energy_wh >= self.e_max - 1e-9):
            p = 0.0
        self.power_w = p

    def time_to_limit(self) -> float:
        """Seconds until the current power empties or fills the battery (inf if it never does)."""
        p = self.power_w
        if p > 0:
            room = self.energy_wh - self.e_min
        elif p < 0:
            room = self.e_max - self.energy_wh
        else:
            return math.inf
        return max(room, 0.0) / abs(self._rate_wh_per_h(p)) * 3600.0

    def power_off(self) -> None:
        self.powered = False
        self.power_w = self.requested_w = 0.0

    def power_on(self) -> None:
        """Back from a power loss: volatile settings return to their defaults (setpoint 0,
        setpoint mode), as an inverter reboots."""
        self.powered = True
        self.setpoint_w = self.grid_setpoint_w = 0
        self.target_charge_w = self.spec.max_charge_w
        self.target_discharge_w = self.spec.max_discharge_w
        self.mode = MODE_SETPOINT

    def status(self) -> int:
        if self.requested_w > 0 and self.power_w == 0:
            return registers.BATTERY_STATUS_EMPTY
        if self.requested_w < 0 and self.power_w == 0:
            return registers.BATTERY_STATUS_FULL
        if self.power_w > 0:
            return registers.BATTERY_STATUS_DISCHARGING
        if self.power_w < 0:
            return registers.BATTERY_STATUS_CHARGING
        return registers.BATTERY_STATUS_IDLE

    def values(self, t: float) -> dict[str, int]:
        """The battery map's registers, as integers, at simulated time ``t``."""
        hours = max(t - self.t0, 0.0) / 3600.0
        energy = self.energy_at(t)
        charged = self.charged_wh + max(-self.power_w, 0.0) * hours
        discharged = self.discharged_wh + max(self.power_w, 0.0) * hours
        return {
            "map_version": 1,
            "status": self.status(),
            "mode": self.mode,
            "setpoint": self.setpoint_w,
            "max_charge_power": self.spec.max_charge_w,
            "max_discharge_power": self.spec.max_discharge_w,
            "capacity": self.spec.capacity_wh,
            "soc": int(round(energy * 10000 / self.spec.capacity_wh)),
            "soc_min": self.soc_min_centi,
            "soc_max": self.soc_max_centi,
            "power": int(round(self.power_w)),
            "energy": int(round(energy)),
            "charged_energy": int(charged),
            "discharged_energy": int(discharged),
            "grid_setpoint": self.grid_setpoint_w,
            "target_charge_max": self.target_charge_w,
            "target_discharge_max": self.target_discharge_w,
        }
