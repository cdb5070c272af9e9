"""Mechanism 1: the uniform-price collective (docs/architecture.md §7; Moret & Pinson 2019, "Energy
collectives: a community and fairness based approach to future electricity markets").

The community problem is

    min  sum_n C_n(q_n) + import_price * I - export_price * E
    s.t. sum_n q_n + I - E = 0,   q_min_n <= q_n <= q_max_n,   0 <= I <= I_cap,  0 <= E <= E_cap

and lambda, the multiplier of the balance, is the community price. With the grid written as
one more bid (`community`), its optimality conditions say that every participant's net export
is on its supply function at lambda and that the supplies add up to zero: lambda is a zero of
the aggregate supply F(lambda) = sum_n S_n(lambda), found exactly by `rootfind.market_interval`.

Determinism, where the optimum is not unique:
- price: F may be zero on a whole interval of prices (the last block sold and the first one
  left unsold are at different prices); the community price is the middle of that interval
  (the k = 1/2 double auction), its finite end if it is unbounded on one side;
- quantities: at the clearing price several participants may be indifferent (flat pieces at
  exactly lambda, or lambda equal to a grid price). Members come first: their total is the
  feasible value closest to zero grid exchange, and every indifferent member fills the same
  fraction theta of its indifferent range, so identical bids get identical awards whatever
  their order. The grid takes the rest.
- congestion: when a capacity binds, lambda leaves [export_price, import_price]; the
  difference is the capacity's shadow price, reported as congestion.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .bids import BidBook
from .terms import CommunityTerms
from .errors import InfeasibleMarket
from .ramps import Ramps
from .result import ClearingResult
from .rootfind import market_interval, pick_price
from .costshare import business_as_usual, payments, shares

FloatArray = npt.NDArray[np.float64]
REL_TOL = 1e-10  # quantities below REL_TOL * (market size) count as zero: far above rounding
PRICE_WINDOW = 1e-12  # relative: prices this close to the clearing price are at it


def clear_uniform(book: BidBook, community: CommunityTerms) -> ClearingResult:
    """Clear one interval at one community price (see the module docstring)."""
    check_feasible(book, community)
    ramps, q_min, prices = market(book, community)
    base = float(q_min.sum())
    tol = REL_TOL * (float(np.abs(q_min).sum() + ramps.dq.sum()) + 1.0)
    lo, hi = market_interval(ramps, base, tol)
    price = _price(prices, lo, hi)
    q = member_awards(ramps, q_min, len(book), 0.0 if price is None else price)
    return uniform_result(book, community, q, price, (lo, hi), tol)


def market(book: BidBook, community: CommunityTerms) -> tuple[Ramps, FloatArray, FloatArray]:
    """The community's supply: members' ramps (owner = row) and the grid's (owner = last row),
    every row's q_min, and all prices bid (the book's own columns are not copied)."""
    grid = community.grid_bid(book)
    prices = np.concatenate([book.p_first, book.p_last])
    if grid is None:
        return book.ramps(), book.q_min, prices
    g = grid.ramps()
    shifted = Ramps(g.p0, g.p1, g.dq, g.owner + len(book), g.inv_width, g.step)
    return (
        Ramps.join([book.ramps(), shifted]),
        np.append(book.q_min, grid.q_min),
        np.concatenate([prices, grid.p_first, grid.p_last]),
    )


def tolerance(book: BidBook) -> float:
    size = float(np.abs(book.q_min).sum() + book.seg_dq.sum())
    return REL_TOL * (size + 1.0)


def check_feasible(book: BidBook, community: CommunityTerms) -> None:
    """Raise `InfeasibleMarket` unless members and grid together can balance."""
    least, most = float(book.q_min.sum()), float(book.q_max.sum())
    imp, exp = community.capacities(book)
    tol = tolerance(book) + REL_TOL * (imp + exp)
    where = " (islanded)" if community.islanded else ""
    if least - exp > tol:
        raise InfeasibleMarket(
            f"members must export at least {least:g} kWh in total but the grid can take at "
            f"most {exp:g} kWh{where}"
        )
    if most + imp < -tol:
        raise InfeasibleMarket(
            f"members must import at least {-most:g} kWh in total but the grid can supply at "
            f"most {imp:g} kWh{where}"
        )


def _price(prices: FloatArray, lo: float, hi: float) -> float | None:
    """The clearing price rule; with no price-setting piece at all, the middle of the prices bid."""
    if prices.size == 0 and not (np.isfinite(lo) or np.isfinite(hi)):
        return None
    fallback = 0.5 * (prices.min() + prices.max()) if prices.size else 0.0
    return float(pick_price(np.array(lo), np.array(hi), fallback))


def member_awards(ramps: Ramps, q_min: FloatArray, n_members: int, price: float) -> FloatArray:
    """Members' awards at ``price``, ties split as the module docstring says.

    Every participant's range is read over [price - d, price + d], d a relative 1e-12: wider
    than the price's rounding, and so narrow that on it every sloped piece is linear. One
    common fraction theta of those ranges is then both the exact solution of the balance
    (linear pieces move together) and the tie rule (blocks at the price share it), and the
    awards balance to rounding even where a piece is so steep that one ulp of price would
    move it by more than the tolerance.
    """
    delta = PRICE_WINDOW * max(1.0, abs(price))
    lo_f = ramps.fractions(price - delta)[0]
    hi_f = ramps.fractions(price + delta)[1]
    rows = len(q_min)
    least = q_min + np.bincount(ramps.owner, lo_f * ramps.dq, rows)
    most = q_min + np.bincount(ramps.owner, hi_f * ramps.dq, rows)
    a, b = least[:n_members], most[:n_members]
    grid_lo, grid_hi = (least[-1], most[-1]) if rows > n_members else (0.0, 0.0)
    # The members' total closest to zero grid exchange that the grid's range allows.
    total = float(np.clip(np.clip(0.0, -grid_hi, -grid_lo), a.sum(), b.sum()))
    spread = float(b.sum() - a.sum())
    theta = (total - float(a.sum())) / spread if spread > 0 else 0.0
    return a + theta * (b - a)


def uniform_result(
    book: BidBook,
    community: CommunityTerms,
    q: FloatArray,
    price: float | None,
    interval: tuple[float, float],
    tol: float,
) -> ClearingResult:
    """The result for members' awards ``q`` at ``price``: grid flows, costs, settlement, BAU."""
    net = -float(q.sum())  # what the grid must supply
    net = 0.0 if abs(net) <= tol else net  # rounding of the members' sum, not a flow
    grid_import = max(0.0, net) if community.import_price is not None else 0.0
    grid_export = max(0.0, -net) if community.export_price is not None else 0.0  # never -0.0
    own = book.cost(q)
    community_cost = float(own.sum()) + community.grid_bill(grid_import, grid_export)
    share = shares(book, community)
    pay = payments(q, price, community, grid_import, grid_export, share)
    bau = business_as_usual(book, community)
    return ClearingResult(
        mechanism="uniform",
        meters=book.meters,
        q=q,
        price=price,
        price_interval=interval,
        objective=community_cost,
        grid_import=grid_import,
        grid_export=grid_export,
        community_cost=community_cost,
        member_cost=own + pay,
        member_payment=pay,
        bau_q=None if bau is None else bau[0],
        bau_member_cost=None if bau is None else bau[1],
        allocation=community.allocation,
        congestion_import=_excess(price, community.import_price, 1.0),
        congestion_export=_excess(price, community.export_price, -1.0),
        member_price=None if share is None or price is None else share * price,
        extra={} if share is None else {"shares": dict(zip(book.meters, share.tolist()))},
    )


def _excess(price: float | None, grid_price: float | None, sign: float) -> float:
    if price is None or grid_price is None:
        return 0.0
    return max(sign * (price - grid_price), 0.0)
