"""Natural cubic spline basis (the basis of R's ``splines::ns``), in numpy and scipy.

A natural cubic spline with knots :math:`\\xi_1 < \\dots < \\xi_K` is a cubic spline that is
linear beyond the boundary knots :math:`\\xi_1, \\xi_K` (its second derivative is zero there).
The space of such functions has dimension :math:`K`; without the intercept it has
:math:`K - 1` basis functions, which is what :func:`natural_spline_basis` returns.

The knots are chosen once, from training data (:func:`make_spline_knots`), and then frozen
so that the same columns can be rebuilt for new data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.interpolate import BSpline

from poolcast.errors import InvalidParameterError

__all__ = ["make_spline_knots", "natural_spline_basis"]


def make_spline_knots(
    x: np.ndarray, *, df: int, boundary_quantiles: tuple[float, float] = (0.05, 0.95)
) -> tuple[float, ...]:
    """Knots of a natural spline with ``df`` basis columns: quantiles of ``x``.

    Parameters
    ----------
    x : ndarray
        Training values; NaNs are ignored.
    df : int
        Degrees of freedom (number of basis columns, no intercept), >= 1.
    boundary_quantiles : (float, float)
        Quantile levels of the two boundary knots; ``(0, 1)`` gives the range of ``x``
        (R's ``ns`` default).

    Returns
    -------
    tuple of float
        ``df + 1`` knots at equally spaced quantile levels from ``boundary_quantiles[0]`` to
        ``boundary_quantiles[1]``, with ties removed, so the tuple can be shorter when ``x``
        has few distinct values. Empty when fewer than two distinct knots remain (no spline
        can be fitted).

    Notes
    -----
    The default boundary levels (0.05, 0.95) follow Harrell (*Regression Modeling
    Strategies*, 2nd ed., sec. 2.4.6, table 2.3): with ``df = 4`` the levels are
    0.05, 0.275, 0.5, 0.725, 0.95, his recommendation for five knots. Boundary knots inside
    the range keep a few extreme values (a store closed for months: zero customers) from
    stretching the outer cubic pieces; beyond the boundary knots the basis is linear.

    Examples
    --------
    >>> [round(k, 6) for k in make_spline_knots(np.arange(101.0), df=4)]
    [5.0, 27.5, 50.0, 72.5, 95.0]
    >>> make_spline_knots(np.arange(9.0), df=4, boundary_quantiles=(0.0, 1.0))
    (0.0, 2.0, 4.0, 6.0, 8.0)
    """
    if not isinstance(df, int | np.integer) or df < 1:
        raise InvalidParameterError(f"df={df!r}: the spline needs an integer df >= 1")
    lo, hi = (float(q) for q in boundary_quantiles)
    if not 0.0 <= lo < hi <= 1.0:
        raise InvalidParameterError(
            f"boundary_quantiles={boundary_quantiles!r}: need 0 <= low < high <= 1"
        )
    values = np.asarray(x, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return ()
    knots = np.unique(np.quantile(values, np.linspace(lo, hi, df + 1)))
    if knots.size < 2:
        return ()
    return tuple(float(k) for k in knots)


def natural_spline_basis(x: np.ndarray, knots: Sequence[float]) -> np.ndarray:
    """Evaluate the natural cubic spline basis (no intercept) at ``x``.

    Parameters
    ----------
    x : ndarray, shape (n,)
        Points; NaN gives a row of NaN.
    knots : sequence of float
        Strictly increasing knots; the first and last are the boundary knots.

    Returns
    -------
    ndarray, shape (n, len(knots) - 1)

    Notes
    -----
    Construction of R's ``ns(x, knots=interior, Boundary.knots=c(a, b))``: take the cubic
    B-spline basis :math:`B(x)` on the knot vector :math:`(a,a,a,a,\\xi_2,\\dots,\\xi_{K-1},
    b,b,b,b)`, drop its first column (the intercept), and project onto the null space of
    the boundary constraints :math:`C = [B''(a); B''(b)]`: with the complete QR
    factorisation :math:`C^\\top = QR`, the basis is :math:`N(x) = B(x)\\,Q_{[:,2:]}`, so
    :math:`N''(a) = N''(b) = 0`. Outside :math:`[a, b]` the basis is continued linearly,
    :math:`N(x) = N(a) + (x - a) N'(a)` for :math:`x < a` (likewise above :math:`b`), which
    is exactly the natural spline's behaviour. Together with a constant, the columns span
    every natural cubic spline with these knots (Hastie, Tibshirani & Friedman, *The
    Elements of Statistical Learning*, 2nd ed., sec. 5.2.1). The B-spline form is better
    conditioned than the truncated-power form.
    """
    k = np.asarray(knots, dtype=float)
    if k.ndim != 1 or k.size < 2 or not np.all(np.isfinite(k)) or np.any(np.diff(k) <= 0):
        raise InvalidParameterError(
            f"knots={tuple(knots)!r}: need at least two strictly increasing finite knots"
        )
    a, b = float(k[0]), float(k[-1])
    t = np.concatenate([[a] * 4, k[1:-1], [b] * 4])
    n_bspline = t.size - 4
    spline = BSpline(t, np.eye(n_bspline), 3, extrapolate=True)
    slope = spline.derivative(1)
    curvature = spline.derivative(2)
    constraints = curvature(np.array([a, b]))[:, 1:]  # (2, n_bspline - 1)
    q, _ = np.linalg.qr(constraints.T, mode="complete")
    projection = q[:, 2:]

    xs = np.asarray(x, dtype=float).ravel()
    out = np.full((xs.size, k.size - 1), np.nan)
    finite = np.isfinite(xs)
    xf = xs[finite]
    inside = np.clip(xf, a, b)
    basis = spline(inside)[:, 1:]
    low, high = xf < a, xf > b
    if low.any() or high.any():
        ends = np.array([a, b])
        end_value = spline(ends)[:, 1:]
        end_slope = slope(ends)[:, 1:]
        basis[low] = end_value[0] + (xf[low] - a)[:, None] * end_slope[0]
        basis[high] = end_value[1] + (xf[high] - b)[:, None] * end_slope[1]
    out[finite] = basis @ projection
    return out
