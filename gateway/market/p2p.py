"""Mechanism 2: peer-to-peer trading with product differentiation (Sorin, Bobo & Pinson,
"Consensus-based approach to peer-to-peer electricity markets with product differentiation",
IEEE Trans. Power Syst. 34(2), 2019: the multi-bilateral economic dispatch, their eq. (4)).

    min  sum_n C_n(sum_m P_nm) + sum_n sum_m c_n gamma_nm |P_nm|
    s.t. P_nm + P_mn = 0  (lambda_nm),   q_min_n <= sum_m P_nm <= q_max_n,   sign constraints

P_nm > 0: n sells to m. gamma_nm is the distance between n and m (`graph`), c_n >= 0 member n's
preference: the premium per kWh and per unit of distance it attaches to trading far away.

Reading of the preference term. The paper writes c_nm P_nm with producers' trades P_nm >= 0
and consumers' P_nm <= 0. For a seller that is a cost on distant sales; taken literally for a
buyer it would be a reward for buying from far away, and with c_n = c_m the two halves of a
trade would cancel and differentiate nothing. We charge each side its premium on the energy it
trades, c_n gamma_nm |P_nm|, which is the paper's term for sellers and the preference the
paper describes for buyers. At the optimum a trade n -> m clears at a price lambda_nm with

    lambda_nm = mc_n + c_n gamma_nm = mc_m - c_m gamma_nm,

so the buyer pays less for energy from far away, exactly by its stated preference.

Against the paper and the DTU code. (1) Sorin, Bobo & Pinson (2019), eq. (4): the term is
c_nm P_nm on the signed trade, positive for a sale; literally a seller is charged and a buyer
credited, and for c_nm = c_mn the two halves of one trade cancel. We charge both sides a cost
on |P_nm| instead, the premium each agent attaches to trading with each peer. (2) The
DTU code by F. Moret, checked: fmoret/P2PApp (MainApp/Prosumer.py, the prosumer market app)
charges each agent sum pref_nm t_pos with t_pos >= |t_nm|, both sides, each its own premium:
our reading exactly. fmoret/p2p_general (Prosumer.py) sets pref as the linear coefficient of the
signed trade (Gurobi ``obj=pref``: the paper's literal sign, a cost only where the agent sells,
a credit where it buys), and then replaces the objective with ``setObjective``, which drops that
coefficient. Issue 18 describes the DTU course code as charging the seller side only, i.e.
c_n max(P_nm, 0); no stored version does exactly that (A-Eltved/peer-2-peer-markets, the DTU CEE
summer school 2018, has no preference term). Under that form a member that only buys states no
preference and cannot favour its neighbours; ours charges whoever states c_n, and gives the same
dispatch as the seller-side form when the members with c_n > 0 only sell.

Sign constraints (the paper's producers only sell, consumers only buy): a member whose bid
cannot import (q_min >= 0) never receives, one that cannot export (q_max <= 0) never sends;
prosumers may trade both ways. Trades are the variables of the graph's edges, so reciprocity
holds by construction and its multiplier is the trade price above.

The grid is two special peers, connected to every member at distance ``grid_distance``: an
import node that only sells, at the import price, up to the import capacity, and an export
node that only buys, at the export price, up to the export capacity. Two nodes rather than one
so that energy passed through the grid is bought at the import price and sold at the export
price, never netted for free between members who are not connected. Grid trades are settled at
the tariff; a binding capacity shows as congestion (the node's price minus the tariff).

In the daemon (gateway/interval/clearing.py) positions and c_n come from provisioning
(`tmeter provision --position --preference`), k and the grid's distance from ``[market.p2p]``
(grid at distance 0 there: trading at the tariff carries no premium, so c_n weighs distant peers
against the grid).

The exact solution is a convex QP (piecewise quadratic member costs, linear trade costs), solved
by `qp.solve_box_qp` in the space of segment fills and edge flows.
"""

from __future__ import annotations


import numpy as np
import numpy.typing as npt

from .bids import BidBook
from .terms import CommunityTerms
from .errors import InfeasibleMarket
from .network import Network, P2PParams, build_network
from .qp import BoxQP
from .result import ClearingResult, Trade
from .costshare import business_as_usual
from .uniform import check_feasible

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
TIE = 1e-8  # the grid's tie-break, relative to the largest price (_grid_tie)
ELASTIC = 10.0  # cost of an unbalanced kWh, in multiples of the largest price bid (+ premiums)


