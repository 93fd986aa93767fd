"""Natural cubic spline basis against independent references (scipy's natural interpolating
spline, the truncated-power closed form of ESL sec. 5.2.1)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import CubicSpline

from poolcast.errors import InvalidParameterError
from poolcast.splines import make_spline_knots, natural_spline_basis

KNOTS = (0.0, 1.0, 2.5, 4.0, 6.0)


def _with_intercept(basis: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones(basis.shape[0]), basis])


def _lstsq_residual(design: np.ndarray, target: np.ndarray) -> float:
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    return float(np.abs(design @ coef - target).max())


def _esl_natural_basis(x: np.ndarray, knots: tuple[float, ...]) -> np.ndarray:
    """Truncated-power natural spline basis, ESL eq. (5.4)-(5.5), without the constant."""
    k = np.asarray(knots)
    K = k.size

    def d(j: int) -> np.ndarray:
        return (np.maximum(x - k[j], 0) ** 3 - np.maximum(x - k[K - 1], 0) ** 3) / (k[K - 1] - k[j])

    cols = [x] + [d(j) - d(K - 2) for j in range(K - 2)]
    return np.column_stack(cols)


def test_shape_and_full_rank() -> None:
    x = np.linspace(-1.0, 7.0, 200)
    basis = natural_spline_basis(x, KNOTS)
    assert basis.shape == (200, len(KNOTS) - 1)
    assert np.linalg.matrix_rank(_with_intercept(basis)) == len(KNOTS)


def test_reproduces_scipy_natural_interpolating_spline_exactly_in_the_span() -> None:
    rng = np.random.default_rng(1)
    x = np.linspace(KNOTS[0], KNOTS[-1], 301)
    design = _with_intercept(natural_spline_basis(x, KNOTS))
    for _ in range(5):
        reference = CubicSpline(np.array(KNOTS), rng.normal(size=len(KNOTS)), bc_type="natural")
        assert _lstsq_residual(design, reference(x)) < 1e-10


def test_linear_beyond_the_boundary_knots_like_a_natural_spline() -> None:
    # The natural spline continues linearly with the boundary value and slope.
    rng = np.random.default_rng(2)
    y = rng.normal(size=len(KNOTS))
    reference = CubicSpline(np.array(KNOTS), y, bc_type="natural")
    a, b = KNOTS[0], KNOTS[-1]
    inside = np.linspace(a, b, 101)
    outside_low = np.linspace(a - 3.0, a - 0.01, 40)
    outside_high = np.linspace(b + 0.01, b + 3.0, 40)
    coef, *_ = np.linalg.lstsq(
        _with_intercept(natural_spline_basis(inside, KNOTS)), reference(inside), rcond=None
    )
    low = _with_intercept(natural_spline_basis(outside_low, KNOTS)) @ coef
    high = _with_intercept(natural_spline_basis(outside_high, KNOTS)) @ coef
    np.testing.assert_allclose(low, y[0] + (outside_low - a) * reference(a, 1), atol=1e-9)
    np.testing.assert_allclose(high, y[-1] + (outside_high - b) * reference(b, 1), atol=1e-9)


def _second_difference(x0: float, step: float) -> np.ndarray:
    basis = natural_spline_basis(np.array([x0 - step, x0, x0 + step]), KNOTS)
    return (basis[0] - 2 * basis[1] + basis[2]) / step**2


def test_second_derivative_zero_at_and_beyond_boundary() -> None:
    a, b = KNOTS[0], KNOTS[-1]
    for x0 in (a - 2.0, a - 0.5, b + 0.5, b + 2.0):  # linear region: exactly zero
        np.testing.assert_allclose(_second_difference(x0, 1e-2), 0.0, atol=1e-6)
    # at the boundary knots themselves, from both sides (continuous second derivative = 0)
    for x0 in (a, b):
        assert np.abs(_second_difference(x0, 1e-4)).max() < 1e-2
    # an interior point does have curvature (the test can fail)
    assert np.abs(_second_difference(2.0, 1e-3)).max() > 1e-2


def test_same_space_as_truncated_power_closed_form_everywhere() -> None:
    x = np.linspace(-3.0, 9.0, 400)  # includes both extrapolation regions
    ours = _with_intercept(natural_spline_basis(x, KNOTS))
    esl = _with_intercept(_esl_natural_basis(x, KNOTS))
    for j in range(esl.shape[1]):
        assert _lstsq_residual(ours, esl[:, j]) < 1e-8
    for j in range(ours.shape[1]):
        assert _lstsq_residual(esl, ours[:, j]) < 1e-8


def test_two_knots_give_a_straight_line() -> None:
    x = np.linspace(-2.0, 5.0, 50)
    basis = natural_spline_basis(x, (0.0, 3.0))
    assert basis.shape == (50, 1)
    assert _lstsq_residual(_with_intercept(basis), x) < 1e-12


def test_nan_rows_stay_nan() -> None:
    basis = natural_spline_basis(np.array([1.0, np.nan, 2.0]), KNOTS)
    assert np.isnan(basis[1]).all()
    assert np.isfinite(basis[[0, 2]]).all()


@pytest.mark.parametrize("knots", [(1.0,), (0.0, 0.0, 1.0), (2.0, 1.0), (0.0, np.inf)])
def test_bad_knots_raise(knots: tuple[float, ...]) -> None:
    with pytest.raises(InvalidParameterError, match="knots"):
        natural_spline_basis(np.array([0.5]), knots)


def test_knots_are_quantiles_and_ties_are_removed() -> None:
    x = np.arange(101.0)
    # Harrell's five-knot levels 0.05, 0.275, 0.5, 0.725, 0.95 by default
    assert make_spline_knots(x, df=4) == pytest.approx((5.0, 27.5, 50.0, 72.5, 95.0))
    assert make_spline_knots(x, df=4, boundary_quantiles=(0.0, 1.0)) == (
        0.0,
        25.0,
        50.0,
        75.0,
        100.0,
    )
    ties = np.array([1.0, 1.0, 1.0, 2.0, np.nan])
    assert make_spline_knots(ties, df=4, boundary_quantiles=(0.0, 1.0)) == (1.0, 1.25, 2.0)
    assert make_spline_knots(np.array([3.0, 3.0]), df=4) == ()
    assert make_spline_knots(np.array([np.nan]), df=2) == ()
    with pytest.raises(InvalidParameterError, match="df"):
        make_spline_knots(x, df=0)
    with pytest.raises(InvalidParameterError, match="boundary_quantiles"):
        make_spline_knots(x, df=3, boundary_quantiles=(0.9, 0.1))
