r"""Latent AR(1) random effects: glmmTMB's ``ar1(time + 0 | group)``.

Each level g of the grouping factor (a SKU) has a latent series :math:`b_{g1..gT}` over a time
calendar shared by all levels (the integers from the smallest to the largest time value in the
data, so a SKU with a shorter history still has latent values for the months it was not
observed), stationary AR(1) with standard deviation :math:`\sigma` and correlation :math:`\rho`:

.. math:: b_{g1} \sim N(0, \sigma^2), \qquad
          b_{gt} = \rho\, b_{g,t-1} + \sigma\sqrt{1-\rho^2}\,\varepsilon_{gt},

i.e. :math:`\operatorname{Cov}(b_{gs}, b_{gt}) = \sigma^2\rho^{|s-t|}`, and row i adds
:math:`b_{g(i), t(i)}` to its linear predictor.

**Parameters.** ``theta = (sigma, atanh(rho))`` (lower bound 0 on sigma, as on lme4's
diagonals; :math:`\rho = \tanh` of the second entry, bounded to :math:`|\rho| \le \tanh 4.5
= 0.99975`, :data:`RHO_PARAM_MAX`: a level that wanders like a random walk is fitted at that
bound).

**Linear algebra.** The engine works with spherical effects :math:`b = \Lambda u`,
:math:`u \sim N(0, I)`, :math:`\Lambda = \sigma\tilde L` with :math:`\tilde L` the Cholesky
factor of the AR(1) correlation matrix, applied by the AR recursion (O(T) per level, never
formed). The precision of :math:`b` is tridiagonal,
:math:`Q = M_0/\kappa`, :math:`\kappa = \sigma^2(1-\rho^2)`,
:math:`M_0 = \operatorname{tridiag}(-\rho;\ 1, 1+\rho^2, \dots, 1+\rho^2, 1;\ -\rho)`. Each row
touches one latent value, so :math:`Z^\top D Z = \operatorname{diag}(d)` and the Laplace system
:math:`H_b = \operatorname{diag}(d) + Q` is tridiagonal per level. With
:math:`P = \kappa\operatorname{diag}(d) + M_0 = LL^\top` (banded Cholesky, a loop over T
vectorised over levels):

.. math:: H_u = \Lambda^\top Z^\top D Z\Lambda + I = \Lambda^\top H_b \Lambda, \quad
          H_u^{-1} = (1-\rho^2)\,\tilde L^{-1} P^{-1}\tilde L^{-\top}, \quad
          \log\det H_u = \log\det P - G\log(1-\rho^2),

all finite at :math:`\sigma = 0` (the GLM start). The cost is O(n + G T) per Newton step.

**Gradient.** The exact gradient of the Laplace deviance
:math:`F = -2\ell(\hat b) + \hat b^\top Q\hat b + \log\det H_b + \log\det\Sigma` in b-space:
with :math:`s_i = (H_b^{-1})_{c_i c_i}` (selected inverse of the tridiagonal P),
:math:`c_i = w_i h'_i s_i` and :math:`v = H_b^{-1} Z^\top c`,

.. math:: \nabla_\beta F = X^\top(-2wg + c - D\odot Zv), \qquad
          \partial_\tau F = \hat b^\top Q_\tau \hat b + \operatorname{tr}(H_b^{-1}Q_\tau)
          + \partial_\tau\log\det\Sigma - v^\top Q_\tau \hat b,

:math:`Q_\tau = \partial Q/\partial\tau` (tridiagonal, so the trace needs the diagonal and
first off-diagonal of :math:`H_b^{-1}`), as TMB's implicit-function route.

**Forecasting.** Given the fit, :math:`b_{g,T+h} \mid b_{gT} \sim N(\rho^h b_{gT},
\sigma^2(1-\rho^{2h}))`; with :math:`b_{gT} \mid y \approx N(\tilde b_{gT}, V_{gT})` (Laplace
conditional mode and variance), :math:`E[b_{g,T+h}\mid y] = \rho^h\tilde b_{gT}` and
:math:`\operatorname{Var} = \rho^{2h}V_{gT} + \sigma^2(1-\rho^{2h})`, which tends to the
pooled level 0 and the prior :math:`\sigma^2` as h grows. :func:`simulate_ar1` draws whole
future paths per SKU (shared by the SKU's rows in a draw), then the family's noise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from poolcast.errors import FormulaError, InvalidParameterError, ModelSpecificationError
from poolcast.glmm.terms import ReBlock

if TYPE_CHECKING:
    from poolcast.glmm.results import GlmmResults

__all__ = [
    "RHO_PARAM_MAX",
    "Ar1Block",
    "Ar1Fit",
    "Ar1System",
    "ar1_gradient",
    "ar1_latent_moments",
    "project_latent",
    "simulate_ar1",
    "split_ar1_term",
]

#: Bound of the second theta entry atanh(rho): |rho| <= tanh(4.5) = 0.99975 (1 - rho^2 = 4.9e-4).
#: Closer to 1 the tridiagonal precision is too ill-conditioned for its Cholesky factor (seen
#: at tanh(8) on Online Retail quantities: negative pivots from rounding).
RHO_PARAM_MAX = 4.5

_AR1_TERM = re.compile(r"\bar1\s*\(")


@dataclass(frozen=True)
class Ar1Block(ReBlock):
    """The ``ar1(time + 0 | group)`` term (a :class:`ReBlock` whose k is the calendar length T).

    Attributes (besides ReBlock's; ``Z`` is an (n, 1) column of ones, ``theta_slice`` covers
    ``(sigma, atanh(rho))``)
    ----------
    time_var : str
        The time column.
    time_min : int
        Time value of the first calendar step.
    n_times : int
        Calendar length T (max - min + 1 over the data).
    time_index : np.ndarray
        (n,) calendar step of each row, 0..T-1.
    """

    time_var: str = ""
    time_min: int = 0
    n_times: int = 0
    time_index: np.ndarray | None = None

    @property
    def k(self) -> int:
        """Latent values per level: the calendar length T."""
        return self.n_times

    def lambda_block(self, theta: np.ndarray) -> np.ndarray:
        """The T x T factor of σ²R(ρ) (dense; for small T and tests only)."""
        sigma, rho = ar1_parameters(theta[self.theta_slice])
        t = np.arange(self.n_times)
        R = rho ** np.abs(t[:, None] - t[None, :])
        return sigma * np.linalg.cholesky(R)


def ar1_parameters(theta: np.ndarray) -> tuple[float, float]:
    """(sigma, rho) from theta = (sigma, atanh(rho))."""
    return max(float(theta[0]), 0.0), float(
        np.tanh(np.clip(float(theta[1]), -RHO_PARAM_MAX, RHO_PARAM_MAX))
    )


def split_ar1_term(formula: str) -> tuple[str, str, str] | None:
    """Cut an ``ar1(time + 0 | group)`` term out of a formula.

    Returns None when the formula has no ar1 term, else ``(formula with (1 | group) in its
    place, time column, group)``; refuses forms the engine cannot fit.

    >>> split_ar1_term("y ~ x + ar1(month + 0 | sku)")
    ('y ~ x + (1 | sku)', 'month', 'sku')
    """
    if not isinstance(formula, str) or not _AR1_TERM.search(formula):
        return None
    matches = list(_AR1_TERM.finditer(formula))
    if len(matches) > 1:
        raise ModelSpecificationError(
            f"formula {formula!r} has {len(matches)} ar1() terms; the engine fits one latent "
            "AR(1) term per model."
        )
    m = matches[0]
    depth, end = 1, m.end()
    while end < len(formula) and depth:
        depth += formula[end] == "("
        depth -= formula[end] == ")"
        end += 1
    if depth:
        raise FormulaError(f"formula {formula!r}: unbalanced parentheses in the ar1() term.")
    inner = formula[m.end() : end - 1]
    if "|" not in inner or "||" in inner:
        raise FormulaError(
            f"ar1 term {formula[m.start() : end]!r} needs the form ar1(time + 0 | group)."
        )
    expr, group = (s.strip() for s in inner.split("|", 1))
    parts = {p.strip() for p in expr.replace("-1", "+0").split("+")} - {""}
    if "0" not in parts or len(parts) != 2:
        raise ModelSpecificationError(
            f"ar1 term {formula[m.start() : end]!r}: write ar1(time + 0 | group) with one "
            "integer time column and no intercept (as glmmTMB, the latent AR(1) process "
            "replaces the intercept of the group); add a separate (1 | group) term is not "
            "supported either."
        )
    (time_var,) = parts - {"0"}
    if not re.fullmatch(r"[A-Za-z_.][\w.]*", time_var) or not re.fullmatch(
        r"[A-Za-z_.][\w.]*(:[A-Za-z_.][\w.]*)*", group
    ):
        raise ModelSpecificationError(
            f"ar1 term {formula[m.start() : end]!r}: the time and group must be plain column "
            "names (e.g. ar1(month + 0 | sku))."
        )
    rest = formula[: m.start()] + f"(1 | {group})" + formula[end:]
    return rest, time_var, group


def make_ar1_block(block: ReBlock, time_var: str, df: Any) -> Ar1Block:
    """The Ar1Block replacing the placeholder ``(1 | group)`` block built for the term."""
    if time_var not in df.columns:
        raise FormulaError(
            f"ar1 term names time column {time_var!r} that the data do not have; "
            f"available columns: {list(df.columns)}."
        )
    col = df[time_var]
    try:
        t = np.asarray(col, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ModelSpecificationError(
            f"ar1 time column {time_var!r} must be numeric integer steps (e.g. a month index "
            f"year*12 + month); got dtype {col.dtype}."
        ) from exc
    if not np.all(np.isfinite(t)) or np.any(t != np.round(t)):
        bad = np.flatnonzero(~np.isfinite(t) | (t != np.round(t)))
        raise ModelSpecificationError(
            f"ar1 time column {time_var!r} must hold integer steps of a regular calendar "
            f"(one step = one period); row {bad[0]} has {t[bad[0]]!r}. An irregular or "
            "fractional time index is not supported: map it to consecutive integers."
        )
    tmin, tmax = int(t.min()), int(t.max())
    T = tmax - tmin + 1
    if T < 2:
        raise ModelSpecificationError(
            f"ar1 time column {time_var!r} has a single value; an AR(1) process needs at least "
            "two time steps."
        )
    if T > 100_000:
        raise ModelSpecificationError(
            f"ar1 time column {time_var!r} spans {T} steps; map it to consecutive integers."
        )
    return Ar1Block(
        factor=block.factor,
        group=block.group,
        group_vars=block.group_vars,
        term_names=(time_var,),
        spec=block.spec,
        levels=block.levels,
        level_index=block.level_index,
        Z=block.Z,
        theta_slice=slice(0, 2),
        time_var=time_var,
        time_min=tmin,
        n_times=T,
        time_index=(t - tmin).astype(np.int64),
    )


class Ar1Factor:
    """Factor of H for the AR(1) system at given row weights D (arrays time-major, (T, G)).

    Attributes
    ----------
    ld, lsub : np.ndarray
        (T, G) diagonal and sub-diagonal (``lsub[0]`` unused) of the Cholesky factor of
        :math:`P = \\kappa\\,\\mathrm{diag}(d) + M_0`, one tridiagonal P per level.
    d : np.ndarray
        (T, G) summed weights of the rows of each (step, level) cell.
    logdet : float
        :math:`\\log\\det H_u = \\log\\det P - G\\log(1-\\rho^2)`.
    """

    def __init__(self, system: Ar1System, d: np.ndarray) -> None:
        self.sys = system
        self.d = d
        T, G = d.shape
        rho, kappa = system.rho, system.kappa
        p = kappa * d
        p[1:-1] += 1.0 + rho * rho
        p[0] += 1.0
        p[-1] += 1.0
        ld = np.empty((T, G))
        lsub = np.zeros((T, G))
        ld[0] = np.sqrt(p[0])
        for t in range(1, T):
            np.divide(-rho, ld[t - 1], out=lsub[t])
            np.sqrt(p[t] - lsub[t] * lsub[t], out=ld[t])
        if not np.all(np.isfinite(ld)) or not np.all(ld > 0):
            # non-finite row weights (an overflowing mean) or a pivot lost to rounding: the
            # optimiser treats this point as infinite deviance
            raise np.linalg.LinAlgError("AR(1) Laplace system is not positive definite")
        self.ld, self.lsub = ld, lsub
        self.logdet = float(2.0 * np.log(ld).sum() - G * np.log(system.c2))
        self._sel = None

    def solve_p(self, r: np.ndarray) -> np.ndarray:
        """Solve P x = r for r of shape (T, G) or (T, G, m)."""
        ld, lsub = self.ld, self.lsub
        if r.ndim == 3:
            ld, lsub = ld[:, :, None], lsub[:, :, None]
        T = r.shape[0]
        y = np.empty_like(r)
        y[0] = r[0] / ld[0]
        for t in range(1, T):
            y[t] = (r[t] - lsub[t] * y[t - 1]) / ld[t]
        x = y  # in place: x[t] needs y[t] and x[t + 1] only
        x[-1] = y[-1] / ld[-1]
        for t in range(T - 2, -1, -1):
            x[t] = (y[t] - lsub[t + 1] * x[t + 1]) / ld[t]
        return x

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """Solve H_u x = rhs in u-space, flat (q,) or (q, m)."""
        s = self.sys
        r = rhs.reshape(s.T, s.G, *rhs.shape[1:])
        x = s.c2 * s.ltinv(self.solve_p(s.ltinv_t(r)))
        return x.reshape(rhs.shape)

    def selected_inverse(self) -> tuple[np.ndarray, np.ndarray]:
        """Diagonal (T, G) and first off-diagonal (T-1, G) of :math:`P^{-1}` (Takahashi)."""
        if self._sel is None:
            ld, lsub = self.ld, self.lsub
            T, G = ld.shape
            Sd = np.empty((T, G))
            So = np.empty((T - 1, G))
            Sd[-1] = 1.0 / ld[-1] ** 2
            for t in range(T - 2, -1, -1):
                a = lsub[t + 1] / ld[t]
                So[t] = -a * Sd[t + 1]
                Sd[t] = 1.0 / ld[t] ** 2 - a * So[t]
            self._sel = (Sd, So)
        return self._sel

    def cond_var_b(self) -> tuple[np.ndarray, np.ndarray]:
        """Var(b_t | y) (T, G) and Cov(b_t, b_{t+1} | y) (T-1, G): κ times P⁻¹'s band."""
        Sd, So = self.selected_inverse()
        return self.sys.kappa * Sd, self.sys.kappa * So

    def cond_cov(self) -> list[np.ndarray]:
        """Conditional variances of b, (G, T), one entry (see :meth:`cond_var_b`)."""
        return [self.cond_var_b()[0].T]


