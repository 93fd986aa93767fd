r"""Response families: Poisson (log), NB2 (log), Gamma (log) and binomial (logit).

Every family works on the linear predictor :math:`\eta` and gives, per observation, the
log-likelihood :math:`\ell_i(\eta_i)` with all constants, its first derivative
:math:`g_i = \partial\ell_i/\partial\eta_i`, the negative second derivative
:math:`h_i = -\partial^2\ell_i/\partial\eta_i^2` (the Newton weight of PIRLS) and
:math:`h'_i = \partial h_i/\partial\eta_i` (used by the exact gradient of the Laplace deviance).

* Poisson, log link: :math:`\ell = y\eta - e^\eta - \log y!`, :math:`g = y-\mu`, :math:`h = h' = \mu`.
* Binomial, logit link, :math:`m` trials: :math:`\ell = y\eta - m\log(1+e^\eta) + \log\binom{m}{y}`,
  :math:`g = y - m p`, :math:`h = m p(1-p)`, :math:`h' = m p(1-p)(1-2p)`.
* NB2, log link, size :math:`\theta` (glmmTMB ``nbinom2``), :math:`\operatorname{Var} = \mu + \mu^2/\theta`:
  :math:`\ell = \log\Gamma(y+\theta) - \log\Gamma(\theta) - \log y! + \theta\log\theta + y\log\mu
  - (y+\theta)\log(\mu+\theta)`, :math:`g = \theta(y-\mu)/(\mu+\theta)`,
  :math:`h = \theta(y+\theta)\mu/(\mu+\theta)^2` (the observed, not the Fisher, weight, as TMB's
  Laplace uses the exact Hessian), :math:`h' = \theta(y+\theta)\mu(\theta-\mu)/(\mu+\theta)^3`.
* Gamma, log link, shape :math:`\nu` (held in the dispersion slot ``nb_theta``;
  :math:`\operatorname{Var} = \mu^2/\nu`; glmmTMB's ``Gamma`` reports
  :math:`\sigma = 1/\sqrt{\nu}`, the coefficient of variation):
  :math:`\ell = \nu\log\nu - \log\Gamma(\nu) + (\nu-1)\log y - \nu\eta - \nu y e^{-\eta}`,
  :math:`g = \nu(y/\mu - 1)`, :math:`h = \nu y/\mu` (observed weight),
  :math:`h' = -\nu y/\mu`.
* Tweedie, log link, power :math:`1 < p < 2` (fixed per family object; :func:`poolcast.glmm.fit`
  profiles it), precision :math:`\tau = 1/\phi` in the dispersion slot,
  :math:`\operatorname{Var} = \phi\mu^p` (glmmTMB ``tweedie``): a compound Poisson-Gamma with an
  exact zero mass. :math:`\ell = \tau\,(y\mu^{1-p}/(1-p) - \mu^{2-p}/(2-p)) + \log a(y,\phi,p)`
  with :math:`a = 0` for :math:`y = 0` and, for :math:`y > 0`, Dunn & Smyth's (2005) series
  :math:`a = y^{-1}\sum_{j\ge1} W_j`,
  :math:`W_j = y^{-j\alpha}(p-1)^{j\alpha} / (\phi^{j(1-\alpha)}(2-p)^j\, j!\,\Gamma(-j\alpha))`,
  :math:`\alpha = (2-p)/(1-p)`, summed in log space around its largest term
  :math:`j^* = y^{2-p}/(\phi(2-p))`. :math:`g = \tau(y\mu^{1-p} - \mu^{2-p})`,
  :math:`h = \tau((p-1)y\mu^{1-p} + (2-p)\mu^{2-p})`,
  :math:`h' = \tau(-(p-1)^2 y\mu^{1-p} + (2-p)^2\mu^{2-p})`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, expit, gammaln

from poolcast.errors import InvalidParameterError

__all__ = [
    "FAMILIES",
    "Binomial",
    "Family",
    "Gamma",
    "NegBin2",
    "Poisson",
    "TruncatedNegBin2",
    "Tweedie",
    "get_family",
    "tweedie_log_series",
]

_ETA_MAX = 700.0


@dataclass(frozen=True)
class Family:
    """Base class: a response family with a fixed link.

    Attributes
    ----------
    name : str
        "poisson", "negbin" or "binomial".
    link : str
        Link name ("log" or "logit").
    has_dispersion : bool
        True when the family carries an estimated shape (NB2 size).
    """

    name: str = ""
    link: str = ""
    has_dispersion: bool = False
    #: What the dispersion slot (``nb_theta``) holds, for summaries.
    dispersion_label: str = ""

    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        """Mean (per trial for binomial) from the linear predictor."""
        raise NotImplementedError

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        """Linear predictor from the mean."""
        raise NotImplementedError

    def loglik(self, eta, y, trials, nb_theta=None) -> np.ndarray:
        """Per-observation log-likelihood with all constants."""
        return self.loglik_kernel(eta, y, trials, nb_theta) + self.loglik_const(y, trials)

    def loglik_kernel(self, eta, y, trials, nb_theta=None) -> np.ndarray:
        """Log-likelihood without the terms that depend on the data only."""
        return self.loglik_eta(eta, y, trials, nb_theta) + self.loglik_shape(y, nb_theta)

    def loglik_eta(self, eta, y, trials, nb_theta=None) -> np.ndarray:
        """The terms of the log-likelihood that depend on eta (all of the kernel but the shape part)."""
        raise NotImplementedError

    def loglik_shape(self, y, nb_theta=None) -> np.ndarray | float:
        """Terms that depend on the shape (NB2 size) and the data but not on eta; 0 otherwise."""
        return 0.0

    def loglik_const(self, y, trials) -> np.ndarray:
        """The data-only terms of the log-likelihood (computed once per fit)."""
        raise NotImplementedError

    def derivs(self, eta, y, trials, nb_theta=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (g, h, h') as defined in the module docstring."""
        raise NotImplementedError

    def start_eta(self, y, trials) -> np.ndarray:
        """A safe starting linear predictor from the data (like R's ``mustart``)."""
        raise NotImplementedError

    def start_dispersion(self, y, mu, weights) -> float:
        """Moment start of the dispersion slot from a GLM fit's means (families with one)."""
        raise NotImplementedError

    def evaluate(self, eta, y, trials, nb_theta=None):
        """(loglik_eta, g, h, h') in one pass (the mean is computed once)."""
        return (self.loglik_eta(eta, y, trials, nb_theta), *self.derivs(eta, y, trials, nb_theta))


