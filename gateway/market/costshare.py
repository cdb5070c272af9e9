"""Who pays what: the grid bill shared by the community's rule, and the business-as-usual baseline.

Settlement of mechanism 1 (uniform price lambda), per member n with award q_n:

- The energy matched inside the community is settled at lambda. On the short side of the
  market every award is matched in full; on the long side each award is matched pro rata:
  m_n = q_n * V / S for sellers, q_n * V / D for buyers, where S and D are the energy sold and
  bought by members and V = min(S, D). The rest, r_n = q_n - m_n, is what went to the grid.
- The grid bill G = import_price * import - export_price * export is paid by members:
  ``marginal``     (alias ``none``) each member pays for its own residual r_n at the grid's
                   prices, so with an unconstrained grid every award costs exactly lambda: pure
                   marginal pricing of the welfare-optimal dispatch.
  ``equal``        s_n = 1/N of G each and nothing else: Moret & Pinson's egalitarian sharing
                   of the collective's grid costs. Energy passed between members carries no
                   price of its own; it is what makes G smaller.
  ``proportional`` s_n of G in proportion to each member's grid use alone, |q_n^BAU| + 1 Wh
                   (see `shares`).
  Under ``equal`` and ``proportional`` the member's share enters its own problem, so the
  dispatch is the equilibrium of `allocation`, not the welfare optimum.

The payments add up to G under every rule (sum m_n = 0, sum s_n = 1), so the members' costs
C_n(q_n) + payment_n add up to the community's cost: the rules move money between members,
never to or from the community. Which members gain from the collective depends on the rule.

Business as usual (BAU): each member alone with the grid, buying at the import price and
selling at the export price without the community's capacity limits, chooses the net export
closest to zero among its optima (its own grid use is minimal on ties). Its cost is
C_n(q) + import_price * max(-q, 0) - export_price * max(q, 0); an islanded community has no
grid, so a member alone can only stay at q = 0 and BAU is undefined if that is outside its bid.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .bids import BidBook
from .terms import CommunityTerms

FloatArray = npt.NDArray[np.float64]


def matched_energy(q: FloatArray) -> FloatArray:
    """m_n: the part of each award traded with other members (the rest went to the grid)."""
    sold = float(np.maximum(q, 0).sum())
    bought = float(np.maximum(-q, 0).sum())
    volume = min(sold, bought)
    sell_share = volume / sold if sold > 0 else 0.0
    buy_share = volume / bought if bought > 0 else 0.0
    return np.where(q > 0, q * sell_share, q * buy_share)


# A member that would not touch the grid alone still carries 1 Wh of weight: its share, and so
# the grid price it sees in its own problem, stays positive, and its ties at price 0 (a PV
# block bid at 0) break as at any positive price instead of depending on the others.
SHARE_FLOOR_KWH = 1e-3


def shares(book: BidBook, community: CommunityTerms) -> FloatArray | None:
    """s_n, each member's share of the grid bill (they add up to 1); None under ``marginal``.

    ``proportional`` is read as proportional to the energy each member would exchange with the
    grid alone (its BAU award), a quantity fixed by its bid before the clearing. Shares in
    proportion to the awards themselves (|q_n| / sum |q|) would make each member's cost
    C_n(q_n) + G(Q) |q_n| / sum |q| non-convex in its own decision, with no unique equilibrium
    and no convex program to compute it; with shares fixed by the bids the game is a weighted
    potential game (`allocation`) and its equilibrium a convex program.
    """
    rule, n = community.rule, len(book)
    if rule == "marginal" or n == 0:
        return None
    if rule == "proportional":
        bau = business_as_usual(book, community)
        if bau is not None:
            weight = np.abs(bau[0]) + SHARE_FLOOR_KWH
            return weight / weight.sum()
    # equal; or proportional where BAU is undefined (islanded, or a member needs a side of the
    # grid that is missing): no grid use alone to weigh by
    return np.full(n, 1.0 / n)


def grid_shares(
    q: FloatArray, residual: FloatArray, community: CommunityTerms, bill: float,
    share: FloatArray | None,
) -> FloatArray:
    """Each member's part of the grid bill; the parts add up to ``bill``."""
    if share is None:  # marginal: its own residual at the grid's prices
        imp = community.import_price or 0.0
        exp = community.export_price or 0.0
        return imp * np.maximum(-residual, 0) - exp * np.maximum(residual, 0)
    return bill * share


def payments(
    q: FloatArray,
    price: float | None,
    community: CommunityTerms,
    grid_import: float,
    grid_export: float,
    share: FloatArray | None,
) -> FloatArray:
    """Money each member pays (negative: receives): under ``marginal`` (``share`` None) matched
    energy at ``price`` and the residual at the grid's prices; otherwise its share of G."""
    bill = community.grid_bill(grid_import, grid_export)
    if share is not None:
        return bill * share
    matched = matched_energy(q)
    internal = -(price or 0.0) * matched
    return internal + grid_shares(q, q - matched, community, bill, None)


def business_as_usual(book: BidBook, community: CommunityTerms) -> tuple[FloatArray, FloatArray] | None:
    """(q, cost) of every member alone with the grid; None if some member cannot be alone."""
    imp, exp = community.import_price, community.export_price
    sell_floor = book.supply(exp)[0] if exp is not None else book.q_min
    buy_ceiling = book.supply(imp)[1] if imp is not None else book.q_max
    if (exp is None and (sell_floor > 0).any()) or (imp is None and (buy_ceiling < 0).any()):
        return None
    q = np.where(sell_floor > 0, sell_floor, np.where(buy_ceiling < 0, buy_ceiling, 0.0))
    grid = (imp or 0.0) * np.maximum(-q, 0) - (exp or 0.0) * np.maximum(q, 0)
    return q, book.cost(q) + grid
