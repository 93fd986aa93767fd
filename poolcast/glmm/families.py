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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, expit, gammaln

from poolcast.errors import InvalidParameterError

__all__ = ["FAMILIES", "Binomial", "Family", "Gamma", "NegBin2", "Poisson", "get_family"]

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
        th = float(nb_theta)
        # log(mu + th) = eta + log1p(th / mu), stable for large mu
        return y * eta - (y + th) * np.logaddexp(eta, np.log(th))

    def loglik_shape(self, y, nb_theta=None):
        th = float(nb_theta)
        return gammaln(y + th) - gammaln(th) + th * np.log(th)

    def derivs(self, eta, y, trials, nb_theta=None):
        th = float(nb_theta)
        mu = self.linkinv(eta)
        s = mu + th
        g = th * (y - mu) / s
        h = th * (y + th) * mu / s**2
        h3 = h * (th - mu) / s
        return g, h, h3

    def evaluate(self, eta, y, trials, nb_theta=None):
        th = float(nb_theta)
        mu = self.linkinv(eta)
        s = mu + th
        ll = y * eta - (y + th) * np.log(s)
        g = th * (y - mu) / s
        h = th * (y + th) * mu / s**2
        return ll, g, h, h * (th - mu) / s

    def derivs_log_theta(self, eta, y, nb_theta):
        r"""Derivatives with respect to :math:`\psi = \log\theta` at fixed :math:`\eta`.

        Returns :math:`(\partial\ell/\partial\psi, \partial g/\partial\psi, \partial h/\partial\psi)`.
        """
        th = float(nb_theta)
        mu = self.linkinv(eta)
        s = mu + th
        dl = digamma(y + th) - digamma(th) + np.log(th) + 1.0 - np.log(s) - (y + th) / s
        dg = mu * (y - mu) / s**2
        dh = mu * (y * mu + 2.0 * th * mu - th * y) / s**3
        return th * dl, th * dg, th * dh


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
    "binomial": Binomial(),
}


def get_family(family: str | Family) -> Family:
    """Return the family object for a name ("poisson", "negbin", "gamma" or "binomial")."""
    if isinstance(family, Family):
        return family
    key = {"nb2": "negbin", "nbinom2": "negbin", "negative_binomial": "negbin"}.get(family, family)
    if key not in FAMILIES:
        raise InvalidParameterError(
            f"family={family!r} is not supported; use one of {sorted(FAMILIES)}."
        )
    return FAMILIES[key]
