"""Bids: non-decreasing piecewise-linear marginal-price curves of net export
(docs/architecture.md §7).

A bid gives, for the meter's net export q in [q_min, q_max] (kWh in the interval; q > 0
sells, q < 0 buys), its marginal price mc(q) in currency per kWh as points (q_i, p_i) with q
and p both non-decreasing. Two points at one q are a vertical step of the price; two points at
one price are a flat piece, i.e. a price block; a sloped piece is the quadratic cost
a q^2/2 + b q of the literature (mc = a q + b). A single point is a zero-width (inflexible) bid.

The member's cost of net export q. A curve fixes the cost only up to a constant (prices and
awards depend on mc alone), so a bid also carries its cost at its first point, C(q_min):

    C(q) = C(q_min) + integral of mc from q_min to q     (mc taken flat beyond the curve's ends)

- A quadratic bid (`Bid.quadratic`) has C(q_min) = a q_min^2/2 + b q_min + d, so C(q) is
  exactly the agent cost a q^2/2 + b q + d of the literature on the whole of [q_min, q_max],
  whatever the range (Moret & Pinson, "Energy collectives: a community and fairness based
  approach to future electricity markets", IEEE Trans. Power Systems 2019; Sorin, Bobo &
  Pinson, "Consensus-based approach to peer-to-peer electricity markets with product
  differentiation", IEEE Trans. Power Systems 2019). Anchoring the integral at 0 instead
  would add the area of a price that was never bid (mc extended flat from q_min to 0): for
  a = 10, b = 125 on [7.3, 14.9] it reported 2016.45 at q = 10 instead of 1750 (issue 18).
- A general curve (`Bid.curve`) defaults to C(0) = 0, i.e. C(q) = integral of mc from 0 to
  q with mc flat beyond the ends: doing nothing costs nothing, selling q costs what
  producing it costs, and buying has a negative cost, the value of the energy to the member.
  Pass ``cost_at_q_min`` to anchor it elsewhere (e.g. a fixed cost of being on).

Outside [q_min, q_max] (where no award falls, but a baseline may be evaluated) C continues
linearly with the end prices. A constant in C moves the objective and that member's cost by
the constant and nothing else.

The engines read bids through a `BidBook`: every bid as columns of numpy arrays, one row per
piece of positive width (a "segment" q0 .. q0 + dq whose price rises from p0 to p1). Turned
around, each segment is a ramp of the member's supply function q(lambda) (see `ramps`), which
is what the clearing engines add up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from .errors import BidError
from .ramps import Ramps

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

GRID = "grid"  # the grid's name in trades and results; no meter may use it


@dataclass(frozen=True)
class Bid:
    """One meter's bid: ``points`` = ((q, price), ...), q and price non-decreasing."""

    meter: str
    points: tuple[tuple[float, float], ...]
    cost_at_q_min: float | None = None  # C(q_min); None: the curve default C(0) = 0

    def __post_init__(self) -> None:
        q, p = _as_rows([self.points], [self.meter])
        check_curves([self.meter], q, p)
        if self.cost_at_q_min is not None and not np.isfinite(self.cost_at_q_min):
            reason = f"cost_at_q_min must be a finite number, got {self.cost_at_q_min!r}"
            raise BidError(self.meter, reason)

    @classmethod
    def curve(
        cls, meter: str, points: Iterable[Sequence[float]], cost_at_q_min: float | None = None
    ) -> Bid:
        pts = tuple((float(q), float(p)) for q, p in points)
        return cls(meter, pts, None if cost_at_q_min is None else float(cost_at_q_min))

    @classmethod
    def quadratic(
        cls, meter: str, a: float, b: float, q_min: float, q_max: float, d: float = 0.0
    ) -> Bid:
        """Cost a q^2/2 + b q + d on [q_min, q_max]: the curve mc(q) = a q + b."""
        check_quadratic(meter, a, b, q_min, q_max, d)
        points = ((q_min, a * q_min + b), (q_max, a * q_max + b))
        return cls(meter, points, float(quadratic_cost(a, b, d, q_min)))

    @classmethod
    def fixed(cls, meter: str, q: float, price: float = 0.0) -> Bid:
        """A zero-width bid: the meter will export exactly q (import -q), whatever the price."""
        return cls(meter, ((q, price),))

    @property
    def q_min(self) -> float:
        return self.points[0][0]

    @property
    def q_max(self) -> float:
        return self.points[-1][0]