@dataclass(frozen=True)
class Poisson(Family):
    """Poisson with log link."""

    name: str = "poisson"
    link: str = "log"

    def linkinv(self, eta):
        return np.exp(np.minimum(eta, _ETA_MAX))

    def linkfun(self, mu):
        return np.log(mu)

    def loglik_eta(self, eta, y, trials, nb_theta=None):
        return y * eta - self.linkinv(eta)

    def loglik_const(self, y, trials):
        return -gammaln(y + 1.0)

    def derivs(self, eta, y, trials, nb_theta=None):
        mu = self.linkinv(eta)
        return y - mu, mu, mu

    def start_eta(self, y, trials):
        return np.log(y + 0.1)

    def evaluate(self, eta, y, trials, nb_theta=None):
        mu = self.linkinv(eta)
        return y * eta - mu, y - mu, mu, mu


def _size(nb_theta):
    """The NB2 size as a float (one for all rows), or as an (n,) array (one per row, from a
    dispersion formula); the arithmetic below broadcasts either way."""
    if np.ndim(nb_theta) == 0:
        return float(nb_theta)
    return np.asarray(nb_theta, dtype=float)


@dataclass(frozen=True)
class NegBin2(Poisson):
    """Negative binomial type 2 (size ``nb_theta``) with log link."""

    name: str = "negbin"
    link: str = "log"
    has_dispersion: bool = True
    dispersion_label: str = "Negative binomial size (theta)"

    def start_dispersion(self, y, mu, weights) -> float:
        r""":math:`1/\hat\alpha` with :math:`\hat\alpha = \sum w((y-\mu)^2-\mu)/\sum w\mu^2`."""
        inv = np.sum(weights * ((y - mu) ** 2 - mu)) / np.sum(weights * mu**2)
        return float(np.clip(1.0 / inv, 0.05, 1e4)) if inv > 0 else 1e4

    def loglik_eta(self, eta, y, trials, nb_theta=None):
        th = _size(nb_theta)
        if np.ndim(th) > 0:  # per-row sizes: the split without th * log(th) (see evaluate)
            return self.evaluate(eta, y, trials, th)[0]
        # log(mu + th) = eta + log1p(th / mu), stable for large mu
        return y * eta - (y + th) * np.logaddexp(eta, np.log(th))

    def loglik_shape(self, y, nb_theta=None):
        th = _size(nb_theta)
        if np.ndim(th) > 0:
            return gammaln(y + th) - gammaln(th)
        return gammaln(y + th) - gammaln(th) + th * np.log(th)

    def derivs(self, eta, y, trials, nb_theta=None):
        # written with p = mu/s and q = th/s so that no product overflows for a huge mean
        # (s**2 and th*(y+th)*mu overflowed to inf/inf = nan near the eta cap)
        th = _size(nb_theta)
        mu = self.linkinv(eta)
        inv_s = 1.0 / (mu + th)
        p, q = mu * inv_s, th * inv_s
        g = th * (y * inv_s - p)
        h = (y + th) * p * q
        h3 = h * (q - p)
        return g, h, h3

    def evaluate(self, eta, y, trials, nb_theta=None):
        th = _size(nb_theta)
        mu = self.linkinv(eta)
        s = mu + th
        # log(mu + th) = log th + log1p(mu / th): exact for mu << th (a large size; log(s)
        # loses mu there and the (y + th) factor amplifies the rounding), and from eta, not
        # the capped mu, beyond the cap (else y*eta would win)
        log_th = np.log(th)
        log_s = log_th + np.log1p(mu / th)
        beyond = (eta > _ETA_MAX) | ~np.isfinite(log_s)
        if beyond.any():
            log_th_b = log_th if np.ndim(log_th) == 0 else log_th[beyond]
            log_s[beyond] = np.logaddexp(eta[beyond], log_th_b)
        if np.ndim(th) > 0:
            # per-row sizes (a dispersion formula): th * log(th) is left out of both this
            # and loglik_shape, since (y + th) log s = y log s + th log th + th log1p(mu / th);
            # at a class size near its 1e8 bound the two th * log(th) ~ 2e9 terms cancelled
            # to ~1e-7 per row, enough noise to stall PIRLS's step halving
            excess = th * np.log1p(mu / th)
            if beyond.any():
                excess[beyond] = th[beyond] * (log_s[beyond] - log_th[beyond])
            ll = y * (eta - log_s) - excess
        else:
            ll = y * eta - (y + th) * log_s
        inv_s = 1.0 / s
        p, q = mu * inv_s, th * inv_s
        g = th * (y * inv_s - p)
        h = (y + th) * p * q
        return ll, g, h, h * (q - p)

    def derivs_log_theta(self, eta, y, nb_theta):
        r"""Derivatives with respect to :math:`\psi = \log\theta` at fixed :math:`\eta`.

        Returns :math:`(\partial\ell/\partial\psi, \partial g/\partial\psi, \partial h/\partial\psi)`.
        """
        th = _size(nb_theta)
        mu = self.linkinv(eta)
        s = mu + th
        if np.ndim(th) > 0:  # the same, with log(th / s) and 1 - (y + th) / s written stably
            dl = digamma(y + th) - digamma(th) - np.log1p(mu / th) + (mu - y) / s
        else:
            dl = digamma(y + th) - digamma(th) + np.log(th) + 1.0 - np.log(s) - (y + th) / s
        p = mu / s
        dg = p * (y / s - p)
        dh = p / s * (y * p + 2.0 * th * p - th * y / s)
        return th * dl, th * dg, th * dh


