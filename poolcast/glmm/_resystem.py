r"""Linear algebra of the random effects: :math:`Z\Lambda_\theta`, and the factor of
:math:`H = \Lambda^\top Z^\top D Z \Lambda + I`.

Two implementations share one interface (flat ``u`` of length q, level-major inside each block):

* :class:`BlockSystem` -- one grouping factor. H is block diagonal with G blocks of size k x k;
  everything is segment sums (``np.bincount`` over the level index) and batched closed-form
  k x k inverses, no loop over groups (lme4's ``devcCol`` idea; notes §4).
* :class:`SparseSystem` -- several factors (nested or crossed). Z is a scipy CSR matrix, H is
  factored densely (Cholesky) when q is small and by ``scipy.sparse.linalg.splu`` otherwise.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from poolcast.glmm._selinv import diagonal_blocks, schur_applies
from poolcast.glmm.terms import GlmmDesign

__all__ = ["BlockFactor", "BlockSystem", "SparseFactor", "SparseSystem", "make_system"]


class BlockFactor:
    """Inverse and log-determinant of a block-diagonal H (G blocks of k x k).

    Attributes
    ----------
    S : np.ndarray
        (G, k, k) inverses of the blocks.
    logdets : np.ndarray
        (G,) log-determinants of the blocks.
    logdet : float
        Their sum, log det H.
    """

    def __init__(self, Hb: np.ndarray) -> None:
        G, k, _ = Hb.shape
        if k == 1:
            h = Hb[:, 0, 0]
            self.S = (1.0 / h)[:, None, None]
            self.logdets = np.log(h)
        elif k == 2:
            a, b, d = Hb[:, 0, 0], Hb[:, 0, 1], Hb[:, 1, 1]
            det = a * d - b * b
            S = np.empty_like(Hb)
            S[:, 0, 0] = d / det
            S[:, 1, 1] = a / det
            S[:, 0, 1] = S[:, 1, 0] = -b / det
            self.S = S
            self.logdets = np.log(det)
        else:
            L = np.linalg.cholesky(Hb)
            self.logdets = 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(axis=1)
            self.S = np.linalg.inv(Hb)
        self.logdet = float(self.logdets.sum())
        self.G, self.k = G, k

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """Solve H x = rhs for flat rhs (q,) or (q, m)."""
        G, k = self.G, self.k
        if rhs.ndim == 1:
            r = rhs.reshape(G, k)
            out = np.empty((G, k))
            for i in range(k):
                acc = self.S[:, i, 0] * r[:, 0]
                for j in range(1, k):
                    acc += self.S[:, i, j] * r[:, j]
                out[:, i] = acc
            return out.ravel()
        r = rhs.reshape(G, k, -1)
        return np.einsum("gij,gjm->gim", self.S, r).reshape(G * k, -1)

    def cond_cov(self) -> list[np.ndarray]:
        """Diagonal blocks of H^{-1}: one (G, k, k) array."""
        return [self.S]


class BlockSystem:
    """Random effects of a single grouping factor (block-diagonal H).

    Attributes
    ----------
    block : ReBlock
        The term.
    idx : np.ndarray
        (n,) level index.
    G, k, q : int
        Levels, effects per level, q = G k.
    Acols : list[np.ndarray]
        The k columns (n,) of Z Λ for the current theta (row i is ``a_i = Λᵀ z_i``).
    lam : np.ndarray
        (k, k) current Λ block.
    """

    single = True

    def __init__(self, design: GlmmDesign) -> None:
        (self.block,) = design.blocks
        self.idx = self.block.level_index
        self.G, self.k = self.block.n_levels, self.block.k
        # segment sums by np.add.reduceat on group-contiguous rows (17x faster than bincount);
        # rows not sorted by level are permuted on the fly
        self.sorted = bool(np.all(np.diff(self.idx) >= 0))
        self.order = None if self.sorted else np.argsort(self.idx, kind="stable")
        sidx = self.idx if self.sorted else self.idx[self.order]
        self.starts = np.flatnonzero(np.r_[True, np.diff(sidx) != 0])
        self.counts = np.diff(np.r_[self.starts, len(sidx)])
        if len(self.starts) != self.G:
            raise ValueError("every level of the grouping factor must have rows")
        self.q = self.G * self.k
        self.Zr = np.ascontiguousarray(self.block.Z)
        self.Zcols = [np.ascontiguousarray(self.Zr[:, c]) for c in range(self.k)]
        self.z_ones = [bool(np.all(z == 1.0)) for z in self.Zcols]
        self.z_is_one = self.k == 1 and bool(np.all(self.Zr == 1.0))
        self.set_theta(design.theta_start())

    def set_theta(self, theta: np.ndarray) -> None:
        """Set Λ and A = Z Λ for a new theta."""
        self.lam = lam = self.block.lambda_block(np.asarray(theta, dtype=float))
        # column c of A = Z Λ is sum_{r >= c} Λ_rc Z_r (Λ lower triangular)
        acols = []
        for c in range(self.k):
            col = np.full(len(self.idx), lam[c, c]) if self.z_ones[c] else lam[c, c] * self.Zcols[c]
            for r in range(c + 1, self.k):
                col += (lam[r, c] * self.Zcols[r]) if not self.z_ones[r] else lam[r, c]
            acols.append(col)
        self.Acols = acols

    def segsum(self, v: np.ndarray) -> np.ndarray:
        """(G,) sums of v over the rows of each level."""
        return np.add.reduceat(v if self.sorted else v[self.order], self.starts)

    def expand(self, vals: np.ndarray) -> np.ndarray:
        """(n,) value of each row's level, from (G,) per-level values."""
        return np.repeat(vals, self.counts) if self.sorted else vals[self.idx]

    def re_eta(self, u: np.ndarray) -> np.ndarray:
        """Z Λ u for flat u (q,)."""
        U = u.reshape(self.G, self.k)
        out = self.Acols[0] * self.expand(U[:, 0])
        for c in range(1, self.k):
            out += self.Acols[c] * self.expand(U[:, c])
        return out

    def crossprod(self, v: np.ndarray) -> np.ndarray:
        """Λᵀ Zᵀ v, flat (q,) for v (n,), or (q, m) for v (n, m)."""
        if v.ndim == 1:
            out = np.empty((self.G, self.k))
            for c in range(self.k):
                out[:, c] = self.segsum(v * self.Acols[c])
            return out.ravel()
        m = v.shape[1]
        out = np.empty((self.G, self.k, m))
        for c in range(self.k):
            for j in range(m):
                out[:, c, j] = self.segsum(v[:, j] * self.Acols[c])
        return out.reshape(self.q, m)

    def factor(self, D: np.ndarray) -> BlockFactor:
        """Factor H = Λᵀ Zᵀ diag(D) Z Λ + I."""
        k = self.k
        Hb = np.empty((self.G, k, k))
        for r in range(k):
            DA = D * self.Acols[r]
            for c in range(r + 1):
                s = self.segsum(DA * self.Acols[c])
                Hb[:, r, c] = s
                Hb[:, c, r] = s
        Hb[:, np.arange(k), np.arange(k)] += 1.0
        return BlockFactor(Hb)


