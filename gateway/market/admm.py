"""Distributed mechanism 1: the collective cleared by ADMM, members keeping their costs private.

Exchange ADMM (Boyd, Parikh, Chu, Peleato & Eckstein, "Distributed optimization and statistical
learning via the alternating direction method of multipliers", Found. Trends ML 3(1), 2011,
§7.3.2), the scheme Moret & Pinson (2019) use for the energy collective. The agents are the
members and the grid (run by the gateway); each round

    x_i <- argmin_x C_i(x) + (rho/2) (x - x_i + xbar + u)^2     (every member, privately)
    u   <- u + mean(x)                                           (the gateway)

and the community price is lambda = -rho u. A member's update is the prox of its own cost: the
x with mc_i(x) + rho (x - v) = 0, found exactly on its own curve by the breakpoint search
(`rootfind.grouped_interval`, all members at once). Stopping (Boyd §3.3.1): the primal
residual |sum_i x_i| (the imbalance) and the dual residual rho |(x - xbar) - (x_prev -
xbar_prev)| both below eps_abs sqrt(n) + eps_rel * scale; rho adapts by residual balancing
(§3.4.1), u rescaled with it. It converges to the exact solution of `uniform.clear_uniform`.

Under a sharing rule (``equal``, ``proportional``) member i carries its share s_i of the grid
bill in its own problem, and its x-update becomes argmin C_i(x) + (rho s_i / 2)(x - v_i)^2:
the exchange ADMM on the potential sum_i C_i / s_i + G of `allocation` (Moret & Pinson's
"modified x-updates"). The grid agent keeps s = 1. It converges to `allocation.clear_allocated`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .bids import BidBook
from .costshare import shares
from .terms import CommunityTerms
from .result import ClearingResult, Convergence
from .rootfind import grouped_interval, pick_price
from .uniform import check_feasible, uniform_result

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Stopping:
    """eps_abs (kWh, or currency/kWh for the dual) per sqrt(agent), eps_rel of the scale."""

    eps_abs: float = 1e-9
    eps_rel: float = 1e-9
    max_iter: int = 20000
    rho: float | None = None  # None: from the spread of prices and quantities bid
    adapt_every: int = 10


def admm_uniform(book: BidBook, community: CommunityTerms, stop: Stopping = Stopping()) -> ClearingResult:
    """Mechanism 1 by exchange ADMM; the result carries its `Convergence`."""
    check_feasible(book, community)
    ext = community.with_grid(book)
    ramps = ext.ramps()
    n = len(ext)
    rho = stop.rho or initial_rho(ext)
    if n == 0:  # nobody to negotiate with: the exact engine's answer, after no rounds
        from .allocation import clear_allocated

        return _with(clear_allocated(book, community), Convergence(0, True, 0.0, 0.0, rho))
    weight = np.ones(n)  # each agent's share of the grid bill in its own problem (grid: 1)
    share = shares(book, community)
    if share is not None:
        weight[: len(book)] = share
    x = np.clip(0.0, ext.q_min, ext.q_max)
    u = -initial_price(ext) / rho * np.ones(1)
    tol = 1e-13 * (1.0 + np.abs(ext.q_min) + np.bincount(ramps.owner, ramps.dq, n))
    it, r, s = 0, math.inf, math.inf
    for it in range(1, stop.max_iter + 1):
        v = x - x.mean() - u
        lo, hi = grouped_interval(ramps, n, ext.q_min - v, 1.0 / (rho * weight), tol)
        x_new = v - pick_price(lo, hi, 0.0) / (rho * weight)  # x = v - pi / (rho s) with pi in dC(x)
        u = u + x_new.mean()
        r = abs(float(x_new.sum()))
        s = rho * float(np.linalg.norm((x_new - x_new.mean()) - (x - x.mean())))
        x = x_new
        eps_pri = stop.eps_abs * math.sqrt(n) + stop.eps_rel * float(np.linalg.norm(x))
        eps_dual = stop.eps_abs * math.sqrt(n) + stop.eps_rel * rho * abs(float(u[0])) * math.sqrt(n)
        if r <= eps_pri and s <= eps_dual:
            break
        if stop.rho is None and it % stop.adapt_every == 0:
            factor = balance(r / eps_pri, s / eps_dual)
            rho, u = rho * factor, u / factor
    price = float(-rho * u[0])
    conv = Convergence(it, r <= eps_pri and s <= eps_dual, r, s, rho)
    res = uniform_result(book, community, x[: len(book)], price, (price, price), 0.0)
    return _with(res, conv)


def balance(primal: float, dual: float, mu: float = 10.0, tau: float = 2.0) -> float:
    """Residual balancing (Boyd et al. §3.4.1): the factor to scale rho by."""
    if primal > mu * dual:
        return tau
    if dual > mu * primal:
        return 1.0 / tau
    return 1.0


def initial_rho(book: BidBook) -> float:
    """Price per kWh of a typical bid: its price spread over its width."""
    prices = np.concatenate([book.p_first, book.p_last])
    spread = float(prices.max() - prices.min()) if prices.size else 1.0
    width = float(np.median(book.q_max - book.q_min)) if len(book) else 1.0
    return max(spread, 1e-3) / max(width, 1e-3)


def initial_price(book: BidBook) -> float:
    prices = np.concatenate([book.p_first, book.p_last])
    return float(np.median(prices)) if prices.size else 0.0


def _with(res: ClearingResult, conv: Convergence) -> ClearingResult:
    return dataclasses.replace(res, convergence=conv, price_interval=None)