@dataclass(frozen=True)
class TruncatedNegBin2(NegBin2):
    r"""Zero-truncated NB2 with log link (glmmTMB ``truncated_nbinom2``): the count part of a
    hurdle model, fitted to the positive responses only.

    With :math:`s = \mu + \theta`, :math:`q = P_{NB}(0) = (\theta/s)^\theta`,
    :math:`r = q/(1-q)`, :math:`A = \theta\mu/s`, :math:`B = \theta^2\mu/s^2`:
    :math:`\ell_T = \ell_{NB} - \log(1-q)`, :math:`g_T = g_{NB} - rA`,
    :math:`h_T = h_{NB} - r(1+r)A^2 + rB`,
    :math:`h'_T = h'_{NB} + (1+2r)r(1+r)A^3 - 3r(1+r)AB + r\theta^2\mu(\theta-\mu)/s^3`
    (:math:`\partial\log q/\partial\eta = -A`, :math:`\partial A/\partial\eta = B`).
    """

    name: str = "truncated_negbin"

    @staticmethod
    def _parts(eta, nb_theta):
        th = float(nb_theta)
        mu = np.exp(np.minimum(eta, _ETA_MAX))
        s = mu + th
        log_q = th * (np.log(th) - np.logaddexp(eta, np.log(th)))
        r = np.exp(log_q - np.log(-np.expm1(log_q)))  # q / (1 - q)
        return th, mu, s, log_q, r

    def loglik_eta(self, eta, y, trials, nb_theta=None):
        _, _, _, log_q, _ = self._parts(eta, nb_theta)
        return super().loglik_eta(eta, y, trials, nb_theta) - np.log(-np.expm1(log_q))

    def derivs(self, eta, y, trials, nb_theta=None):
        g, h, h3 = super().derivs(eta, y, trials, nb_theta)
        th, mu, s, _, r = self._parts(eta, nb_theta)
        a = th * mu / s
        b = th**2 * mu / s**2
        g_t = g - r * a
        h_t = h - r * (1.0 + r) * a**2 + r * b
        h3_t = (
            h3
            + (1.0 + 2.0 * r) * r * (1.0 + r) * a**3
            - 3.0 * r * (1.0 + r) * a * b
            + r * th**2 * mu * (th - mu) / s**3
        )
        return g_t, h_t, h3_t

    def evaluate(self, eta, y, trials, nb_theta=None):
        return (self.loglik_eta(eta, y, trials, nb_theta), *self.derivs(eta, y, trials, nb_theta))

    def derivs_log_theta(self, eta, y, nb_theta):
        r"""Derivatives in :math:`\psi = \log\theta`:
        :math:`\partial\log q/\partial\psi = \theta(\log(\theta/s) + \mu/s)`,
        :math:`\partial A/\partial\psi = \theta\mu^2/s^2`,
        :math:`\partial B/\partial\psi = 2\theta^2\mu^2/s^3`."""
        dl, dg, dh = super().derivs_log_theta(eta, y, nb_theta)
        th, mu, s, _, r = self._parts(eta, nb_theta)
        a = th * mu / s
        b = th**2 * mu / s**2
        dlogq = th * (np.log(th / s) + mu / s)
        dr = r * (1.0 + r) * dlogq
        da = th * mu**2 / s**2
        db = 2.0 * th**2 * mu**2 / s**3
        dl_t = dl + r * dlogq
        dg_t = dg - (dr * a + r * da)
        dh_t = dh - ((1.0 + 2.0 * r) * dr * a**2 + r * (1.0 + r) * 2.0 * a * da) + dr * b + r * db
        return dl_t, dg_t, dh_t

    def start_eta(self, y, trials):
        return np.log(np.maximum(y - 0.5, 0.5))