class Ar1System:
    """Random-effects linear algebra of one ``ar1(time + 0 | group)`` term (same interface as
    :class:`~poolcast.glmm._resystem.BlockSystem`). Flat u is *time-major*: entry
    ``t * G + g`` (the recursions over time then run on contiguous (G,) rows, 4-10x faster
    than along the rows of a level-major array)."""

    single = False
    ar1 = True

    def __init__(self, design: Any) -> None:
        (self.block,) = design.blocks
        self.G, self.T = self.block.n_levels, self.block.n_times
        self.q = self.G * self.T
        self.cell = self.block.time_index * self.G + self.block.level_index
        self.layout = [(0, self.G, self.T)]
        self.set_theta(design.theta_start())

    def set_theta(self, theta: np.ndarray) -> None:
        """Set sigma and rho."""
        r = float(np.clip(theta[1], -RHO_PARAM_MAX, RHO_PARAM_MAX))
        self.sigma = max(float(theta[0]), 0.0)
        self.rho = float(np.tanh(r))
        self.c2 = float(1.0 / np.cosh(r) ** 2)  # 1 - rho^2 without cancellation
        self.c = float(np.sqrt(self.c2))
        self.kappa = self.sigma**2 * self.c2

    # b = Λu = σ L̃ u: b_1 = σ u_1, b_t = ρ b_{t-1} + σ c u_t
    def lam(self, U: np.ndarray) -> np.ndarray:
        """Λ u for U of shape (T, G)."""
        rho, a = self.rho, self.sigma * self.c
        B = np.empty_like(U)
        B[0] = self.sigma * U[0]
        for t in range(1, U.shape[0]):
            np.multiply(B[t - 1], rho, out=B[t])
            B[t] += a * U[t]
        return B

    def lam_t(self, Y: np.ndarray) -> np.ndarray:
        """Λᵀ y for Y (T, G)."""
        rho = self.rho
        Z = np.empty_like(Y)
        Z[-1] = Y[-1]
        for t in range(Y.shape[0] - 2, -1, -1):
            np.multiply(Z[t + 1], rho, out=Z[t])
            Z[t] += Y[t]
        Z[1:] *= self.sigma * self.c
        Z[0] *= self.sigma
        return Z

    def ltinv(self, X: np.ndarray) -> np.ndarray:
        """L̃⁻¹ x along axis 0: y_1 = x_1, y_t = (x_t - ρ x_{t-1}) / c."""
        Y = np.empty_like(X)
        Y[0] = X[0]
        Y[1:] = (X[1:] - self.rho * X[:-1]) / self.c
        return Y

    def ltinv_t(self, X: np.ndarray) -> np.ndarray:
        """L̃⁻ᵀ x along axis 0."""
        Y = np.empty_like(X)
        Y[0] = X[0]
        Y[1:] = X[1:] / self.c
        Y[:-1] -= (self.rho / self.c) * X[1:]
        return Y

    def u_of_b(self, B: np.ndarray) -> np.ndarray | None:
        """Spherical u (flat) of latent values B (T, G); None when sigma = 0."""
        if self.sigma <= 0:
            return None
        return (self.ltinv(B) / self.sigma).ravel()

    def warm_starts(self, u_prev: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, ...]:
        """PIRLS starts at ``theta`` from the previous mode ``u_prev`` (at the current theta):
        the same latent values b in the new coordinates (``u_prev`` itself when sigma = 0),
        and zeros."""
        b_prev = self.b_of_u(u_prev)
        self.set_theta(theta)
        u_b = self.u_of_b(b_prev)
        if u_b is None or not np.all(np.isfinite(u_b)):
            u_b = u_prev
        return (u_b, np.zeros(self.q))

    def b_of_u(self, u: np.ndarray) -> np.ndarray:
        """Latent values b (T, G) of flat spherical u."""
        return self.lam(u.reshape(self.T, self.G))

    def re_eta(self, u: np.ndarray) -> np.ndarray:
        """Z Λ u."""
        return self.b_of_u(u).ravel()[self.cell]

    def cellsum(self, v: np.ndarray) -> np.ndarray:
        """Zᵀ v as (T, G)."""
        return np.bincount(self.cell, weights=v, minlength=self.q).reshape(self.T, self.G)

    def crossprod(self, v: np.ndarray) -> np.ndarray:
        """Λᵀ Zᵀ v, flat (q,) for v (n,), or (q, m) for v (n, m)."""
        if v.ndim == 1:
            return self.lam_t(self.cellsum(v)).ravel()
        return np.column_stack([self.crossprod(v[:, j]) for j in range(v.shape[1])])

    def factor(self, D: np.ndarray) -> Ar1Factor:
        """Factor H = Λᵀ Zᵀ diag(D) Z Λ + I."""
        return Ar1Factor(self, self.cellsum(D))

    # precision pieces in b-space
    def m0_mult(self, B: np.ndarray) -> np.ndarray:
        """M₀ b for B (T, G)."""
        rho = self.rho
        out = B.copy()
        out[1:-1] *= 1.0 + rho * rho
        out[1:] -= rho * B[:-1]
        out[:-1] -= rho * B[1:]
        return out


