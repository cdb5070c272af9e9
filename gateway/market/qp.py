"""A primal-dual interior-point solver for the QPs of the peer-to-peer market.

    min  1/2 sum_j h_j x_j^2 + g^T x    s.t.   B x = b,   0 <= x <= u

with h >= 0 (a diagonal Hessian: every variable is a segment fill or a trade), u finite and B
sparse with at most two entries per column (one row per node of the trading graph). Mehrotra's predictor-corrector (Mehrotra 1992;
Nocedal & Wright, Numerical Optimization, 2nd ed., Alg. 16.4 and §16.6 for the QP form). The
Newton system is reduced to the normal equations

    K dy = r,    K = B diag(1/theta) B^T,    theta = h + z/x + w/(u - x),

which here is a weighted graph Laplacian plus a diagonal: nodes x nodes, as sparse as the
trading graph. It is factorised once per iteration (`normal`) and used for both the predictor
and the corrector.

Every variable is boxed, so the feasible set is compact and the iterates cannot run off along
a flat direction of a degenerate optimum: they converge towards the analytic centre of the
optimal face, which spreads trade evenly over equally good counterparts.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .normal import NormalEquations

FloatArray = npt.NDArray[np.float64]
STEP = 0.995  # fraction of the way to the boundary taken each step
THETA_FLOOR = 1e-10
RIDGE = 1e-10  # static dual regularisation of K (quantity per price): keeps it invertible where
# a node's only variables sit at their bounds, or an islanded component bids zero width
POLISH_FROM = 1e-8  # first polish once the gap is this small, then every hundredfold
DIVERGED = 1e9  # node prices this many times the largest price bid mean an infeasible problem


@dataclass(frozen=True)
class QPSolution:
    x: FloatArray
    y: FloatArray  # multipliers of B x = b (node prices in the p2p market)
    iterations: int
    converged: bool
    primal_residual: float
    dual_residual: float
    gap: float


@dataclass(frozen=True, eq=False)
class BoxQP:
    h: FloatArray
    g: FloatArray
    u: FloatArray
    B: Any  # scipy.sparse matrix, rows x len(g), at most two entries per column
    b: FloatArray


def solve_box_qp(qp: BoxQP, tol: float = 1e-9, max_iter: int = 100) -> QPSolution:
    """Solve ``qp``: interior point until the gap is below ``tol``, then polish.

    Where strict complementarity fails (a price exactly at a block's price or a curve's kink,
    common in markets) an interior-point method's iterates approach the optimum only like
    sqrt(gap), and pushing the gap further only ruins the conditioning. The polish guesses
    from the iterate which bounds are active and solves the optimality conditions of the
    problem with those bounds as equalities, exactly (Stellato et al., "OSQP: an operator
    splitting solver for quadratic programs", Math. Prog. Comp. 2020, §5.2); the answer is
    kept if it is primal and dual feasible to ``tol``, else the interior point goes on and
    tries again each time the gap has fallen another hundredfold.
    """
    state = _State.start(qp)
    ridge = RIDGE * (1.0 + float(qp.u.max(initial=0.0))) / (1.0 + float(np.abs(qp.g).max(initial=0.0)))
    normal = NormalEquations(qp.B, ridge)
    next_polish = POLISH_FROM
    res = state.residuals(qp)
    for it in range(max_iter + 1):
        res = state.residuals(qp)
        if res.gap <= next_polish:
            polished = _polish(qp, state, tol)
            if polished is not None:
                return polished.solution(it, True, polished.residuals(qp))
            next_polish = res.gap * 1e-2
        if it == max_iter or res.gap <= tol * 1e-6 and res.primal <= tol or state.diverged(qp):
            break
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a singular factor shows as non-finite steps
                candidate = state.step(qp, res, normal.factor(1.0 / state.theta(qp)))
        except (np.linalg.LinAlgError, RuntimeError, ValueError):
            break  # numerically singular this close to the boundary: polish what we have
        if not candidate.finite():
            break
        state = candidate
    polished = _polish(qp, state, tol)
    if polished is not None:
        return polished.solution(it, True, polished.residuals(qp))
    return state.solution(it, res.done(tol) and not state.diverged(qp), res)


@dataclass(frozen=True)
class _Residuals:
    rd: FloatArray
    rp: FloatArray
    mu: float
    primal: float
    dual: float
    gap: float

    def done(self, tol: float) -> bool:
        return self.primal <= tol and self.dual <= tol and self.gap <= tol


@dataclass(frozen=True, eq=False)
class _State:
    x: FloatArray
    s: FloatArray  # u - x, kept on its own: near a large bound, u - x would round to zero
    y: FloatArray
    z: FloatArray  # multipliers of x >= 0
    w: FloatArray  # multipliers of x <= u

    @classmethod
    def start(cls, qp: BoxQP) -> _State:
        # Inside every box, but no further from its lower bound than a typical segment is
        # wide: most trade bounds are loose and most optimal trades are small or zero.
        n = len(qp.g)
        dual = max(1.0, float(np.abs(qp.g).max(initial=0.0)))
        typical = float(np.median(qp.u)) if n else 1.0
        x = np.minimum(0.5 * qp.u, typical)
        return cls(x, qp.u - x, np.zeros(len(qp.b)), np.full(n, dual), np.full(n, dual))

    def finite(self) -> bool:
        return all(np.isfinite(a).all() for a in (self.x, self.s, self.y, self.z, self.w))

    def diverged(self, qp: BoxQP) -> bool:
        """Prices running off to infinity: the dual is unbounded, i.e. the primal infeasible."""
        bound = DIVERGED * (1.0 + float(np.abs(qp.g).max(initial=0.0)))
        arrays = (self.x, self.y, self.z, self.w)
        return not all(np.isfinite(a).all() for a in arrays) or float(np.abs(self.y).max(initial=0.0)) > bound

    def theta(self, qp: BoxQP) -> FloatArray:
        # Floored: a variable strictly inside its box at the optimum has z, w -> 0 and would
        # otherwise get an unbounded weight 1/theta in the normal equations.
        floor = THETA_FLOOR * (1.0 + float(np.abs(qp.g).max(initial=0.0)))
        floor /= 1.0 + float(qp.u.max(initial=0.0))
        return np.maximum(qp.h + self.z / self.x + self.w / self.s, floor)

    def residuals(self, qp: BoxQP) -> _Residuals:
        x, s = self.x, self.s
        rd = qp.h * x + qp.g - qp.B.T @ self.y - self.z + self.w
        rp = qp.B @ x - qp.b
        comp = float(x @ self.z + s @ self.w)
        objective = float(0.5 * (qp.h * x) @ x + qp.g @ x)
        return _Residuals(
            rd,
            rp,
            comp / (2 * max(len(x), 1)),
            float(np.abs(rp).max(initial=0.0)) / (1.0 + float(np.abs(qp.b).max(initial=0.0))),
            float(np.abs(rd).max(initial=0.0)) / (1.0 + float(np.abs(qp.g).max(initial=0.0))),
            comp / (1.0 + abs(objective)),
        )

    def step(self, qp: BoxQP, res: _Residuals, solve: Callable[[FloatArray], FloatArray]) -> _State:
        x, s = self.x, self.s
        theta_inv = 1.0 / self.theta(qp)
        # Predictor: the pure Newton (affine-scaling) direction.
        aff = self._direction(qp, res, solve, theta_inv, x * self.z, s * self.w)
        a_p, a_d = self._max_steps(*aff)
        mu_aff = float((x + a_p * aff[0]) @ (self.z + a_d * aff[2]))
        mu_aff += float((s - a_p * aff[0]) @ (self.w + a_d * aff[3]))
        sigma = (mu_aff / (2 * len(x)) / res.mu) ** 3 if res.mu > 0 else 0.0
        # Corrector: second-order term of the complementarity, centred at sigma * mu.
        target = sigma * res.mu
        rc1 = x * self.z + aff[0] * aff[2] - target
        rc2 = s * self.w - aff[0] * aff[3] - target
        dx, dy, dz, dw = self._direction(qp, res, solve, theta_inv, rc1, rc2)
        # One step length for primal and dual: with h != 0 the dual residual depends on x, and
        # separate lengths can make the iterates cycle.
        a = STEP * min(self._max_steps(dx, dy, dz, dw))
        return _State(x + a * dx, s - a * dx, self.y + a * dy, self.z + a * dz, self.w + a * dw)

    def _direction(
        self,
        qp: BoxQP,
        res: _Residuals,
        solve: Callable[[FloatArray], FloatArray],
        theta_inv: FloatArray,
        rc1: FloatArray,
        rc2: FloatArray,
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Newton step for complementarity targets rc1 (x z) and rc2 (s w)."""
        x, s = self.x, self.s
        r_hat = -res.rd - rc1 / x + rc2 / s
        dy = solve(-res.rp - qp.B @ (theta_inv * r_hat))
        dx = theta_inv * (r_hat + qp.B.T @ dy)
        dz = (-rc1 - self.z * dx) / x
        dw = (-rc2 + self.w * dx) / s
        return dx, dy, dz, dw

    def _max_steps(
        self, dx: FloatArray, dy: FloatArray, dz: FloatArray, dw: FloatArray
    ) -> tuple[float, float]:
        """Largest primal and dual steps <= 1 keeping x, u - x and z, w non-negative."""
        primal = min(1.0, _ratio(self.x, dx), _ratio(self.s, -dx))
        dual = min(1.0, _ratio(self.z, dz), _ratio(self.w, dw))
        return primal, dual

    def solution(self, iterations: int, converged: bool, res: _Residuals) -> QPSolution:
        return QPSolution(
            self.x, self.y, iterations, converged, res.primal, res.dual, res.gap
        )


def _ratio(v: FloatArray, dv: FloatArray) -> float:
    neg = dv < 0
    if not neg.any():
        return 1.0
    return float((v[neg] / -dv[neg]).min())


def _polish(qp: BoxQP, state: _State, tol: float, refinements: int = 25) -> _State | None:
    """The exact solution for the active set ``state`` suggests, or None if it is not optimal.

    Solves [[H_F, B_F^T], [B_F, 0]] (x_F, -y) = (-g_F, b - B_U u_U) for the free variables F
    (bounds L and U fixed), regularised by delta and refined (a proximal-point iteration from
    the interior-point iterate: on a degenerate face it keeps the nearby solution).
    """
    import scipy.sparse as sp
    import scipy.sparse.linalg

    lower = state.x < state.z
    upper = ~lower & (state.s < state.w)
    free = ~lower & ~upper
    B = qp.B.tocsc()
    Bf = B[:, free]
    rhs_p = qp.b - B[:, upper] @ qp.u[upper]
    nf, m = int(free.sum()), len(qp.b)
    M = sp.bmat([[sp.diags(qp.h[free]), Bf.T], [Bf, None]], format="csc")
    delta = 1e-9 * max(1.0, float(abs(M).max()) if M.nnz else 1.0)
    reg = sp.diags(np.concatenate([np.full(nf, delta), np.full(m, -delta)]), format="csc")
    try:
        lu = scipy.sparse.linalg.splu(M + reg)
    except RuntimeError:
        return None
    rhs = np.concatenate([-qp.g[free], rhs_p])
    v = np.concatenate([state.x[free], -state.y])
    scale = 1.0 + float(np.abs(rhs).max(initial=0.0))
    for _ in range(refinements):
        residual = rhs - M @ v
        if np.abs(residual).max(initial=0.0) <= 1e-15 * scale:
            break
        v = v + lu.solve(residual)
        if not np.isfinite(v).all() or np.abs(v).max(initial=0.0) > 1e12 * scale:
            return None  # an inconsistent guess: the refinement runs away
    x = np.where(upper, qp.u, 0.0)
    x[free] = v[:nf]
    y = -v[nf:]
    return _feasible_or_none(qp, x, y, free, lower, upper, tol)


def _feasible_or_none(
    qp: BoxQP, x: FloatArray, y: FloatArray, free: npt.NDArray[np.bool_],
    lower: npt.NDArray[np.bool_], upper: npt.NDArray[np.bool_], tol: float,
) -> _State | None:
    scale_x = 1.0 + float(np.abs(qp.u).max(initial=0.0))
    scale_g = 1.0 + float(np.abs(qp.g).max(initial=0.0))
    if not np.isfinite(x).all() or not np.isfinite(y).all():
        return None
    if (x[free] < -tol * scale_x).any() or (x[free] > qp.u[free] + tol * scale_x).any():
        return None
    reduced = qp.h * x + qp.g - qp.B.T @ y  # = z - w at the optimum
    if (reduced[lower] < -tol * scale_g).any() or (reduced[upper] > tol * scale_g).any():
        return None
    if np.abs(reduced[free]).max(initial=0.0) > tol * scale_g:
        return None
    if np.abs(qp.B @ x - qp.b).max(initial=0.0) > tol * scale_x:
        return None
    x = np.clip(x, 0.0, qp.u)
    z = np.where(lower, np.maximum(reduced, 0.0), 0.0)
    w = np.where(upper, np.maximum(-reduced, 0.0), 0.0)
    return _State(x, qp.u - x, y, z, w)