def clear_p2p(book: BidBook, community: CommunityTerms, params: P2PParams | None = None) -> ClearingResult:
    """Clear one interval peer to peer, exactly (centralised); see the module docstring."""
    from .duals import select_prices
    from .qp import solve_box_qp

    params = params or P2PParams()
    check_feasible(book, community)
    net = build_network(book, community, params)
    qp, edge_of, sign = _qp(net)
    sol = solve_box_qp(qp)
    flows = sol.x[len(net.nodes.seg_dq) : len(net.nodes.seg_dq) + len(edge_of)]
    _check_balanced(net, sol.x[len(net.nodes.seg_dq) + len(edge_of) :], sol.converged)
    t = np.zeros(len(net.tail))
    np.add.at(t, edge_of, flows * sign)
    traded = np.abs(t) > trade_tolerance(net)
    t = np.where(traded, t, 0.0)
    prices = select_prices(net, t, sol.y, traded)
    return p2p_result(net, community, t, prices, book, {"iterations": sol.iterations})


def trade_tolerance(net: Network) -> float:
    """Trades below this (kWh) are the solver's rounding, not trades."""
    return 1e-9 * (1.0 + float(np.abs(net.nodes.q_min).sum() + net.nodes.seg_dq.sum()))


def _qp(net: Network) -> tuple[BoxQP, IntArray, FloatArray]:
    """Columns: segment fills, forward flows, backward flows, then elastic slacks.

    The slacks e+ and e- (one pair per node, cost ELASTIC per kWh, far above any price) let a
    node's balance be missed at a prohibitive cost. A feasible market leaves them at zero;
    an infeasible one (a sparse graph that cannot route what a member must trade) shows where
    it fails instead of diverging; and node prices stay bounded by the slack cost where the
    optimum leaves them free (a member pinned at a bound by a binding capacity).
    """
    import scipy.sparse as sp

    nodes = net.nodes
    n = len(nodes)
    fwd = np.flatnonzero(net.upper > 0)
    bwd = np.flatnonzero(net.lower < 0)
    edge_of = np.concatenate([fwd, bwd])
    sign = np.concatenate([np.ones(len(fwd)), -np.ones(len(bwd))])  # +1: tail sells
    s, f = len(nodes.seg_dq), len(edge_of)
    flow_cols = s + np.arange(f)
    slack_cols = s + f + np.arange(2 * n)
    rows = np.concatenate([nodes.seg_owner, net.tail[edge_of], net.head[edge_of], np.tile(np.arange(n), 2)])
    cols = np.concatenate([np.arange(s), flow_cols, flow_cols, slack_cols])
    vals = np.concatenate([np.ones(s), -sign, sign, np.ones(n), -np.ones(n)])
    B = sp.csr_matrix((vals, (rows, cols)), shape=(n, s + f + 2 * n))
    weight = net.weight[edge_of]
    penalty = ELASTIC * (1.0 + float(np.abs(nodes.seg_p0).max(initial=0.0)) + float(np.abs(nodes.seg_p1).max(initial=0.0)))
    penalty += float(weight.sum())
    reach = float(np.abs(nodes.q_min).sum() + np.abs(nodes.q_max).sum()) + 1.0
    h = np.concatenate([(nodes.seg_p1 - nodes.seg_p0) / nodes.seg_dq, np.zeros(f + 2 * n)])
    g = np.concatenate([nodes.seg_p0, weight + _grid_tie(net, edge_of), np.full(2 * n, penalty)])
    caps = np.where(sign > 0, net.upper[edge_of], -net.lower[edge_of])
    u = np.concatenate([nodes.seg_dq, caps, np.full(2 * n, reach)])
    return BoxQP(h, g, u, B, -nodes.q_min), edge_of, sign


def _grid_tie(net: Network, edge_of: IntArray) -> FloatArray:
    """A kWh through the grid costs TIE x the largest price more than one kept among members:
    where the grid's price equals a member's (a battery discharging at the import price into
    its own household's deficit, the firmware's safe rule), members come first, as in the
    uniform market (uniform.py, "Members come first"). Without it the optimum is not unique
    and the solver split it: 100 demo meters at night bought 1.5 kWh an interval from the grid
    with their batteries full. Prices move by at most TIE x the largest price."""
    grid = net.is_grid(net.tail[edge_of]) | net.is_grid(net.head[edge_of])
    top = float(np.abs(net.nodes.seg_p0).max(initial=0.0)) + float(np.abs(net.nodes.seg_p1).max(initial=0.0))
    return np.where(grid, TIE * (1.0 + top), 0.0)


