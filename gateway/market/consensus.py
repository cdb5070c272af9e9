"""Distributed mechanism 2: peer-to-peer trades negotiated by consensus + innovation.

Sorin, Bobo & Pinson (2019) clear the multi-bilateral market with the relaxed consensus +
innovation (RCI) method: every member n keeps, for each partner m, a proposed trade P_nm and a
price lambda_nm, and each round

    P_n.      <- argmin C_n(sum_m P_nm) + sum_m [ c_n gamma_nm |P_nm| - lambda_nm P_nm
                                                  + (rho/2) (P_nm - (P_nm - P_mn)/2)^2 ]
    lambda_nm <- lambda_nm - beta (lambda_nm - lambda_mn) - alpha (P_nm + P_mn)

(consensus on the price, innovation from the reciprocity mismatch; docs/architecture.md §7).
With beta = 1/2 and alpha = rho/2 (the defaults) this is exactly ADMM on the reciprocity constraints
P_nm = z_nm, z_nm + z_mn = 0 (Boyd et al. 2011, §7.1 consensus form): the two prices of a pair
agree after every round and the iterates converge to the exact solution of `p2p.clear_p2p`,
which is why those are the defaults; other alpha, beta are the paper's tunable family.

A member's update is a one-dimensional problem in its own price pi: each trade is a
soft-threshold of (P_nm - P_mn)/2 + (lambda_nm - pi)/rho by c_n gamma_nm / rho, clipped to the
sign constraints, i.e. two ramps in pi; with the member's own curve that is a sum of ramps,
solved exactly by the breakpoint search for all members at once. The grid's two nodes are
agents run by the gateway. Stopping (Boyd §3.3): primal residual |P_nm + P_mn| and dual
residual rho |z - z_prev| below eps_abs sqrt(pairs) + eps_rel * scale; rho adapts by residual
balancing unless given.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .admm import Stopping, balance, initial_price, initial_rho
from .bids import BidBook
from .terms import CommunityTerms
from .network import Network, P2PParams, build_network
from .p2p import p2p_result
from .ramps import Ramps
from .result import ClearingResult, Convergence
from .rootfind import grouped_interval, pick_price
from .uniform import check_feasible

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class _Pairs:
    """Both directions of every edge: entry k is owner[k]'s view of its trade with partner[k]."""

    owner: IntArray
    back: IntArray  # index of the reciprocal entry
    lower: FloatArray
    upper: FloatArray
    weight: FloatArray  # owner's own premium c_n gamma_nm

    @classmethod
    def of(cls, net: Network) -> _Pairs:
        e = len(net.tail)
        idx = np.arange(e)
        return cls(
            owner=np.concatenate([net.tail, net.head]),
            back=np.concatenate([idx + e, idx]),
            lower=np.concatenate([net.lower, -net.upper]),
            upper=np.concatenate([net.upper, -net.lower]),
            weight=np.concatenate([net.pref[net.tail], net.pref[net.head]]) * np.tile(net.gamma, 2),
        )


def consensus_p2p(
    book: BidBook,
    community: CommunityTerms,
    params: P2PParams | None = None,
    stop: Stopping = Stopping(),
    alpha: float | None = None,
    beta: float = 0.5,
) -> ClearingResult:
    """Mechanism 2 by consensus + innovation; the result carries its `Convergence`."""
    params = params or P2PParams()
    check_feasible(book, community)
    net = build_network(book, community, params)
    pairs = _Pairs.of(net)
    nodes = net.nodes
    rho = stop.rho or initial_rho(nodes)
    P = np.zeros(len(pairs.owner))
    lam = np.full(len(P), initial_price(nodes))
    pi = np.zeros(len(nodes))
    half = len(net.tail)
    it, r, s, eps_pri, eps_dual = 0, math.inf, math.inf, 0.0, 0.0
    for it in range(1, stop.max_iter + 1):
        z_old = 0.5 * (P - P[pairs.back])
        pi = _local_prices(nodes, pairs, z_old, lam, rho)
        P = _trades(pairs, z_old, lam, pi, rho)
        mismatch = P + P[pairs.back]
        lam = lam - beta * (lam - lam[pairs.back]) - (alpha or rho / 2) * mismatch
        z = 0.5 * (P - P[pairs.back])
        r = float(np.linalg.norm(mismatch[:half]))
        s = rho * float(np.linalg.norm(z - z_old))
        root = math.sqrt(max(len(P), 1))
        eps_pri = stop.eps_abs * root + stop.eps_rel * float(np.linalg.norm(P))
        eps_dual = stop.eps_abs * root + stop.eps_rel * float(np.linalg.norm(lam))
        if r <= eps_pri and s <= eps_dual:
            break
        if stop.rho is None and alpha is None and it % stop.adapt_every == 0:
            rho *= balance(r / max(eps_pri, 1e-300), s / max(eps_dual, 1e-300))
    t = 0.5 * (P[:half] - P[half:])
    conv = Convergence(it, r <= eps_pri and s <= eps_dual, r, s, rho)
    return dataclasses.replace(p2p_result(net, community, t, pi, book), convergence=conv)


def _trades(pairs: _Pairs, z: FloatArray, lam: FloatArray, pi: FloatArray, rho: float) -> FloatArray:
    """Each trade's best response to its owner's price: soft-threshold, then sign constraints."""
    v = z + (lam - pi[pairs.owner]) / rho
    shrink = pairs.weight / rho
    soft = np.sign(v) * np.maximum(np.abs(v) - shrink, 0.0)
    return np.clip(soft, pairs.lower, pairs.upper)


def _local_prices(
    nodes: BidBook, pairs: _Pairs, z: FloatArray, lam: FloatArray, rho: float
) -> FloatArray:
    """Every agent's price pi: its supply at pi equals the sum of its trades' best responses."""
    c0 = lam + rho * z  # where the unclipped, unshrunk best response crosses zero
    w = pairs.weight
    sell = Ramps.build(c0 - w - rho * pairs.upper, c0 - w, pairs.upper, pairs.owner)
    buy = Ramps.build(c0 + w, c0 + w - rho * pairs.lower, -pairs.lower, pairs.owner)
    ramps = Ramps.join([nodes.ramps(), sell, buy])
    keep = ramps.dq > 0
    ramps = ramps.take(keep)
    n = len(nodes)
    base = nodes.q_min - np.bincount(pairs.owner, pairs.upper, n)
    tol = 1e-13 * (1.0 + np.abs(base) + np.bincount(ramps.owner, ramps.dq, n))
    lo, hi = grouped_interval(ramps, n, base, np.zeros(n), tol)
    return pick_price(lo, hi, 0.0)