def quadratic_cost(
    a: npt.ArrayLike, b: npt.ArrayLike, d: npt.ArrayLike, q: npt.ArrayLike
) -> FloatArray:
    """a q^2/2 + b q + d, the agent cost of Moret & Pinson 2019 and Sorin, Bobo & Pinson 2019."""
    q = np.asarray(q, dtype=float)
    return np.asarray(0.5 * np.asarray(a) * q * q + np.asarray(b) * q + np.asarray(d), dtype=float)


def check_quadratic(
    meter: str, a: float, b: float, q_min: float, q_max: float, d: float = 0.0
) -> None:
    values = {"a": a, "b": b, "q_min": q_min, "q_max": q_max, "d": d}
    for name, value in values.items():
        if not np.isfinite(value):
            raise BidError(meter, f"{name} must be a finite number, got {value!r}")
    if q_min > q_max:
        raise BidError(meter, f"q_min ({q_min:g}) > q_max ({q_max:g})")
    if a < 0:
        raise BidError(meter, f"a ({a:g}) < 0 makes the marginal price fall (non-monotone curve)")


def check_meter_ids(meters: Sequence[str]) -> None:
    seen: dict[str, int] = {}
    for i, meter in enumerate(meters):
        if not isinstance(meter, str) or not meter:
            raise BidError(str(meter), "meter id must be a non-empty string", i)
        if meter == GRID:
            raise BidError(meter, f"meter id {GRID!r} is reserved for the grid connection", i)
        if meter in seen:
            raise BidError(meter, f"duplicate meter (also bid #{seen[meter]})", i)
        seen[meter] = i


def check_curves(meters: Sequence[str], q: FloatArray, p: FloatArray) -> None:
    """Raise `BidError` for the first curve that is not finite or not non-decreasing."""
    finite = np.isfinite(q) & np.isfinite(p)
    if not finite.all():
        i = int(np.argmin(finite.all(axis=1)))
        raise BidError(meters[i], "quantities and prices must be finite numbers (NaN or inf)")
    _first_fall(meters, q, p, q, "q_min > q_max: curve quantities must not decrease")
    _first_fall(meters, q, p, p, "non-monotone curve: the marginal price must not decrease")


def _first_fall(
    meters: Sequence[str], q: FloatArray, p: FloatArray, values: FloatArray, reason: str
) -> None:
    falls = np.diff(values, axis=1) < 0
    if falls.any():
        i, j = np.argwhere(falls)[0]
        where = f"point {j} ({q[i, j]:g}, {p[i, j]:g}) -> point {j + 1} ({q[i, j + 1]:g}, {p[i, j + 1]:g})"
        raise BidError(meters[i], f"{reason} ({where})")


def _as_rows(
    curves: Sequence[Sequence[tuple[float, float]]], meters: Sequence[str]
) -> tuple[FloatArray, FloatArray]:
    """Pad curves to one width by repeating each last point (a zero-width piece changes nothing)."""
    width = max((len(c) for c in curves), default=1)
    q = np.empty((len(curves), width))
    p = np.empty((len(curves), width))
    for i, pts in enumerate(curves):
        if not pts:
            raise BidError(meters[i], "a curve needs at least one (q, price) point")
        arr = np.asarray(pts, dtype=float).reshape(len(pts), 2)
        q[i, : len(pts)], p[i, : len(pts)] = arr[:, 0], arr[:, 1]
        q[i, len(pts) :], p[i, len(pts) :] = arr[-1, 0], arr[-1, 1]
    return q, p