def _check_balanced(net: Network, slack: FloatArray, converged: bool) -> None:
    n = len(net.nodes)
    missed = slack[:n] + slack[n:]
    tol = 1e-7 * (1.0 + float(np.abs(net.nodes.q_min).sum() + net.nodes.seg_dq.sum()))
    short = np.flatnonzero(missed > tol)
    if converged and not len(short):
        return
    names = sorted({net.nodes.meters[i] for i in short}) or ["(solver did not converge)"]
    raise InfeasibleMarket(
        "no trade pattern balances every member within its bid on this trading graph "
        f"(sign constraints, k nearest peers); unbalanced: {', '.join(names[:10])}"
    )


def trade_prices(net: Network, t: FloatArray, node_price: FloatArray) -> FloatArray:
    """lambda_e = seller's price + its premium = buyer's price - its premium (their mean)."""
    seller = np.where(t >= 0, net.tail, net.head)
    buyer = np.where(t >= 0, net.head, net.tail)
    seller_side = node_price[seller] + net.pref[seller] * net.gamma
    buyer_side = node_price[buyer] - net.pref[buyer] * net.gamma
    return 0.5 * (seller_side + buyer_side)


def p2p_result(
    net: Network, community: CommunityTerms, t: FloatArray, node_price: FloatArray, book: BidBook,
    extra: dict | None = None,
) -> ClearingResult:
    """Awards, trades, costs and settlement from edge flows and node prices."""
    n = net.n_members
    P = net.net(t)
    price = trade_prices(net, t, node_price)
    settle = _settlement_prices(net, community, price)
    tol = trade_tolerance(net)
    traded = np.abs(t) > tol
    seller = np.where(t >= 0, net.tail, net.head)
    buyer = np.where(t >= 0, net.head, net.tail)
    qty = np.abs(t) * traded
    nodes = len(net.nodes)
    pay = np.bincount(buyer, qty * settle, nodes) - np.bincount(seller, qty * settle, nodes)
    own = net.nodes.cost(P)
    grid_import = float(P[net.import_node]) if net.import_node is not None else 0.0
    grid_export = float(-P[net.export_node]) if net.export_node is not None else 0.0
    grid_import = grid_import if grid_import > tol else 0.0  # solver residue, not a flow
    grid_export = grid_export if grid_export > tol else 0.0
    preference = float(net.weight @ np.abs(t))
    community_cost = float(own.sum())
    bau = business_as_usual(book, community)
    names = net.nodes.meters
    trades = tuple(
        Trade(names[s], names[b], float(q), float(p))
        for s, b, q, p in zip(seller[traded], buyer[traded], qty[traded], settle[traded])
    )
    return ClearingResult(
        mechanism="p2p",
        meters=book.meters,
        q=P[:n],
        price=None,
        price_interval=None,
        objective=community_cost + preference,
        grid_import=grid_import,
        grid_export=grid_export,
        community_cost=community_cost,
        member_cost=own[:n] + pay[:n],
        member_payment=pay[:n],
        bau_q=None if bau is None else bau[0],
        bau_member_cost=None if bau is None else bau[1],
        allocation="none",
        trades=trades,
        member_price=node_price[:n].copy(),
        congestion_import=_congestion(node_price, net.import_node, community.import_price, 1.0),
        congestion_export=_congestion(node_price, net.export_node, community.export_price, -1.0),
        preference_cost=preference,
        extra=extra or {},
    )


def _settlement_prices(net: Network, community: CommunityTerms, price: FloatArray) -> FloatArray:
    """Trades between members settle at lambda_e; trades with the grid at its tariff."""
    out = price.copy()
    for node, tariff in ((net.import_node, community.import_price), (net.export_node, community.export_price)):
        if node is not None and tariff is not None:
            out[(net.tail == node) | (net.head == node)] = tariff
    return out


def _congestion(node_price: FloatArray, node: int | None, tariff: float | None, sign: float) -> float:
    if node is None or tariff is None:
        return 0.0
    return max(sign * (float(node_price[node]) - tariff), 0.0)
