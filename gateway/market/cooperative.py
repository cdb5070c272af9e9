"""A cooperative allocation over a billing period: the least core of the community's cost game,
over sampled coalitions, with every member's stand-alone cost as a hard cap.

The game (Fioriti, Frangioni & Poli, "Optimal sizing of energy communities with fair revenue
sharing and exit clauses", Applied Energy 299, 2021; Fioriti, Bigi, Frangioni, Passacantando &
Poli, "Fair least core: efficient, stable and unique game-theoretic reward allocation in energy
communities by row-generation", IEEE Trans. Energy Markets, Policy and Regulation 3(2), 2025;
EnergyCommunity.jl offers these through TheoryOfGames.jl): v(S) is the cost of coalition S
over the period, every interval cleared as a community of its own (the welfare optimum,
`uniform`, under the same grid prices and capacities); v({n}) is member n alone, v(N) the
whole community. An allocation x (each member's cost over the period) is in the core if
sum_n x_n = v(N) and x(S) <= v(S) for every coalition S: no group would do better on its
own. The least core relaxes that by the smallest excess eps that makes it non-empty:

    min eps   s.t.   sum_n x_n = v(N),   x(S) <= v(S) + eps  (S sampled),   x_n <= v({n}).

Here the singletons are hard constraints, not relaxed by eps, and always present: no member
pays more over the period than alone, exactly, whenever that is possible at all, i.e.
whenever v(N) <= sum_n v({n}), which holds when the community can run every member as it
would run alone (no capacity of the connection binds that the members alone would not meet).
Among the allocations of least excess the one closest (L1) to the equal split of the
community's saving is taken, by a second LP (HiGHS: deterministic).

What it guarantees: budget balance (sum x = v(N), so members' payments add up to the grid
bill) and individual rationality over the period. What it does not: full core stability. 2^N
coalitions cannot be cleared for a real community, so the coalitions checked are the
singletons, the grand coalition, every "all but one" (these bound each member's cost from
below: x_n >= v(N) - v(N \\ {n})) and a seeded random sample; a coalition outside the sample
may still have an excess above eps. ``eps <= 0`` means the allocation is in the core of the
sampled game. The dispatch is the welfare optimum of every interval; only money moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .bids import BidBook
from .costshare import business_as_usual
from .rootfind import market_interval
from .terms import CommunityTerms
from .uniform import REL_TOL, _price, check_feasible, market, member_awards

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class LeastCore:
    """Each member's cost over the period (``cost``, adds up to ``grand``) beside its cost
    alone; ``epsilon`` the largest excess over the ``coalitions`` sampled (<= 0: in their core)."""

    meters: tuple[str, ...]
    cost: FloatArray
    alone: FloatArray
    grand: float
    epsilon: float
    coalitions: int
    individually_rational: bool  # False only if v(N) > sum v({n}): nobody could guarantee it

    @property
    def saving(self) -> FloatArray:
        return self.alone - self.cost


def sample_coalitions(n: int, samples: int, seed: int = 0) -> list[BoolArray]:
    """Every "all but one" and ``samples`` distinct random coalitions of 2 .. n-2 members."""
    out: list[BoolArray] = []
    seen: set[bytes] = set()
    if n >= 3:
        for i in range(n):
            mask = np.ones(n, dtype=bool)
            mask[i] = False
            out.append(mask)
            seen.add(mask.tobytes())
    rng = np.random.default_rng([seed, n, 18])
    tries = 0
    while n >= 4 and len(out) < n + samples and tries < 20 * (samples + 1):
        tries += 1
        size = int(rng.integers(2, n - 1))
        mask = np.zeros(n, dtype=bool)
        mask[rng.choice(n, size, replace=False)] = True
        if mask.tobytes() not in seen:
            seen.add(mask.tobytes())
            out.append(mask)
    return out


def sub_book(book: BidBook, mask: BoolArray) -> BidBook:
    """The members in ``mask`` only (rows and their segments, renumbered)."""
    seg = mask[book.seg_owner]
    index = np.cumsum(mask) - 1
    return BidBook(
        meters=tuple(m for m, keep in zip(book.meters, mask) if keep),
        q_min=book.q_min[mask], q_max=book.q_max[mask],
        p_first=book.p_first[mask], p_last=book.p_last[mask],
        seg_owner=index[book.seg_owner[seg]].astype(np.int64),
        seg_q0=book.seg_q0[seg], seg_dq=book.seg_dq[seg],
        seg_p0=book.seg_p0[seg], seg_p1=book.seg_p1[seg],
        cost_at_q_min=book.cost_at_q_min[mask],
    )


def community_cost(book: BidBook, community: CommunityTerms) -> float:
    """min sum C_n + G of one interval (the welfare optimum of `uniform`, without its result)."""
    check_feasible(book, community)
    ramps, q_min, prices = market(book, community)
    tol = REL_TOL * (float(np.abs(q_min).sum() + ramps.dq.sum()) + 1.0)
    lo, hi = market_interval(ramps, float(q_min.sum()), tol)
    price = _price(prices, lo, hi)
    q = member_awards(ramps, q_min, len(book), 0.0 if price is None else price)
    net = -float(q.sum())
    net = 0.0 if abs(net) <= tol else net
    return float(book.cost(q).sum()) + community.grid_bill(max(net, 0.0), max(-net, 0.0))


def coalition_costs(book: BidBook, community: CommunityTerms, masks: BoolArray) -> FloatArray:
    """v(S) of one interval for every row of ``masks`` (coalitions x members).

    With both grid prices and no capacity the value has a closed form by duality,
    v(S) = max over lambda in [export_price, import_price] of sum_{n in S} h_n(lambda),
    h_n(lambda) = min_q C_n(q) - lambda q (concave; its slope is minus n's supply): the
    maximiser is where the coalition's supply crosses zero, found for all coalitions at once
    on the breakpoints of the bids, where supply is linear in between. Otherwise each
    coalition is cleared by `community_cost`.
    """
    imp, exp = community.import_price, community.export_price
    if imp is None or exp is None or community.import_capacity is not None or community.export_capacity is not None:
        return np.array([community_cost(sub_book(book, m), community) for m in masks])
    if len(masks) == 0:
        return np.zeros(0)
    weights = masks.astype(float)
    inner = np.concatenate([book.seg_p0, book.seg_p1])
    knots = np.unique(np.concatenate([[exp, imp], inner[(inner > exp) & (inner < imp)]]))
    lo, hi = _supply(book, knots, upper=False), _supply(book, knots, upper=True)  # (knots, members)
    f_lo, f_hi = weights @ lo.T, weights @ hi.T  # (coalitions, knots)
    k = np.argmax(f_hi >= 0, axis=1)  # first knot where the coalition can balance
    none = ~(f_hi >= 0).any(axis=1)  # short even at the import price: it imports
    rows = np.arange(len(masks))
    prev = np.maximum(k - 1, 0)
    left, right = f_hi[rows, prev], f_lo[rows, k]
    span = right - left
    frac = np.divide(-left, span, out=np.ones_like(span), where=span > 0)
    lam = np.where(f_lo[rows, k] <= 0, knots[k], knots[prev] + np.clip(frac, 0, 1) * (knots[k] - knots[prev]))
    lam = np.where(k == 0, knots[0], lam)
    lam = np.where(none, imp, lam)
    q = _supply_at(book, lam)  # (coalitions, members), any optimal q: h does not depend on it
    own = book.cost_at_q_min + _integral(book, q)
    return np.sum(weights * (own - lam[:, None] * q), axis=1)


def _fractions(book: BidBook, price: FloatArray, upper: bool) -> FloatArray:
    """Fill of every segment at each price (rows: prices); blocks at the price full if ``upper``."""
    p = price[:, None]
    width = book.seg_p1 - book.seg_p0
    step = width <= 1e-12 * np.maximum(1.0, np.abs(book.seg_p1))  # as `ramps`: a block
    sloped = np.clip((p - book.seg_p0) / np.where(step, 1.0, width), 0.0, 1.0)
    block = (p >= book.seg_p0) if upper else (p > book.seg_p0)
    return np.where(step, block.astype(float), sloped)


def _owners(book: BidBook) -> FloatArray:
    out = np.zeros((len(book.seg_dq), len(book)))
    out[np.arange(len(book.seg_dq)), book.seg_owner] = 1.0
    return out


def _supply(book: BidBook, price: FloatArray, upper: bool) -> FloatArray:
    return book.q_min + (_fractions(book, price, upper) * book.seg_dq) @ _owners(book)


def _supply_at(book: BidBook, price: FloatArray) -> FloatArray:
    return _supply(book, price, upper=False)


def _integral(book: BidBook, q: FloatArray) -> FloatArray:
    """Integral of mc_n from q_min_n to q (q inside the bid's range), per row of q."""
    u = np.clip(q[:, book.seg_owner] - book.seg_q0, 0.0, book.seg_dq)
    slope = (book.seg_p1 - book.seg_p0) / book.seg_dq
    return (u * (book.seg_p0 + 0.5 * slope * u)) @ _owners(book)


def period_values(
    books: Sequence[BidBook], community: CommunityTerms, masks: Sequence[BoolArray]
) -> tuple[FloatArray, float, FloatArray]:
    """(v({n}) per member, v(N), v(S) per mask), each summed over the intervals' books."""
    n = len(books[0]) if books else 0
    alone, grand, values = np.zeros(n), 0.0, np.zeros(len(masks))
    for book in books:
        bau = business_as_usual(book, community)
        if bau is None:
            raise ValueError("an islanded community has no stand-alone cost: no cooperative allocation")
        alone += bau[1]
        grand += community_cost(book, community)
        if len(masks):
            values += coalition_costs(book, community, np.array(masks))
    return alone, grand, values


def least_core(alone: FloatArray, grand: float, masks: Sequence[BoolArray], values: FloatArray) -> tuple[FloatArray, float, bool]:
    """(x, eps, individually rational) as the module docstring says."""
    from scipy.optimize import linprog

    n = len(alone)
    rational = grand <= float(alone.sum()) + 1e-9 * (1.0 + abs(grand))
    rows = [np.append(mask.astype(float), -1.0) for mask in masks]
    rhs = list(values)
    for i in range(n):  # singletons: hard caps (relaxed by eps only if no cap can hold)
        rows.append(np.append(np.eye(n)[i], 0.0 if rational else -1.0))
        rhs.append(alone[i])
    a_ub, b_ub = np.array(rows).reshape(-1, n + 1), np.array(rhs)
    a_eq, b_eq = np.append(np.ones(n), 0.0)[None, :], [grand]
    free = [(None, None)] * (n + 1)
    eps = 0.0
    if masks or not rational:
        first = linprog(np.append(np.zeros(n), 1.0), a_ub, b_ub, a_eq, b_eq, bounds=free, method="highs")
        eps = float(first.x[-1])
    # Second LP: the least-core point nearest (L1) to the equal split of the saving.
    target = alone - (float(alone.sum()) - grand) / n
    slack = 1e-9 * (1.0 + abs(eps) + float(np.abs(alone).max(initial=0.0)))
    c = np.concatenate([np.zeros(n + 1), np.ones(n)])
    ub = np.hstack([a_ub, np.zeros((len(a_ub), n))])
    ub_eps = np.concatenate([np.zeros(n), [1.0], np.zeros(n)])[None, :]
    dev_hi = np.hstack([np.eye(n), np.zeros((n, 1)), -np.eye(n)])  # x - d <= target
    dev_lo = np.hstack([-np.eye(n), np.zeros((n, 1)), -np.eye(n)])  # -x - d <= -target
    second = linprog(
        c,
        np.vstack([ub, ub_eps, dev_hi, dev_lo]),
        np.concatenate([b_ub, [eps + slack], target, -target]),
        np.hstack([a_eq, np.zeros((1, n))]), b_eq,
        bounds=free + [(0, None)] * n, method="highs",
    )
    x = second.x[:n]
    # The LP's own tolerance may leave a cap exceeded by ~1e-9: cap exactly and hand the excess
    # to the members below their caps, in proportion to their room. With no room left (v(N)
    # equal to sum v({n}) up to rounding) every member pays exactly its cost alone.
    if rational:
        over = float(np.maximum(x - alone, 0.0).sum())
        x = np.minimum(x, alone)
        room = alone - x
        if over > 0 and room.sum() > 0:
            x = np.minimum(x + room * min(1.0, over / float(room.sum())), alone)
    return x, eps, rational


def cooperative_allocation(
    books: Sequence[BidBook], community: CommunityTerms, samples: int | None = None, seed: int = 0
) -> LeastCore:
    """The least-core allocation of a period's books (same members, same order, every interval)."""
    n = len(books[0]) if books else 0
    masks = sample_coalitions(n, n if samples is None else samples, seed)
    alone, grand, values = period_values(books, community, masks)
    x, eps, rational = least_core(alone, grand, masks, values)
    meters = books[0].meters if books else ()
    return LeastCore(meters, x, alone, grand, eps, len(masks) + n + 1, rational)