@dataclass(frozen=True, eq=False)
class BidBook:
    """All bids of one interval as arrays (row n = ``meters[n]``); build with a classmethod."""

    meters: tuple[str, ...]
    q_min: FloatArray
    q_max: FloatArray
    p_first: FloatArray  # marginal price at q_min (held flat below it)
    p_last: FloatArray  # marginal price at q_max (held flat above it)
    seg_owner: IntArray
    seg_q0: FloatArray
    seg_dq: FloatArray  # > 0
    seg_p0: FloatArray
    seg_p1: FloatArray  # >= seg_p0
    cost_at_q_min: FloatArray  # C_n(q_min_n): the constant of each member's cost (module doc)

    @classmethod
    def from_bids(cls, bids: Iterable[Bid]) -> BidBook:
        bids = list(bids)
        meters = [b.meter for b in bids]
        q, p = _as_rows([b.points for b in bids], meters)
        anchor = [np.nan if b.cost_at_q_min is None else b.cost_at_q_min for b in bids]
        return cls.from_points(meters, q, p, anchor if bids else None)

    @classmethod
    def from_points(
        cls,
        meters: Sequence[str],
        q: npt.ArrayLike,
        p: npt.ArrayLike,
        cost_at_q_min: npt.ArrayLike | None = None,
    ) -> BidBook:
        """Curves as 2-D arrays (one row a meter, shorter curves padded with their last point);
        ``cost_at_q_min`` per row, None or a NaN row for the curve default C(0) = 0."""
        meters = tuple(meters)
        if not meters:
            return cls._from_valid(meters, np.zeros((0, 1)), np.zeros((0, 1)))
        q = np.asarray(q, dtype=float).reshape(len(meters), -1)
        p = np.asarray(p, dtype=float).reshape(len(meters), -1)
        check_meter_ids(meters)
        check_curves(meters, q, p)
        if cost_at_q_min is None:
            return cls._from_valid(meters, q, p)
        anchor = np.broadcast_to(np.asarray(cost_at_q_min, dtype=float), (len(meters),)).copy()
        if np.isinf(anchor).any():
            i = int(np.argmax(np.isinf(anchor)))
            raise BidError(meters[i], f"cost_at_q_min must be a finite number, got {anchor[i]!r}")
        return cls._from_valid(meters, q, p, anchor)

    @classmethod
    def from_quadratic(
        cls,
        meters: Sequence[str],
        a: npt.ArrayLike,
        b: npt.ArrayLike,
        q_min: npt.ArrayLike,
        q_max: npt.ArrayLike,
        d: npt.ArrayLike = 0.0,
    ) -> BidBook:
        """Costs a q^2/2 + b q + d on [q_min, q_max], one row a meter (as `Bid.quadratic`)."""
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        lo, hi = np.asarray(q_min, dtype=float), np.asarray(q_max, dtype=float)
        d = np.broadcast_to(np.asarray(d, dtype=float), lo.shape)
        ok = (a >= 0) & (lo <= hi) & np.isfinite(a) & np.isfinite(b) & np.isfinite(lo + hi + d)
        if not ok.all():
            i = int(np.argmin(ok))
            check_quadratic(meters[i], a[i], b[i], lo[i], hi[i], d[i])
        q = np.stack([lo, hi], axis=1)
        return cls.from_points(meters, q, a[:, None] * q + b[:, None], quadratic_cost(a, b, d, lo))

    @classmethod
    def _from_valid(
        cls,
        meters: tuple[str, ...],
        q: FloatArray,
        p: FloatArray,
        cost_at_q_min: FloatArray | None = None,
    ) -> BidBook:
        """A book from checked curves; NaN (or no) ``cost_at_q_min`` = the default C(0) = 0."""
        dq = np.diff(q, axis=1)
        keep = dq > 0  # vertical steps and padding add nothing to supply or cost
        owner = np.broadcast_to(np.arange(len(meters))[:, None], dq.shape)[keep]
        book = cls(
            meters=meters,
            q_min=q[:, 0].copy(),
            q_max=q[:, -1].copy(),
            p_first=p[:, 0].copy(),
            p_last=p[:, -1].copy(),
            seg_owner=owner.astype(np.int64),
            seg_q0=q[:, :-1][keep],
            seg_dq=dq[keep],
            seg_p0=p[:, :-1][keep],
            seg_p1=p[:, 1:][keep],
            cost_at_q_min=np.zeros(len(meters)),
        )
        # The default: C(q_min) = -(integral of mc from q_min to 0), so that C(0) = 0.
        default = -book._antiderivative(np.zeros(len(meters)))
        given = None if cost_at_q_min is None else np.asarray(cost_at_q_min, dtype=float)
        anchor = default if given is None else np.where(np.isnan(given), default, given)
        return dataclasses.replace(book, cost_at_q_min=anchor)

    def __len__(self) -> int:
        return len(self.meters)

    @cached_property
    def _ramps(self) -> Ramps:
        return Ramps.build(self.seg_p0, self.seg_p1, self.seg_dq, self.seg_owner)

    def ramps(self) -> Ramps:
        """The supply function of every member, one ramp per segment (owner = member row)."""
        return self._ramps

    def concat(self, other: BidBook) -> BidBook:
        """Both books, ``other``'s rows after this one's (no id checks: used to add the grid)."""
        shift = len(self)
        return BidBook(
            meters=self.meters + other.meters,
            q_min=np.concatenate([self.q_min, other.q_min]),
            q_max=np.concatenate([self.q_max, other.q_max]),
            p_first=np.concatenate([self.p_first, other.p_first]),
            p_last=np.concatenate([self.p_last, other.p_last]),
            seg_owner=np.concatenate([self.seg_owner, other.seg_owner + shift]),
            seg_q0=np.concatenate([self.seg_q0, other.seg_q0]),
            seg_dq=np.concatenate([self.seg_dq, other.seg_dq]),
            seg_p0=np.concatenate([self.seg_p0, other.seg_p0]),
            seg_p1=np.concatenate([self.seg_p1, other.seg_p1]),
            cost_at_q_min=np.concatenate([self.cost_at_q_min, other.cost_at_q_min]),
        )

    def supply(self, price: float | FloatArray) -> tuple[FloatArray, FloatArray]:
        """Each member's optimal net exports at ``price`` (one, or one per member): [lo, hi]."""
        ramps = self.ramps()
        at = np.broadcast_to(np.asarray(price, dtype=float), (len(self),))
        lo, hi = ramps.fractions(at[self.seg_owner])
        n = len(self)
        return (
            self.q_min + np.bincount(self.seg_owner, lo * self.seg_dq, n),
            self.q_min + np.bincount(self.seg_owner, hi * self.seg_dq, n),
        )

    def cost(self, q: npt.ArrayLike) -> FloatArray:
        """C_n(q_n) = C_n(q_min_n) + integral of mc_n from q_min_n to q_n (module docstring)."""
        return self.cost_at_q_min + self._antiderivative(np.asarray(q, dtype=float))

    def _antiderivative(self, x: FloatArray) -> FloatArray:
        """Integral of the extended mc_n from q_min_n to x_n."""
        u = np.clip(x[self.seg_owner] - self.seg_q0, 0.0, self.seg_dq)
        slope = (self.seg_p1 - self.seg_p0) / self.seg_dq
        inside = np.bincount(self.seg_owner, u * (self.seg_p0 + 0.5 * slope * u), len(self))
        below = self.p_first * np.minimum(x - self.q_min, 0.0)
        above = self.p_last * np.maximum(x - self.q_max, 0.0)
        return inside + below + above