def ar1_gradient(
    objective: Any, pr: Any, *, nb_theta: float | None = None
) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Exact gradient of the Laplace deviance for the AR(1) term (see the module docstring).

    Returns (grad over theta = (sigma, atanh rho), grad over beta, grad over log nb_theta or
    None).
    """
    d, sysm, fam = objective.design, objective.system, objective.family
    w, X, y = d.weights, d.X, d.y
    fac = pr.factor
    G, T = sysm.G, sysm.T
    sigma, rho, kappa = sysm.sigma, sysm.rho, sysm.kappa
    B = sysm.b_of_u(pr.u)
    Sd, So = fac.selected_inverse()  # band of P^{-1}; H_b^{-1} = kappa P^{-1}
    s = kappa * Sd.ravel()[sysm.cell]
    D = w * pr.h
    c_vec = w * pr.h3 * s
    v = kappa * fac.solve_p(sysm.cellsum(c_vec))  # (T, G), H_b^{-1} Z'c
    wg = w * pr.g
    grad_beta = X.T @ (-2.0 * wg + c_vec - D * v.ravel()[sysm.cell])

    grad_theta = np.zeros(2)
    M0B = sysm.m0_mult(B)
    if sigma > 0:
        # dQ/dsigma = -2Q/sigma
        bQb = float((B * M0B).sum()) / kappa
        vQb = float((v * M0B).sum()) / kappa
        tr_dHinv = float((fac.d * kappa * Sd).sum())
        grad_theta[0] = 2.0 / sigma * (-bQb + tr_dHinv + vQb)
    else:  # pragma: no cover - the optimiser works at sigma > 0 (start sigma = 1)
        grad_theta[0] = 0.0
    # dQ/dr = dM/kappa, dM: end diagonals 2ρ, interior diagonals 4ρ, off-diagonal -(1+ρ²)
    if kappa > 0:
        dd = np.full((T, 1), 4.0 * rho)
        dd[0] = dd[-1] = 2.0 * rho
        off = -(1.0 + rho * rho)

        def dm_mult(Bm: np.ndarray) -> np.ndarray:
            out = Bm * dd
            out[1:] += off * Bm[:-1]
            out[:-1] += off * Bm[1:]
            return out

        dMB = dm_mult(B)
        quad = float((B * dMB).sum()) / kappa
        tr = float((Sd * dd).sum() + 2.0 * off * So.sum())
        impl = float((v * dMB).sum()) / kappa
        grad_theta[1] = quad + tr - 2.0 * rho * (T - 1) * G - impl
    grad_psi = None
    if nb_theta is not None and objective.disp_X is not None:
        from poolcast.glmm.laplace import dispersion_gradient

        grad_psi = dispersion_gradient(objective, pr, nb_theta, v.ravel()[sysm.cell], s)[0]
    elif nb_theta is not None:
        l_psi, g_psi, h_psi = fam.derivs_log_theta(pr.eta, y, nb_theta)
        rho_psi = sysm.cellsum(w * g_psi)
        grad_psi = float(
            -2.0 * np.dot(w, l_psi) + float((v * rho_psi).sum()) + np.dot(w * h_psi, s)
        )
    return grad_theta, grad_beta, grad_psi


@dataclass(frozen=True)
class Ar1Fit:
    """The fitted latent AR(1) term of a GLMM.

    Attributes
    ----------
    factor, group, time_var : str
        Term names.
    levels : tuple[str, ...]
        Group levels (G).
    time_min, n_times : int
        Calendar: time values ``time_min .. time_min + n_times - 1``.
    sigma, rho : float
        Standard deviation and lag-1 correlation of the latent process (glmmTMB ``VarCorr``).
    modes : np.ndarray
        (G, T) conditional modes of the latent values.
    cond_var : np.ndarray
        (G, T) their conditional (Laplace) variances given y.
    cond_cov_lag1 : np.ndarray
        (G, T-1) conditional covariances of neighbouring steps.
    """

    factor: str
    group: str
    time_var: str
    levels: tuple[str, ...]
    time_min: int
    n_times: int
    sigma: float
    rho: float
    modes: np.ndarray
    cond_var: np.ndarray
    cond_cov_lag1: np.ndarray

    @property
    def time_max(self) -> int:
        """Last calendar time value."""
        return self.time_min + self.n_times - 1


def make_ar1_fit(design: Any, objective: Any, pr: Any, theta: np.ndarray) -> Ar1Fit:
    """The Ar1Fit at the optimum (``pr`` is the PIRLS result there)."""
    (blk,) = design.blocks
    sysm = objective.system
    sysm.set_theta(theta)
    cv, cc = pr.factor.cond_var_b()
    return Ar1Fit(
        factor=blk.factor,
        group=blk.group,
        time_var=blk.time_var,
        levels=blk.levels,
        time_min=blk.time_min,
        n_times=blk.n_times,
        sigma=sysm.sigma,
        rho=sysm.rho,
        modes=np.ascontiguousarray(sysm.b_of_u(pr.u).T),
        cond_var=np.ascontiguousarray(np.maximum(cv, 0.0).T),
        cond_cov_lag1=np.ascontiguousarray(cc.T),
    )


def ar1_results_tables(fit: Ar1Fit) -> dict[str, Any]:
    """sd / corr / cov_re / ranef / b_modes / b_cond_cov entries of the results."""
    t = np.arange(fit.n_times)
    cov = fit.sigma**2 * fit.rho ** np.abs(t[:, None] - t[None, :])
    G, T = fit.modes.shape
    times = (fit.time_min + t).astype(str)
    ranef = pl.DataFrame(
        {
            "level": np.repeat(np.array(fit.levels, dtype=object), T).astype(str),
            "term": np.tile(
                np.array([f"{fit.time_var}{x}" for x in times], dtype=object), G
            ).astype(str),
            "mode": fit.modes.ravel(),
            "cond_sd": np.sqrt(fit.cond_var).ravel(),
        }
    )
    return {
        "sd": {fit.time_var: fit.sigma},
        "corr": [fit.rho],
        "cov_re": cov,
        "ranef": ranef,
        "b_modes": fit.modes,
        "b_cond_cov": fit.cond_var,
    }


def newdata_steps(block: Ar1Block, df: Any) -> np.ndarray:
    """Calendar step of each row of new data (pandas), refusing non-integer or earlier times."""
    if block.time_var not in df.columns:
        raise InvalidParameterError(
            f"newdata lacks the ar1 time column {block.time_var!r}; pass the time of each row."
        )
    t = np.asarray(df[block.time_var], dtype=float)
    if not np.all(np.isfinite(t)) or np.any(t != np.round(t)):
        raise InvalidParameterError(
            f"ar1 time column {block.time_var!r} of newdata must hold integer steps."
        )
    step = t.astype(np.int64) - block.time_min
    if np.any(step < 0):
        raise InvalidParameterError(
            f"newdata has {block.time_var} = {int(t[step < 0].min())} before the fitted calendar "
            f"(first step {block.time_min}); the AR(1) term forecasts forward only."
        )
    return step


def ar1_eta_conditional(fit: Ar1Fit, idx: np.ndarray, step: np.ndarray) -> np.ndarray:
    """The latent part of new rows at the conditional modes, projected ahead:
    :math:`\\tilde b_{g,t}` inside the calendar, :math:`\\rho^h\\tilde b_{gT}` h steps beyond it,
    0 for a level the fit never saw (``idx`` -1); ``step`` is the calendar step (>= 0)."""
    out = np.zeros(idx.shape[0])
    seen = idx >= 0
    last = fit.n_times - 1
    inside = seen & (step <= last)
    out[inside] = fit.modes[idx[inside], step[inside]]
    ahead = seen & (step > last)
    out[ahead] = fit.rho ** (step[ahead] - last) * fit.modes[idx[ahead], last]
    return out


def ar1_latent_moments(
    fit: Ar1Fit, idx: np.ndarray, step: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of each new row's latent value given the data.

    Inside the calendar the conditional mode and variance of the cell; h steps beyond its end
    :math:`\\rho^h\\tilde b_{gT}` and :math:`\\rho^{2h}V_{gT} + \\sigma^2(1-\\rho^{2h})`; a
    level the fit never saw (``idx`` -1) the stationary N(0, σ²).
    """
    n = idx.shape[0]
    mean = np.zeros(n)
    var = np.full(n, fit.sigma**2)
    seen = idx >= 0
    last = fit.n_times - 1
    inside = seen & (step <= last)
    mean[inside] = fit.modes[idx[inside], step[inside]]
    var[inside] = fit.cond_var[idx[inside], step[inside]]
    ahead = seen & (step > last)
    decay = fit.rho ** (step[ahead] - last)
    mean[ahead] = decay * fit.modes[idx[ahead], last]
    var[ahead] = decay**2 * fit.cond_var[idx[ahead], last] + fit.sigma**2 * (1.0 - decay**2)
    return mean, var


