"""Exact breakpoint search: where a sum of ramps crosses zero.

F(lambda) = base + slope * lambda + (sum of ramps) is non-decreasing and piecewise linear; at
the price of a step it is the interval [F_lo, F_hi]. The prices at which F can be zero form an
interval [lo, hi] with

    lo = inf { lambda : F_hi(lambda) >= -tol },    hi = sup { lambda : F_lo(lambda) <= tol }.

`tol` is a quantity (kWh) a few orders above the rounding of the sums, so that blocks which
balance exactly in decimal (1.0 sold, 0.7 + 0.3 bought) still clear at the whole interval of
prices between them, as they would in exact arithmetic. Between two neighbouring breakpoints F
is affine, so once the search has found the breakpoints that bracket lo (or hi) one linear
interpolation gives it exactly: no iteration to a tolerance, no step size.

Two searches:
- `market_interval`: one function with many ramps (mechanism 1 and its N = 100,000 benchmark).
  Selection, not sorting: each probe at a median breakpoint discards half of the candidate
  breakpoints, and every ramp that is constant or linear across the remaining bracket is folded
  into an affine term, so the work falls geometrically: expected linear in the number of ramps,
  O(N log N) at worst (an exact median whenever a sampled one does poorly). On large markets a
  subsample's root first gives a narrow bracket, verified exactly (`_jump`).
- `grouped_interval`: many small functions at once (each member's prox step in the distributed
  solvers): breakpoints sorted by (group, price), then a binary search run in all groups at
  once, each probe one vectorised pass over all ramps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .ramps import Ramps

FloatArray = npt.NDArray[np.float64]
INF = float("inf")
_SAMPLE = 2048  # above this many candidates, probe at the median of an evenly spaced sample


def crossing(
    left: FloatArray,
    f_left: FloatArray,
    right: FloatArray,
    f_right: FloatArray,
    slope: FloatArray | float,
    target: FloatArray | float,
    lower: bool,
) -> FloatArray:
    """Where F, affine and non-decreasing on (left, right), reaches ``target``.

    f_left = F(left+) and f_right = F(right-); an infinite end takes the finite end's value
    continued with ``slope``; with both ends infinite, f_right must hold F(0). ``lower`` gives
    inf{x : F(x) >= target} (else sup{x : F(x) <= target}), clipped to [left, right].
    """
    has_left, has_right = np.isfinite(left), np.isfinite(right)
    both = has_left & has_right
    anchor = np.where(has_left, left, np.where(has_right, right, 0.0))
    f_anchor = np.where(has_left, f_left, f_right)
    span = np.where(both, right - left, 1.0)
    with np.errstate(all="ignore"):  # a span of a few ulps gives an infinite rate: x = anchor
        rate = np.where(both, (f_right - f_left) / span, slope)
        sloped = rate > 0
        x = anchor + (target - f_anchor) / np.where(sloped, rate, 1.0)
    if lower:
        flat = np.where(f_anchor >= target, left, right)
    else:
        flat = np.where(f_anchor <= target, right, left)
    return np.clip(np.where(sloped, x, flat), left, right)


def pick_price(lo: FloatArray, hi: FloatArray, fallback: FloatArray | float) -> FloatArray:
    """The clearing price rule: the middle of [lo, hi]; its finite end if it has one only;
    ``fallback`` if the interval is the whole line (nothing in the market sets a price)."""
    finite_lo, finite_hi = np.isfinite(lo), np.isfinite(hi)
    mid = 0.5 * (np.where(finite_lo, lo, 0.0) + np.where(finite_hi, hi, 0.0))
    one_end = np.where(finite_lo, lo, np.where(finite_hi, hi, fallback))
    return np.where(finite_lo & finite_hi, mid, one_end)


# --- one function, many ramps ------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Bracket:
    """Search state: the answer lies in [left, right]; ``cand`` = breakpoints strictly inside.
    On the bracket F = const + lin * x + (the ``ramps`` with a breakpoint inside): ramps full
    on all of it are folded into const, ramps sloped across all of it into const + lin * x,
    so the ramps still looked at shrink with the candidates."""

    ramps: Ramps
    const: float
    lin: float
    cand: FloatArray
    left: float
    f_left: float  # F_hi(left)
    right: float
    f_right: float  # F_lo(right)
    before: int = 0  # candidates before the last narrowing (0: none yet)

    def pivot(self) -> float:
        """The median of an evenly spaced sample of the candidates; the exact median after a
        step that kept more than 3/4 of them, so that at most O(log N) steps are taken."""
        cand = self.cand
        poor = self.before and cand.size > 0.75 * self.before
        sample = cand if poor or cand.size <= _SAMPLE else cand[:: cand.size // _SAMPLE]
        k = sample.size // 2
        return float(np.partition(sample, k)[k])

    def value(self, x: float) -> tuple[float, float]:
        lo, hi = self.ramps.total(x)
        affine = self.const + self.lin * x
        return affine + lo, affine + hi

    def narrow(self, x: float, f_lo: float, f_hi: float, answer_left: bool) -> _Bracket:
        if answer_left:
            return self.to(self.left, self.f_left, x, f_lo)
        return self.to(x, f_hi, self.right, self.f_right)

    def to(self, left: float, f_left: float, right: float, f_right: float) -> _Bracket:
        """The bracket [left, right] inside this one, in one pass over the ramps."""
        r = self.ramps
        full = r.p1 <= left
        empty = r.p0 >= right
        across = (r.p0 <= left) & (r.p1 >= right) & ~r.step
        rate = r.dq[across] * r.inv_width[across]
        const = self.const + float(r.dq[full].sum()) - float(rate @ r.p0[across])
        return _Bracket(
            ramps=r.take(~(full | empty | across)),
            const=const,
            lin=self.lin + float(rate.sum()),
            cand=self.cand[(self.cand > left) & (self.cand < right)],
            left=left,
            f_left=f_left,
            right=right,
            f_right=f_right,
            before=len(self.cand),
        )


def _search(br: _Bracket, answer_left: Callable[[float, float], bool]) -> _Bracket:
    """Probe breakpoints until none is left strictly inside the bracket."""
    while br.cand.size:
        x = br.pivot()
        f_lo, f_hi = br.value(x)
        br = br.narrow(x, f_lo, f_hi, answer_left(f_lo, f_hi))
    return br


def _end(br: _Bracket, target: float, lower: bool) -> float:
    a = np.array
    return float(crossing(a(br.left), a(br.f_left), a(br.right), a(br.f_right), 0.0, target, lower))


def market_interval(ramps: Ramps, base: float, tol: float) -> tuple[float, float]:
    """[lo, hi] of the zeros of F = base + sum of ramps, for a feasible F
    (F_lo(-inf) = base <= tol and F_hi(+inf) = base + sum(dq) >= -tol; the caller checks).

    One search narrows to both ends while they share a bracket; at the first breakpoint that
    is itself a clearing price it splits into a search for each end on its own side.
    """
    if len(ramps) == 0:
        return (-INF, INF) if abs(base) <= tol else (INF, -INF)
    cand = np.concatenate([ramps.p0, ramps.p1])
    br = _Bracket(ramps, base, 0.0, cand, -INF, base, INF, base)
    br = _jump(br, tol)
    while br.cand.size:
        x = br.pivot()
        f_lo, f_hi = br.value(x)
        if f_hi < -tol or f_lo > tol:
            br = br.narrow(x, f_lo, f_hi, answer_left=f_lo > tol)
            continue
        below = _search(br.narrow(x, f_lo, f_hi, True), lambda f_lo, f_hi: f_hi >= -tol)
        above = _search(br.narrow(x, f_lo, f_hi, False), lambda f_lo, f_hi: f_lo > tol)
        return _end(below, -tol, lower=True), _end(above, tol, lower=False)
    # No breakpoint inside: F is affine from below -tol to above tol across the bracket.
    return _end(br, -tol, lower=True), _end(br, tol, lower=False)


def _jump(br: _Bracket, tol: float) -> _Bracket:
    """On a large market, first narrow to a few breakpoints around the root of a subsample.

    Every n-th ramp (the heavy ones, such as the grid's, all of them) with its quantity scaled
    up estimates F. Around its root, exact evaluations at the subsample's breakpoints, ever
    further out (an exponential search), find a bracket where the exact F crosses [-tol, tol];
    one pass then narrows to it. Each evaluation is one pass over the ramps, far cheaper than
    the pruning steps it saves; whatever it does not find, the normal search still does.
    """
    ramps = br.ramps
    if len(ramps) < 8 * _SAMPLE:
        return br
    points, guess = _subsample_root(ramps, br.const, tol)
    if not np.isfinite(guess):
        return br
    start_lo = int(np.searchsorted(points, guess, "left"))
    start_hi = int(np.searchsorted(points, guess, "right"))
    left, right = (br.left, br.f_left), (br.right, br.f_right)
    for reach in (2, 16, 128, 1024):
        probes = [start_lo - reach, start_hi + reach - 1]
        for x in (float(points[i]) for i in probes if 0 <= i < len(points)):
            if not left[0] < x < right[0]:
                continue
            f_lo, f_hi = br.value(x)
            if f_hi < -tol:
                left = (x, f_hi)
            elif f_lo > tol:
                right = (x, f_lo)
            else:
                return br  # a clearing price: the normal search splits there
        if np.isfinite(left[0]) and np.isfinite(right[0]):
            return br.to(left[0], left[1], right[0], right[1])
    return br


def _subsample_root(ramps: Ramps, base: float, tol: float) -> tuple[FloatArray, float]:
    """Sorted breakpoints of a subsample of the ramps, and the subsample's clearing price."""
    stride = len(ramps) // _SAMPLE
    heavy = ramps.dq > 50.0 * float(ramps.dq.mean())
    pick = np.zeros(len(ramps), dtype=bool)
    pick[::stride] = True
    pick |= heavy
    s = ramps.take(pick)
    scaled = Ramps(s.p0, s.p1, np.where(heavy[pick], 1.0, stride) * s.dq, s.owner, s.inv_width, s.step)
    lo, hi = market_interval(scaled, base, tol * stride)
    guess = float(pick_price(np.array(lo), np.array(hi), np.nan))
    return np.unique(np.concatenate([s.p0, s.p1])), guess


# --- many small functions at once ---------------------------------------------------------


def grouped_interval(
    ramps: Ramps, n_groups: int, base: FloatArray, slope: FloatArray, tol: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """[lo, hi] per group of F_g = base_g + slope_g * lambda + ramps owned by g."""
    g = ramps.owner
    points = np.concatenate([ramps.p0, ramps.p1])
    owners = np.concatenate([g, g])
    points = points[np.lexsort((points, owners))]
    count = np.bincount(owners, minlength=n_groups)
    start = np.cumsum(count) - count

    def value(x: FloatArray) -> tuple[FloatArray, FloatArray]:
        lo, hi = ramps.fractions(x[g])
        f0 = base + slope * x
        return (
            f0 + np.bincount(g, lo * ramps.dq, n_groups),
            f0 + np.bincount(g, hi * ramps.dq, n_groups),
        )

    def at(k: npt.NDArray[np.int64]) -> FloatArray:
        if points.size == 0:
            return np.zeros(n_groups)
        return points[np.clip(start + k, 0, points.size - 1)]

    def first(pred: Callable[[FloatArray, FloatArray], npt.NDArray[np.bool_]]) -> npt.NDArray[np.int64]:
        a, c = np.zeros(n_groups, dtype=np.int64), count.copy()
        while (active := a < c).any():
            mid = (a + c) // 2
            ok = pred(*value(at(mid)))
            c = np.where(active & ok, mid, c)
            a = np.where(active & ~ok, mid + 1, a)
        return a

    def interval_end(k: npt.NDArray[np.int64], target: FloatArray, lower: bool) -> FloatArray:
        left = np.where(k > 0, at(k - 1), -INF)
        right = np.where(k < count, at(k), INF)
        f_left = value(np.where(np.isfinite(left), left, 0.0))[1]
        f_right = value(np.where(np.isfinite(right), right, 0.0))[0]
        return crossing(left, f_left, right, f_right, slope, target, lower)

    lo = interval_end(first(lambda f_lo, f_hi: f_hi >= -tol), -tol, True)
    hi = interval_end(first(lambda f_lo, f_hi: f_lo > tol), tol, False)
    return lo, hi