@dataclass(frozen=True)
class Gamma(Family):
    """Gamma with log link; shape :math:`\nu` in the dispersion slot (``nb_theta``)."""

    name: str = "gamma"
    link: str = "log"
    has_dispersion: bool = True
    dispersion_label: str = "Gamma shape (nu = 1/sigma^2)"

    def linkinv(self, eta):
        return np.exp(np.clip(eta, -_ETA_MAX, _ETA_MAX))

    def linkfun(self, mu):
        return np.log(mu)

    def loglik_eta(self, eta, y, trials, nb_theta=None):
        nu = float(nb_theta)
        return -nu * (eta + y * np.exp(-np.clip(eta, -_ETA_MAX, _ETA_MAX)))

    def loglik_shape(self, y, nb_theta=None):
        nu = float(nb_theta)
        return nu * np.log(nu) - gammaln(nu) + nu * np.log(y)

    def loglik_const(self, y, trials):
        return -np.log(y)

    def derivs(self, eta, y, trials, nb_theta=None):
        nu = float(nb_theta)
        r = y * np.exp(-np.clip(eta, -_ETA_MAX, _ETA_MAX))  # y / mu
        h = nu * r
        return nu * (r - 1.0), h, -h

    def evaluate(self, eta, y, trials, nb_theta=None):
        nu = float(nb_theta)
        e = np.clip(eta, -_ETA_MAX, _ETA_MAX)
        r = y * np.exp(-e)
        h = nu * r
        return -nu * (e + r), nu * (r - 1.0), h, -h

    def derivs_log_theta(self, eta, y, nb_theta):
        r"""Derivatives with respect to :math:`\psi = \log\nu` at fixed :math:`\eta`.

        :math:`\partial\ell/\partial\psi = \nu(\log\nu + 1 - \psi(\nu) + \log y - \eta - y/\mu)`;
        :math:`g` and :math:`h` are linear in :math:`\nu`, so their derivatives are themselves.
        """
        nu = float(nb_theta)
        e = np.clip(eta, -_ETA_MAX, _ETA_MAX)
        r = y * np.exp(-e)
        dl = np.log(nu) + 1.0 - digamma(nu) + np.log(y) - e - r
        return nu * dl, nu * (r - 1.0), nu * r

    def start_eta(self, y, trials):
        return np.log(y)

    def start_dispersion(self, y, mu, weights) -> float:
        r""":math:`1/\widehat{CV}^2` with :math:`\widehat{CV}^2 = \sum w (y/\mu - 1)^2 / \sum w`."""
        cv2 = np.sum(weights * (y / mu - 1.0) ** 2) / np.sum(weights)
        return float(np.clip(1.0 / cv2, 0.05, 1e6)) if cv2 > 0 else 1e6