def project_latent(
    fit: Ar1Fit, levels: np.ndarray, horizons: int, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Draws of the latent values 1..``horizons`` steps after the calendar's end.

    Parameters
    ----------
    fit : Ar1Fit
    levels : np.ndarray
        Level indices (into ``fit.levels``) to project; -1 for a level not in the fit (its path
        starts from the stationary N(0, σ²)).
    horizons : int
        Steps ahead H.
    n : int
        Draws.
    rng : numpy.random.Generator

    Returns
    -------
    np.ndarray
        (len(levels), H, n): :math:`b_T \\sim N(\\tilde b_T, V_T)` (or N(0, σ²)), then
        :math:`b_{T+h} = \\rho b_{T+h-1} + \\sigma\\sqrt{1-\\rho^2}\\,\\varepsilon`.
    """
    levels = np.asarray(levels, dtype=np.int64)
    last = fit.n_times - 1
    seen = levels >= 0
    mean = np.zeros(levels.shape[0])
    var = np.full(levels.shape[0], fit.sigma**2)
    mean[seen] = fit.modes[levels[seen], last]
    var[seen] = fit.cond_var[levels[seen], last]
    state = mean[:, None] + np.sqrt(var)[:, None] * rng.standard_normal((levels.shape[0], n))
    innov_sd = fit.sigma * np.sqrt(max(1.0 - fit.rho**2, 0.0))
    out = np.empty((levels.shape[0], horizons, n))
    for h in range(horizons):
        state = fit.rho * state + innov_sd * rng.standard_normal(state.shape)
        out[:, h] = state
    return out


def simulate_ar1(
    results: GlmmResults,
    newdata: Any,
    n: int,
    *,
    rng: np.random.Generator,
    include_fixef_uncertainty: bool = False,
    offset: Any = None,
    trials: Any = None,
) -> np.ndarray:
    """Predictive draws (len(newdata), n) of a model with a latent AR(1) term.

    Rows after the calendar's end share their SKU's projected path within a draw
    (:func:`project_latent`); rows inside the calendar draw their cell from
    :math:`N(\\tilde b_{gt}, V_{gt})` (one draw per cell, shared by the cell's rows; cells drawn
    independently of each other); a SKU the fit never saw follows a stationary path from
    N(0, σ²) started at the calendar's end. Then the family's noise, as
    :func:`poolcast.glmm.simulate.simulate`.
    """
    from poolcast.glmm.predict import compute_eta
    from poolcast.glmm.simulate import _draw_gaussian, _draw_response, compute_sqrt_psd
    from poolcast.glmm.terms import _group_keys, _to_pandas, design_for_newdata

    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise InvalidParameterError(f"n={n!r} must be a positive integer (the number of draws).")
    if not isinstance(rng, np.random.Generator):
        raise InvalidParameterError(
            f"rng={rng!r} must be a numpy.random.Generator, e.g. np.random.default_rng(seed)."
        )
    fit = results.ar1
    new = design_for_newdata(results.design, newdata, offset=offset, trials=trials)
    n_rows = np.asarray(new.X).shape[0]
    if include_fixef_uncertainty:
        beta_draws = _draw_gaussian(
            np.asarray(results.beta, dtype=float)[None, :],
            compute_sqrt_psd(np.asarray(results.vcov, dtype=float))[None, :, :],
            n,
            rng,
        )[0]
        eta = np.asarray(new.X, dtype=float) @ beta_draws.T
        eta = eta + np.asarray(new.offset, dtype=float)[:, None]
    else:
        eta = np.repeat(compute_eta(results, new, level="population")[:, None], n, axis=1)

    (nb,) = new.blocks
    idx, step = nb.level_index, nb.time_index
    keys = _group_keys(_to_pandas(newdata, "newdata"), results.design.blocks[0].group_vars)
    keys = np.asarray(keys, dtype=object)
    last = fit.n_times - 1
    inside = (idx >= 0) & (step <= last)
    if inside.any():
        cells = idx[inside] * fit.n_times + step[inside]
        uc, inv = np.unique(cells, return_inverse=True)
        m = fit.modes.ravel()[uc]
        sd = np.sqrt(fit.cond_var.ravel()[uc])
        draws = m[:, None] + sd[:, None] * rng.standard_normal((uc.size, n))
        eta[inside] += draws[inv]
    outside = ~inside
    if outside.any():
        # one path per SKU key (seen or new); unseen SKUs inside the calendar also start at T
        sk, sk_inv = np.unique(keys[outside], return_inverse=True)
        lev = np.full(sk.size, -1, dtype=np.int64)
        lev[sk_inv] = idx[outside]
        h = np.maximum(step[outside] - last, 1)
        paths = project_latent(fit, lev, int(h.max()), n, rng)
        eta[outside] += paths[sk_inv, h - 1]
    mu = np.asarray(results.family.linkinv(eta), dtype=float)
    return _draw_response(results, mu, new.trials, n_rows, rng, size=results.nb_size(new))
