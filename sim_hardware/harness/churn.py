"""Battery churn: energy some batteries charge while others discharge in the same interval.

Definition (issue 18): for each interval t, with C_t the total energy charged by all batteries
and D_t the total energy discharged (both AC-side, Wh, >= 0), the churned energy is
min(C_t, D_t): energy the community moved from one battery into another, paying both
conversion losses, where no battery moving it would have reached the same net position.
Churn over a run is the sum over intervals; per day divide by the number of days.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def interval_churn_wh(battery_ac_wh: Iterable[float]) -> float:
    """Churn of one interval from each battery's AC energy (+ discharged, - charged, Wh)."""
    charged = discharged = 0.0
    for e in battery_ac_wh:
        if e > 0:
            discharged += e
        else:
            charged -= e
    return min(charged, discharged)


def churn_wh(series: Sequence[Sequence[float]]) -> float:
    """Total churn over intervals; ``series[t][b]`` is battery b's AC energy in interval t
    (+ discharged, - charged, Wh)."""
    return sum(interval_churn_wh(row) for row in series)


def churn_from_flows_wh(charged: Sequence[Sequence[float]],
                        discharged: Sequence[Sequence[float]]) -> float:
    """Total churn from separate per-interval charge and discharge series (``[t][b]``, Wh,
    both >= 0): per interval min(sum charged, sum discharged). A battery that charges and
    discharges within one interval churns with itself too, and counts."""
    if len(charged) != len(discharged):
        raise ValueError(f"charge and discharge series differ in length: "
                         f"{len(charged)} != {len(discharged)}")
    return sum(min(sum(c), sum(d)) for c, d in zip(charged, discharged))
