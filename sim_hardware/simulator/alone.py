"""The household alone: the alternative a member's community bill is compared with (issue 18).

The same household the community simulation builds (same load, PV, battery spec, initial SoC and
meter counters: ``build_household`` with the same arguments), on the same day, with no community:
its battery inverter runs the self-consumption mode it already has (discharge to cover load
minus PV, charge from surplus PV, never from or to the grid), and the household pays the import
price and earns the feed-in price on what its meter counts. It runs in the same event-driven
model as the community (a ``Neighbourhood`` of one household, no feeder, no faults), so battery
limits, minute steps and conversion losses are exactly the ones the community run sees.

Energy per market interval is read as a meter's register would give it: the difference of the
whole-Wh counter (floor) at the interval's ends. Consecutive intervals then chain exactly: their
sum is the counter's difference over the day, nothing is lost or double-counted to rounding.
Money is integer micro-currency through ``protocols.money.amount``, the gateway's one rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from protocols import money
from sim_hardware.simulator.battery import MODE_SELF_CONSUMPTION
from sim_hardware.simulator.faults import FaultSchedule
from sim_hardware.simulator.household import Household, Neighbourhood, build_household
from sim_hardware.simulator.metering import EXP, IMP, MeterAccumulator


@dataclass(frozen=True)
class AloneInterval:
    iv: int  # market interval: t // interval_s at its start
    imp_wh: int  # imported from the grid, whole Wh
    exp_wh: int  # exported to the grid, whole Wh
    amount: int  # micro-currency; + the member is paid, - it pays (as settlement lines)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_args(t0: int, t1: int, interval_s: int, import_price: int, export_price: int) -> None:
    """Refuse a span or prices no bill could be made of, with a one-line reason."""
    if not all(_is_int(x) for x in (t0, t1, interval_s, import_price, export_price)):
        raise ValueError("t0, t1, interval_s and prices must be integers")
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, not {interval_s}")
    if t1 <= t0:
        raise ValueError(f"the span must end after it starts: t0={t0} t1={t1}")
    if t0 % interval_s or t1 % interval_s:
        raise ValueError(f"t0 and t1 must be on {interval_s} s interval boundaries")
    if import_price < 0 or export_price < 0:
        raise ValueError("prices must not be negative (micro-currency per kWh)")


class BillingMeter(MeterAccumulator):
    """The household's meter, counting only what a bill needs: active import and export of the
    phases' vector sum, exactly as MeterAccumulator does (same settle, same closed form). The
    reactive, apparent, per-phase and neutral counters cost over half a day's CPU and no bill
    reads them; its demand registers are off (no events for them)."""

    @classmethod
    def like(cls, meter: MeterAccumulator) -> BillingMeter:
        """A billing meter at ``meter``'s counters, copied bit for bit (no kWh round trip)."""
        out = cls(meter.n, meter.t0, demand_period_min=0)
        out.acc[IMP], out.acc[EXP] = meter.acc[IMP], meter.acc[EXP]
        return out

    def set_flows(self, t: float, p: list[float], q: list[float], v: list[float],
                  frequency: float) -> None:
        self.settle(t)
        total_p = sum(p)
        self.rate[IMP], self.rate[EXP] = max(total_p, 0.0), max(-total_p, 0.0)


def build_alone(index: int, seed: int, source: str, kind: str, t0: int,
                battery: bool = True) -> tuple[Neighbourhood, Household]:
    """The household ``index`` as the community builds it, alone from ``t0``: its battery in
    self-consumption, or (``battery=False``) left idle at setpoint 0, as it boots."""
    h = build_household(index, seed, source, kind, t0)
    h.meter = BillingMeter.like(h.meter)
    hood = Neighbourhood([h], None, FaultSchedule(), t0)
    if battery:
        hood.change_household(h, t0, set_self_consumption)
    return hood, h


def set_self_consumption(h: Household) -> None:
    h.battery.mode = MODE_SELF_CONSUMPTION


def read_intervals(hood: Neighbourhood, h: Household, t0: int, t1: int, interval_s: int,
                   import_price: int, export_price: int) -> list[AloneInterval]:
    """Advance ``hood`` through [t0, t1), one AloneInterval per market interval."""
    out = []
    last = _reading(hood, h, t0)
    for start in range(t0, t1, interval_s):
        now = _reading(hood, h, start + interval_s)
        imp, exp = now[0] - last[0], now[1] - last[1]
        amount = money.amount(exp, export_price) - money.amount(imp, import_price)
        out.append(AloneInterval(start // interval_s, imp, exp, amount))
        last = now
    return out


def _reading(hood: Neighbourhood, h: Household, t: int) -> tuple[int, int]:
    """(import, export) counters in whole Wh at ``t``, as a meter's register shows them."""
    imp, exp = hood.meter_energy_wh(h.meter_id, t)
    return math.floor(imp), math.floor(exp)


def household_alone(index: int, seed: int, source: str, kind: str, t0: int, t1: int,
                    interval_s: int, import_price: int, export_price: int) -> list[AloneInterval]:
    """The bill, interval by interval, of household ``index`` alone over [t0, t1)."""
    check_args(t0, t1, interval_s, import_price, export_price)
    if not _is_int(index) or index < 0:
        raise ValueError(f"a household index is an integer >= 0, not {index!r}")
    hood, h = build_alone(index, seed, source, kind, t0)
    return read_intervals(hood, h, t0, t1, interval_s, import_price, export_price)


def community_alone(n: int, seed: int, source: str, kinds: Sequence[str], t0: int, t1: int,
                    interval_s: int, import_price: int, export_price: int,
                    ) -> dict[str, list[AloneInterval]]:
    """Every household of an ``n``-household community alone, keyed by the meter id the
    community provisions for it (``Household.id``, as harness/provisioning.py registers it),
    which is the name the gateway's settlement lines carry."""
    check_args(t0, t1, interval_s, import_price, export_price)
    if not _is_int(n) or n < 0 or len(kinds) != n:
        raise ValueError(f"need n >= 0 and one meter kind per household: n={n}, {len(kinds)} kinds")
    out: dict[str, list[AloneInterval]] = {}
    for i in range(n):
        hood, h = build_alone(i, seed, source, kinds[i], t0)
        out[h.id] = read_intervals(hood, h, t0, t1, interval_s, import_price, export_price)
    return out
