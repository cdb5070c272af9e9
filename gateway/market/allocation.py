"""Cost allocation inside the members' problems: the community-based market of Moret & Pinson.

Moret & Pinson ("Energy collectives: a community and fairness based approach to future
electricity markets", IEEE Trans. Power Systems 34(5), 2019) clear the collective by ADMM with a
coordination node that trades with the grid; "the coordination node may allocate import costs
(/export revenues) following various principles (yielding modified x-updates), e.g. equal
share, proportional sharing", and the allocation then changes each member's dispatch. The
community-market ADMM of the DTU CEE summer school 2018 (A-Eltved/peer-2-peer-markets,
``admm_community.py``: members' p, q, alpha, beta, the grid's import and export in the
z-update) is the unallocated case, which is `uniform` here (rule ``marginal``).

What this module solves. Under a sharing rule with shares s_n > 0, sum s_n = 1 (`costshare.shares`:
1/N for ``equal``, proportional to the member's grid use alone for ``proportional``), member n
pays s_n of the grid bill G(Q) (Q = sum_m q_m, the members' net export) and nothing else, so
its own problem, the others' decisions given, is

    min_{q_n}  J_n(q) = C_n(q_n) + s_n G(Q),    q_min_n <= q_n <= q_max_n.

Each member thus sees s_n of the grid's marginal price, not all of it: with ``equal`` a member
that imports one more kWh pays import_price / N for it and the rest falls on its neighbours.
The members' problems are coupled only through G, so the game is a weighted potential game
(Monderer & Shapley, "Potential games", Games Econ. Behav. 14, 1996): with

    Phi(q) = sum_n C_n(q_n) / s_n + G(Q)

dJ_n/dq_n = s_n dPhi/dq_n, and the equilibrium, every member on its best response, is the
minimiser of the convex Phi. With grid capacities the balance couples the members' feasible
sets; the equilibrium taken is then the variational one (one multiplier lambda for all,
Facchinei & Kanzow, "Generalized Nash equilibrium problems", 4OR 5, 2007), again argmin Phi.

Solved exactly: min Phi is the uniform-price problem of `uniform` with member n's marginal
prices divided by s_n ("exposed" curves), so lambda is the grid's marginal price and member n
is on its own curve at s_n lambda. Solved by ADMM (`admm`): the exchange ADMM on Phi, whose
x-update for member n is argmin C_n(x) + rho s_n / 2 (x - v_n)^2 -- the member's own prox
with its share of the coordination term, the "modified x-update". ``marginal`` is s_n = 1 for
all, the welfare optimum.

Choices the source leaves open, and why:
- energy exchanged between members carries no price under ``equal`` / ``proportional``: the
  member pays its share of G and nothing else, so payments add up to G exactly and the rule is
  the member's whole bill (an internal price on top would be a second allocation);
- ``proportional`` weights are fixed by the bids (the member's grid use alone, `costshare.shares`),
  not by the awards, because shares in the awards make J_n non-convex with no unique
  equilibrium;
- the equilibrium is not the welfare optimum: sum of costs C_n + G is lowest under
  ``marginal`` (first welfare theorem) and a sharing rule that hides part of the grid price
  from each member makes the community consume more. That is the price of the rule, shown by
  ``tmeter study collective``; `cooperative` keeps the optimal dispatch and still leaves
  nobody worse off than alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from .bids import BidBook
from .costshare import shares
from .result import ClearingResult
from .terms import CommunityTerms
from .uniform import check_feasible, clear_uniform, tolerance, uniform_result

FloatArray = npt.NDArray[np.float64]


def exposed(book: BidBook, share: FloatArray) -> BidBook:
    """Member n's curve with its prices divided by s_n: its supply at lambda is its supply at
    s_n lambda, and its cost integral is C_n / s_n (up to the constant, which Phi ignores)."""
    scale = 1.0 / share
    seg = scale[book.seg_owner]
    return dataclasses.replace(
        book,
        p_first=book.p_first * scale,
        p_last=book.p_last * scale,
        seg_p0=book.seg_p0 * seg,
        seg_p1=book.seg_p1 * seg,
        cost_at_q_min=book.cost_at_q_min * scale,
    )


def clear_allocated(book: BidBook, community: CommunityTerms) -> ClearingResult:
    """The equilibrium of the community's sharing rule, exactly (module docstring)."""
    check_feasible(book, community)
    share = shares(book, community)
    if share is None:
        return clear_uniform(book, community)
    inner = clear_uniform(exposed(book, share), dataclasses.replace(community, allocation="marginal"))
    interval = inner.price_interval or (0.0, 0.0)
    return uniform_result(book, community, inner.q, inner.price, interval, tolerance(book))


def potential(book: BidBook, community: CommunityTerms, q: FloatArray) -> float:
    """Phi(q) = sum_n C_n(q_n) / s_n + G(Q) (with s_n = 1 under ``marginal``): what the
    equilibrium minimises. For tests and for comparing engines; q must balance with the grid."""
    share = shares(book, community)
    weight = np.ones(len(book)) if share is None else 1.0 / share
    net = -float(q.sum())
    bill = community.grid_bill(max(net, 0.0), max(-net, 0.0))
    return float(weight @ book.cost(q)) + bill
