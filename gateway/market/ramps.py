"""Supply functions as sums of ramps: the bid curve read the other way round.

A member whose marginal price rises from p0 to p1 over a segment of width dq exports that
segment in full at prices above p1, not at all below p0, and linearly in between: its supply
function q(lambda) gains the ramp dq * clip((lambda - p0) / (p1 - p0), 0, 1). A flat piece
(p0 == p1, a price block) is a step: at lambda == p0 any part of it is optimal, so the supply
there is the interval [0, dq]. Every quantity an engine needs (the community's aggregate supply,
a member's award at a price, the prox step of a distributed solver) is a sum of such ramps
evaluated at a price, so this is the one place that evaluates them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class Ramps:
    """Ramps ``r``: from p0[r] to p1[r] (p1 >= p0) the supply rises by dq[r] >= 0."""

    p0: FloatArray
    p1: FloatArray
    dq: FloatArray
    owner: IntArray
    inv_width: FloatArray  # 1 / (p1 - p0) on sloped ramps, 0 on steps
    step: BoolArray

    @classmethod
    def build(cls, p0: FloatArray, p1: FloatArray, dq: FloatArray, owner: IntArray) -> Ramps:
        width = p1 - p0
        # A rise of the price this small is a step in all but rounding (and 1/width overflows).
        step = width <= 1e-12 * np.maximum(1.0, np.abs(p1))
        inv = np.divide(1.0, width, out=np.zeros_like(width), where=~step)
        return cls(p0, p1, dq, owner, inv, step)

    @classmethod
    def join(cls, parts: list[Ramps]) -> Ramps:
        def cat(name: str) -> npt.NDArray[np.generic]:
            return np.concatenate([getattr(r, name) for r in parts])

        return cls(cat("p0"), cat("p1"), cat("dq"), cat("owner"), cat("inv_width"), cat("step"))

    def __len__(self) -> int:
        return len(self.dq)

    def take(self, mask: BoolArray | IntArray) -> Ramps:
        return Ramps(
            self.p0[mask],
            self.p1[mask],
            self.dq[mask],
            self.owner[mask],
            self.inv_width[mask],
            self.step[mask],
        )

    def fractions(self, price: float | FloatArray) -> tuple[FloatArray, FloatArray]:
        """Least and greatest filled fraction of every ramp at ``price`` (scalar or per ramp)."""
        t = np.clip((price - self.p0) * self.inv_width, 0.0, 1.0)
        lo = np.where(self.step, price > self.p0, t)
        hi = np.where(self.step, price >= self.p0, t)
        return lo, hi

    def total(self, price: float) -> tuple[float, float]:
        """Sum of all ramps at one price: the least and greatest aggregate supply."""
        lo, hi = self.fractions(price)
        return float(lo @ self.dq), float(hi @ self.dq)
