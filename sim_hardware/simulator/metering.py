"""What an electricity meter measures, integrated exactly.

The simulator changes a meter's flows (per-phase active and reactive power, voltage) only at
event times; between events they are constant, so every counter grows linearly and is computed
in closed form at any instant: ``counter(t) = counter(t0) + rate * (t - t0)``. Reading a meter is
O(1) and never samples.

Totals follow the meter's vector sum of the phases (import = integral of max(P1+P2+P3, 0)), per-
phase counters integrate each phase on its own, as Eastron's SDM630 does.
"""

from __future__ import annotations

import cmath
import math

import numpy as np

# Counter layout: six totals, then five per-phase groups of n entries.
IMP, EXP, QIMP, QEXP, VAH, AH_N = range(6)
PHASE_GROUPS = ("imp", "exp", "qimp", "qexp", "ah")
DEMAND_PERIODS_MIN = (0, 5, 8, 10, 15, 20, 30, 60)  # Eastron's allowed demand periods
VOLTAGE_THD_PCT = 1.8
CURRENT_THD_PCT = 4.5


class MeterAccumulator:
    """Counters and instantaneous values of one meter with ``n_phases`` (1 or 3) phases."""

    def __init__(self, n_phases: int, t0: float, import_kwh: float = 0.0,
                 export_kwh: float = 0.0, demand_period_min: int = 60) -> None:
        if n_phases not in (1, 3):
            raise ValueError("a meter has 1 or 3 phases")
        self.n = n_phases
        self.t0 = t0
        self.acc = np.zeros(6 + 5 * n_phases)
        self.rate = np.zeros_like(self.acc)  # per hour
        self.p = [0.0] * n_phases
        self.q = [0.0] * n_phases
        self.v = [230.0] * n_phases
        self.frequency = 50.0
        self.demand_period_min = demand_period_min
        self.demand = np.zeros(6 + n_phases)
        self.max_demand = np.zeros(6 + n_phases)
        self._snapshot = self.acc.copy()
        self._instant: dict[str, float] | None = None  # cached instantaneous values
        self.set_counters(import_kwh, export_kwh)

    def _index(self, name: str, phase: int) -> int:
        return 6 + PHASE_GROUPS.index(name) * self.n + phase

    def _group(self, name: str) -> slice:
        start = 6 + PHASE_GROUPS.index(name) * self.n
        return slice(start, start + self.n)

    # ------------------------------------------------------------------------------ state
    def settle(self, t: float) -> None:
        """Bring the counters to ``t`` with the current (constant) flows."""
        if t > self.t0:
            self.acc += self.rate * ((t - self.t0) / 3600.0)
            self.t0 = t

    def set_flows(self, t: float, p: list[float], q: list[float], v: list[float],
                  frequency: float) -> None:
        """From ``t`` on the phases carry active power ``p`` (W, + import), reactive ``q`` (var)
        at voltage ``v`` (V)."""
        self.settle(t)
        self.p, self.q, self.v, self.frequency = list(p), list(q), list(v), frequency
        self._instant = None
        rate = np.zeros_like(self.acc)
        total_p, total_q = sum(p), sum(q)
        rate[IMP], rate[EXP] = max(total_p, 0.0), max(-total_p, 0.0)
        rate[QIMP], rate[QEXP] = max(total_q, 0.0), max(-total_q, 0.0)
        currents = self.currents()
        rate[VAH] = sum(vk * ik for vk, ik in zip(v, currents))
        rate[AH_N] = self.neutral_current()
        for k in range(self.n):
            rate[self._group("imp")][k] = max(p[k], 0.0)
            rate[self._group("exp")][k] = max(-p[k], 0.0)
            rate[self._group("qimp")][k] = max(q[k], 0.0)
            rate[self._group("qexp")][k] = max(-q[k], 0.0)
            rate[self._group("ah")][k] = currents[k]
        self.rate = rate

    def set_counters(self, import_kwh: float, export_kwh: float) -> None:
        """Every energy counter restarts: totals at the given readings, the rest at zero (a
        replaced meter). Call settle() first."""
        self.acc[:] = 0.0
        self.acc[IMP], self.acc[EXP] = import_kwh * 1000.0, export_kwh * 1000.0
        self._snapshot = self.acc.copy()
        self.max_demand[:] = 0.0
        self.demand[:] = 0.0
        self._instant = None

    def counters_at(self, t: float) -> np.ndarray:
        return self.acc + self.rate * (max(t - self.t0, 0.0) / 3600.0)

    def energy_wh(self, t: float) -> tuple[float, float]:
        """(import Wh, export Wh) at ``t``."""
        acc = self.counters_at(t)
        return float(acc[IMP]), float(acc[EXP])

    # ------------------------------------------------------------------------------ demand
    def next_demand_boundary(self, t: float) -> float:
        period = self.demand_period_min * 60
        if period <= 0:
            return math.inf
        return (math.floor(t / period) + 1) * period

    def close_demand_period(self, t: float) -> None:
        """At a demand boundary: demand is the mean over the period just ended (Eastron's fixed
        block demand), and the maxima follow. Call settle(t) first."""
        hours = self.demand_period_min / 60.0
        if hours <= 0:
            return
        delta = (self.acc - self._snapshot) / hours
        demand = np.concatenate((
            [delta[IMP] - delta[EXP], delta[IMP], delta[EXP], delta[VAH], delta[AH_N], 0.0],
            delta[self._group("ah")]))
        self.demand = demand
        self.max_demand = np.maximum(self.max_demand, demand)
        self._snapshot = self.acc.copy()
        self._instant = None

    def set_demand_period(self, t: float, minutes: int) -> None:
        self.settle(t)
        self.demand_period_min = minutes
        self._snapshot = self.acc.copy()

    def reset_max_demand(self) -> None:
        self.max_demand[:] = 0.0
        self._instant = None

    # ---------------------------------------------------------------- instantaneous values
    def currents(self) -> list[float]:
        return [math.hypot(pk, qk) / vk if vk > 0 else 0.0
                for pk, qk, vk in zip(self.p, self.q, self.v)]

    def neutral_current(self) -> float:
        """Magnitude of the phasor sum of the phase currents (phases 120 degrees apart)."""
        if self.n == 1:
            return self.currents()[0]
        total = 0j
        for k, (pk, qk, ik) in enumerate(zip(self.p, self.q, self.currents())):
            angle = -2 * math.pi * k / 3 - math.atan2(qk, pk)
            total += cmath.rect(ik, angle)
        return abs(total)

    def values(self, t: float) -> dict[str, float]:
        """Every quantity the Eastron maps name, at simulated time ``t``. Instantaneous values
        only change with the flows, so they are computed once per event; counters per call."""
        if self._instant is None:
            self._instant = self._instant_values()
        out = dict(self._instant)
        self._counter_values(out, self.counters_at(t).tolist())
        return out

    def _instant_values(self) -> dict[str, float]:
        out: dict[str, float] = {"frequency": self.frequency}
        currents = self.currents()
        for k in range(self.n):
            self._phase_values(out, k, currents[k])
        self._totals(out, currents)
        self._demands(out)
        return out

    def _phase_values(self, out: dict[str, float], k: int, current: float) -> None:
        ph = f"l{k + 1}_"
        pk, qk, vk = self.p[k], self.q[k], self.v[k]
        s = math.hypot(pk, qk)
        out[ph + "voltage"] = vk
        out[ph + "current"] = current
        out[ph + "power"] = pk
        out[ph + "apparent_power"] = s
        out[ph + "reactive_power"] = qk
        out[ph + "power_factor"] = pk / s if s > 0 else 1.0
        out[ph + "phase_angle"] = math.degrees(math.atan2(qk, pk)) if s > 0 else 0.0
        out[ph + "voltage_thd"] = VOLTAGE_THD_PCT
        out[ph + "current_thd"] = CURRENT_THD_PCT if current > 0.05 else 0.0

    def _totals(self, out: dict[str, float], currents: list[float]) -> None:
        total_p, total_q = sum(self.p), sum(self.q)
        total_s = sum(math.hypot(pk, qk) for pk, qk in zip(self.p, self.q))
        out["total_power"] = total_p
        out["total_reactive_power"] = total_q
        out["total_apparent_power"] = total_s
        out["total_power_factor"] = total_p / total_s if total_s > 0 else 1.0
        out["total_phase_angle"] = math.degrees(math.atan2(total_q, total_p)) if total_s else 0.0
        out["avg_voltage_ln"] = sum(self.v) / self.n
        out["avg_current"] = sum(currents) / self.n
        out["sum_current"] = sum(currents)
        out["neutral_current"] = self.neutral_current()
        out["avg_voltage_ln_thd"] = VOLTAGE_THD_PCT
        out["avg_current_thd"] = CURRENT_THD_PCT if sum(currents) > 0.05 else 0.0
        if self.n == 3:
            self._line_voltages(out)

    def _counter_values(self, out: dict[str, float], acc: list[float]) -> None:
        for k in range(self.n):
            ph = f"l{k + 1}_"
            imp = acc[self._index("imp", k)] / 1000.0
            exp = acc[self._index("exp", k)] / 1000.0
            qimp = acc[self._index("qimp", k)] / 1000.0
            qexp = acc[self._index("qexp", k)] / 1000.0
            out[ph + "import_energy"], out[ph + "export_energy"] = imp, exp
            out[ph + "total_energy"] = imp + exp
            out[ph + "import_reactive_energy"], out[ph + "export_reactive_energy"] = qimp, qexp
            out[ph + "total_reactive_energy"] = qimp + qexp
        out["import_energy"], out["export_energy"] = acc[IMP] / 1000.0, acc[EXP] / 1000.0
        out["total_energy"] = (acc[IMP] + acc[EXP]) / 1000.0
        out["import_reactive_energy"] = acc[QIMP] / 1000.0
        out["export_reactive_energy"] = acc[QEXP] / 1000.0
        out["total_reactive_energy"] = (acc[QIMP] + acc[QEXP]) / 1000.0
        out["apparent_energy"] = acc[VAH] / 1000.0
        out["charge"] = sum(acc[self._index("ah", k)] for k in range(self.n))

    def _line_voltages(self, out: dict[str, float]) -> None:
        phasors = [cmath.rect(vk, -2 * math.pi * k / 3) for k, vk in enumerate(self.v)]
        names = ("l1_l2", "l2_l3", "l3_l1")
        lines = [abs(phasors[k] - phasors[(k + 1) % 3]) for k in range(3)]
        for name, value in zip(names, lines):
            out[name + "_voltage"] = value
            out[name + "_voltage_thd"] = VOLTAGE_THD_PCT
        out["avg_voltage_ll"] = sum(lines) / 3
        out["avg_voltage_ll_thd"] = VOLTAGE_THD_PCT

    def _demands(self, out: dict[str, float]) -> None:
        d, m = self.demand, self.max_demand
        out["power_demand"], out["max_power_demand"] = d[0], m[0]
        out["import_power_demand"], out["max_import_power_demand"] = d[1], m[1]
        out["export_power_demand"], out["max_export_power_demand"] = d[2], m[2]
        out["apparent_power_demand"], out["max_apparent_power_demand"] = d[3], m[3]
        out["neutral_current_demand"], out["max_neutral_current_demand"] = d[4], m[4]
        for k in range(self.n):
            out[f"l{k + 1}_current_demand"] = d[6 + k]
            out[f"max_l{k + 1}_current_demand"] = m[6 + k]