class SparseFactor:
    """Factor of H for several factors: dense Cholesky when q is small, else sparse LU.

    Attributes
    ----------
    logdet : float
        log det H.
    """

    def __init__(self, H: Any, dense: bool, layout: list[tuple[int, int, int]]) -> None:
        self.layout = layout
        self.q = H.shape[0]
        if dense:
            self.chol = sla.cho_factor(H, lower=True, check_finite=False)
            self.lu = None
            self.logdet = float(2.0 * np.log(np.diag(self.chol[0])).sum())
        else:
            self.chol = None
            self.lu = splu(H, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0)
            self.logdet = float(np.log(np.abs(self.lu.U.diagonal())).sum())

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """Solve H x = rhs."""
        if self.chol is not None:
            return sla.cho_solve(self.chol, rhs, check_finite=False)
        return self.lu.solve(rhs)

    #: Set by :meth:`SparseSystem.factor`: the system and the weights H was built from, so
    #: :meth:`cond_cov` can take the Schur complement (:mod:`poolcast.glmm._selinv`).
    system: Any = None
    D: np.ndarray | None = None

    def cond_cov(self) -> list[np.ndarray]:
        """Diagonal k x k blocks of H^{-1}, per block: list of (G_b, k_b, k_b)."""
        if self.system is not None and schur_applies(self.system):
            return diagonal_blocks(self.system, self.D)
        out = []
        for start, G, k in self.layout:
            blocks = np.empty((G, k, k))
            chunk = max(1, 2048 // k)
            for g0 in range(0, G, chunk):
                g1 = min(G, g0 + chunk)
                cols = np.arange(start + g0 * k, start + g1 * k)
                E = np.zeros((self.q, cols.size))
                E[cols, np.arange(cols.size)] = 1.0
                X = self.solve(E)[cols]  # (m, m) sub-block
                for gg in range(g1 - g0):
                    blocks[g0 + gg] = X[gg * k : (gg + 1) * k, gg * k : (gg + 1) * k]
            out.append(blocks)
        return out


class SparseSystem:
    """Random effects of several grouping factors (nested or crossed).

    Row i of Z Λ has K = sum_b k_b non-zeros: for block b, columns
    ``start_b + idx_b[i] k_b + c`` with values ``(Z_b Λ_b)[i, c]``. H is accumulated from the
    K x K products of each row with ``np.bincount`` (dense q x q when q <= ``dense_max``), or as a
    scipy CSC matrix for ``splu``.

    Attributes
    ----------
    q : int
        Total number of random effects.
    layout : list[tuple[int, int, int]]
        (first column, G, k) of each block.
    cols : np.ndarray
        (n, K) column of each non-zero of Z Λ.
    vals : np.ndarray
        (n, K) its value for the current theta.
    """

    single = False

    def __init__(self, design: GlmmDesign, dense_max: int) -> None:
        self.design = design
        self.layout, cols, start = [], [], 0
        for b in design.blocks:
            G, k = b.n_levels, b.k
            cols.append(start + b.level_index[:, None] * k + np.arange(k)[None, :])
            self.layout.append((start, G, k))
            start += G * k
        self.q = start
        self.dense = self.q <= dense_max
        self.cols = np.ascontiguousarray(np.hstack(cols))
        K = self.cols.shape[1]
        self.pair_a, self.pair_b = np.triu_indices(K)
        ca, cb = self.cols[:, self.pair_a], self.cols[:, self.pair_b]
        self.pair_rows = np.minimum(ca, cb).ravel()
        self.pair_cols = np.maximum(ca, cb).ravel()
        if self.dense:
            self.pair_lin = self.pair_rows * self.q + self.pair_cols
        self.cols_flat = self.cols.ravel()
        self.set_theta(design.theta_start())

    def set_theta(self, theta: np.ndarray) -> None:
        """Set the values of Z Λ for a new theta."""
        theta = np.asarray(theta, dtype=float)
        self.vals = np.ascontiguousarray(
            np.hstack([b.Z @ b.lambda_block(theta) for b in self.design.blocks])
        )

    def re_eta(self, u: np.ndarray) -> np.ndarray:
        """Z Λ u."""
        return (self.vals * u[self.cols]).sum(axis=1)

    def crossprod(self, v: np.ndarray) -> np.ndarray:
        """Λᵀ Zᵀ v for v (n,) or (n, m)."""
        if v.ndim == 1:
            w = (self.vals * v[:, None]).ravel()
            return np.bincount(self.cols_flat, weights=w, minlength=self.q)
        return np.column_stack([self.crossprod(v[:, j]) for j in range(v.shape[1])])

    def factor(self, D: np.ndarray) -> SparseFactor:
        """Factor H = Λᵀ Zᵀ diag(D) Z Λ + I."""
        prod = (D[:, None] * self.vals[:, self.pair_a] * self.vals[:, self.pair_b]).ravel()
        if self.dense:
            H = np.bincount(self.pair_lin, weights=prod, minlength=self.q * self.q).reshape(
                self.q, self.q
            )
            H = H + np.triu(H, 1).T
            H[np.diag_indices(self.q)] += 1.0
            return self._with_source(SparseFactor(H, True, self.layout), D)
        off = self.pair_rows != self.pair_cols
        rows = np.concatenate([self.pair_rows, self.pair_cols[off], np.arange(self.q)])
        cols = np.concatenate([self.pair_cols, self.pair_rows[off], np.arange(self.q)])
        data = np.concatenate([prod, prod[off], np.ones(self.q)])
        H = sp.csc_matrix((data, (rows, cols)), shape=(self.q, self.q))
        return self._with_source(SparseFactor(H, False, self.layout), D)

    def _with_source(self, factor: SparseFactor, D: np.ndarray) -> SparseFactor:
        # a shallow copy: set_theta replaces self.vals, so the copy keeps this H's values
        factor.system, factor.D = copy.copy(self), D
        return factor


def make_system(design: GlmmDesign, dense_max: int = 3000) -> BlockSystem | SparseSystem:
    """The block-diagonal system for one factor, the sparse one for several, the tridiagonal
    one for an ar1 term."""
    if design.ar1_block is not None:
        from poolcast.glmm.ar1 import Ar1System

        return Ar1System(design)
    if len(design.blocks) == 1:
        return BlockSystem(design)
    return SparseSystem(design, dense_max)