_SERIES_SD = 8.0  # terms summed: +- 8 standard deviations of j around the largest term
_SERIES_MAX_HALF_WIDTH = 50_000


def tweedie_log_series(y: np.ndarray, phi: float, power: float) -> tuple[np.ndarray, np.ndarray]:
    r"""Dunn & Smyth's series for the Tweedie density's normalising factor.

    Parameters
    ----------
    y : np.ndarray
        Strictly positive responses.
    phi : float
        Dispersion (> 0).
    power : float
        Power, 1 < p < 2.

    Returns
    -------
    (log_w, mean_j) : tuple of np.ndarray
        :math:`\log\sum_j W_j` and the :math:`W`-weighted mean of :math:`j` (the derivative
        of ``log_w`` with respect to :math:`-\log\phi` is :math:`(1-\alpha)\,\bar j`).

    Notes
    -----
    :math:`\log W_j = j z - \log j! - \log\Gamma(-j\alpha)` with
    :math:`z = -\alpha\log y + \alpha\log(p-1) - (1-\alpha)\log\phi - \log(2-p)`. In
    :math:`j`, :math:`\log W_j` is concave with curvature about :math:`-(1-\alpha)/j`, so
    the terms beyond :math:`j^* \pm 8\sqrt{j^*/(1-\alpha)}` are negligible (< e^-32 of the
    largest). Dunn, P. K. and Smyth, G. K. (2005), Series evaluation of Tweedie exponential
    dispersion model densities, Statistics and Computing 15, 267-280.
    """
    y = np.asarray(y, dtype=float)
    alpha = (2.0 - power) / (1.0 - power)
    z = -alpha * np.log(y) + alpha * np.log(power - 1.0) - (1.0 - alpha) * np.log(phi)
    z = z - np.log(2.0 - power)
    jstar = np.maximum(1.0, np.round(y ** (2.0 - power) / (phi * (2.0 - power))))
    half = np.ceil(_SERIES_SD * np.sqrt(jstar / (1.0 - alpha))) + 5.0
    width = int(min(np.max(half, initial=5.0), _SERIES_MAX_HALF_WIDTH))
    # streaming log-sum-exp over offsets around each row's own largest term
    top = np.full_like(y, -np.inf)
    total = np.zeros_like(y)
    jsum = np.zeros_like(y)
    with np.errstate(invalid="ignore"):
        _accumulate(jstar, z, alpha, width, top, total, jsum)
    return top + np.log(total), jsum / total


def _accumulate(jstar, z, alpha, width, top, total, jsum) -> None:
    """Update ``top, total, jsum`` in place over the offsets -width..width (see above)."""
    for off in range(-width, width + 1):
        j = jstar + off
        ok = j >= 1.0
        if not ok.any():
            continue
        jj = np.where(ok, j, 1.0)
        lw = np.where(ok, jj * z - gammaln(jj + 1.0) - gammaln(-jj * alpha), -np.inf)
        new_top = np.maximum(top, lw)
        finite = np.isfinite(new_top)
        scale = np.where(finite, np.exp(np.where(finite, top - new_top, 0.0)), 0.0)
        w = np.where(finite, np.exp(np.where(finite, lw - new_top, -np.inf)), 0.0)
        total *= scale
        total += w
        jsum *= scale
        jsum += w * jj
        top[:] = new_top


@dataclass(frozen=True)
class Tweedie(Family):
    """Tweedie with log link, power ``power`` in (1, 2); precision 1/phi in the dispersion slot.

    ``Tweedie()`` without a power is the family *name* for :func:`poolcast.glmm.fit`, which
    estimates the power by profiling; a fit itself always runs on ``Tweedie(power=p)``.
    """

    name: str = "tweedie"
    link: str = "log"
    has_dispersion: bool = True
    dispersion_label: str = "Tweedie precision (1/phi)"
    power: float | None = None

    def __post_init__(self) -> None:
        if self.power is not None and not 1.0 < float(self.power) < 2.0:
            raise InvalidParameterError(
                f"Tweedie power={self.power!r} must be in (1, 2) (compound Poisson-Gamma)."
            )
        if self.power is not None:
            label = f"Tweedie precision 1/phi (power p = {float(self.power):.4g})"
            object.__setattr__(self, "dispersion_label", label)

    @property
    def p(self) -> float:
        if self.power is None:
            raise InvalidParameterError(
                "Tweedie family without a power: fit(..., family='tweedie') estimates it; "
                "to evaluate the likelihood pass Tweedie(power=p)."
            )
        return float(self.power)

    def linkinv(self, eta):
        return np.exp(np.clip(eta, -_ETA_MAX, _ETA_MAX))

    def linkfun(self, mu):
        return np.log(mu)

    def _powers(self, eta):
        p = self.p
        e = np.clip(eta, -_ETA_MAX, _ETA_MAX)
        return p, np.exp((1.0 - p) * e), np.exp((2.0 - p) * e)

    def loglik_eta(self, eta, y, trials, nb_theta=None):
        p, m1, m2 = self._powers(eta)
        return float(nb_theta) * (y * m1 / (1.0 - p) - m2 / (2.0 - p))

    def loglik_shape(self, y, nb_theta=None):
        pos = y > 0
        out = np.zeros_like(y, dtype=float)
        if pos.any():
            out[pos] = tweedie_log_series(y[pos], 1.0 / float(nb_theta), self.p)[0]
        return out

    def loglik_const(self, y, trials):
        return np.where(y > 0, -np.log(np.where(y > 0, y, 1.0)), 0.0)

    def derivs(self, eta, y, trials, nb_theta=None):
        tau = float(nb_theta)
        p, m1, m2 = self._powers(eta)
        g = tau * (y * m1 - m2)
        h = tau * ((p - 1.0) * y * m1 + (2.0 - p) * m2)
        h3 = tau * (-((p - 1.0) ** 2) * y * m1 + (2.0 - p) ** 2 * m2)
        return g, h, h3

    def evaluate(self, eta, y, trials, nb_theta=None):
        tau = float(nb_theta)
        p, m1, m2 = self._powers(eta)
        ll = tau * (y * m1 / (1.0 - p) - m2 / (2.0 - p))
        g = tau * (y * m1 - m2)
        h = tau * ((p - 1.0) * y * m1 + (2.0 - p) * m2)
        h3 = tau * (-((p - 1.0) ** 2) * y * m1 + (2.0 - p) ** 2 * m2)
        return ll, g, h, h3

    def derivs_log_theta(self, eta, y, nb_theta):
        r"""Derivatives with respect to :math:`\psi = \log\tau = -\log\phi` at fixed :math:`\eta`.

        :math:`\partial\ell/\partial\psi = \tau(y\mu^{1-p}/(1-p) - \mu^{2-p}/(2-p))
        + (1-\alpha)\bar j` (:math:`\bar j` from :func:`tweedie_log_series`, 0 at y = 0);
        :math:`g, h` are linear in :math:`\tau`.
        """
        tau = float(nb_theta)
        p, m1, m2 = self._powers(eta)
        dl = tau * (y * m1 / (1.0 - p) - m2 / (2.0 - p))
        pos = y > 0
        if pos.any():
            alpha = (2.0 - p) / (1.0 - p)
            dl = dl.copy()
            dl[pos] += (1.0 - alpha) * tweedie_log_series(y[pos], 1.0 / tau, p)[1]
        g = tau * (y * m1 - m2)
        h = tau * ((p - 1.0) * y * m1 + (2.0 - p) * m2)
        return dl, g, h

    def start_eta(self, y, trials):
        return np.log(np.maximum(y, 0.1 * max(float(np.mean(y)), 1e-8)))

    def start_dispersion(self, y, mu, weights) -> float:
        r""":math:`1/\hat\phi` with the Pearson moment :math:`\hat\phi = \sum w(y-\mu)^2/\mu^p / \sum w`."""
        phi = np.sum(weights * (y - mu) ** 2 / mu**self.p) / np.sum(weights)
        return float(np.clip(1.0 / phi, 1e-8, 1e8)) if phi > 0 else 1e8


@dataclass(frozen=True)
class Binomial(Family):
    """Binomial with logit link; ``y`` counts successes out of ``trials`` (1 for Bernoulli)."""

    name: str = "binomial"
    link: str = "logit"

    def linkinv(self, eta):
        return expit(eta)

    def linkfun(self, mu):
        return np.log(mu) - np.log1p(-mu)

    def loglik_eta(self, eta, y, trials, nb_theta=None):
        return y * eta - trials * np.logaddexp(0.0, eta)

    def loglik_const(self, y, trials):
        return gammaln(trials + 1.0) - gammaln(y + 1.0) - gammaln(trials - y + 1.0)

    def derivs(self, eta, y, trials, nb_theta=None):
        p = expit(eta)
        h = trials * p * (1.0 - p)
        return y - trials * p, h, h * (1.0 - 2.0 * p)

    def evaluate(self, eta, y, trials, nb_theta=None):
        p = expit(eta)
        h = trials * p * (1.0 - p)
        ll = y * eta - trials * np.logaddexp(0.0, eta)
        return ll, y - trials * p, h, h * (1.0 - 2.0 * p)

    def start_eta(self, y, trials):
        p = (y + 0.5) / (trials + 1.0)
        return np.log(p) - np.log1p(-p)


FAMILIES: dict[str, Family] = {
    "poisson": Poisson(),
    "negbin": NegBin2(),
    "gamma": Gamma(),
    "tweedie": Tweedie(),
    "truncated_negbin": TruncatedNegBin2(),
    "binomial": Binomial(),
}


def get_family(family: str | Family) -> Family:
    """Return the family object for a name ("poisson", "negbin", "gamma", "tweedie" or
    "binomial") or the object itself (e.g. ``Tweedie(power=1.6)``)."""
    if isinstance(family, Family):
        return family
    key = {
        "nb2": "negbin",
        "nbinom2": "negbin",
        "negative_binomial": "negbin",
        "truncated_nbinom2": "truncated_negbin",
    }.get(family, family)
    if key not in FAMILIES:
        raise InvalidParameterError(
            f"family={family!r} is not supported; use one of {sorted(FAMILIES)}."
        )
    return FAMILIES[key]
