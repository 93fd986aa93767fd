r"""Selected entries of :math:`H^{-1}` for several grouping factors, by a Schur complement.

The exact Laplace gradient of a multi-factor model (:func:`poolcast.glmm.laplace._sparse_gradient`)
needs, for every observation i, only the entries of :math:`H^{-1}` among the K columns row i of
:math:`Z\Lambda` touches (``SparseSystem.cols[i]``): the K x K matrix
:math:`M_i = (H^{-1})_{c_i c_i}`. A dense :math:`H^{-1}` costs :math:`O(q^3)`, most of the fit
when one factor has many levels (1k SKUs x 3 seasonal effects under 8 categories: q = 3,024).

Order the random effects so that those of the largest grouping factor come first (all its
terms: ``(1 | sku) + (0 + x || sku)`` is three blocks on ``sku``). Their part of H is block
diagonal (each row has one level of the factor), the rest is small (m effects: a category, a
month):

.. math::

    H = \begin{pmatrix} A & B \\ B^\top & C \end{pmatrix},\quad
    S = C - B^\top A^{-1} B,\quad W = A^{-1} B,

    H^{-1} = \begin{pmatrix} A^{-1} + W S^{-1} W^\top & -W S^{-1} \\
                              -S^{-1} W^\top & S^{-1} \end{pmatrix}.

A is G blocks of k x k (batched inverses), S is m x m (dense), so the cost is
:math:`O(G k^3 + G k m^2 + m^3)` instead of :math:`O(q^3)`, and only the diagonal k x k
blocks of :math:`A^{-1} + W S^{-1} W^\top` are formed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "SCHUR_DENSE_MAX",
    "SCHUR_M_MAX",
    "diagonal_blocks",
    "row_inverse_blocks",
    "schur_applies",
]

#: Largest number of random effects outside the largest block (the dense Schur complement).
SCHUR_M_MAX = 1500

#: Largest G k x m of the dense W = A^{-1} B (8 bytes each: 320 MB).
SCHUR_DENSE_MAX = 40_000_000


def _split(system: Any) -> tuple[list[int], int, int] | None:
    """(blocks, G, k) of the largest grouping factor: the blocks on it (``(1 | sku) +
    (0 + x || sku)`` is three blocks on ``sku``, block diagonal together), its number of levels
    and of effects per level; None when no other factor is left for the small part."""
    layout = getattr(system, "layout", None)  # SparseSystem only
    if layout is None or len(layout) < 2:
        return None
    blocks = system.design.blocks
    size: dict[str, int] = {}
    for blk, (_, G, k) in zip(blocks, layout, strict=True):
        size[blk.group] = size.get(blk.group, 0) + G * k
    big = max(size, key=size.__getitem__)
    members = [b for b, blk in enumerate(blocks) if blk.group == big]
    if len(members) == len(blocks):
        return None
    G = layout[members[0]][1]
    return members, G, sum(layout[b][2] for b in members)


def schur_applies(system: Any) -> bool:
    """Whether :func:`row_inverse_blocks` can serve this multi-factor system."""
    split = _split(system)
    if split is None:
        return False
    _, G, k = split
    m = system.q - G * k
    return 0 < m <= SCHUR_M_MAX and G * k * m <= SCHUR_DENSE_MAX


@dataclass(frozen=True)
class _SchurParts:
    """The pieces of :math:`H^{-1}` the callers read (see the module docstring)."""

    members: list[int]  # the big factor's blocks
    pa: np.ndarray  # its positions in a row's pattern, block by block
    pc: np.ndarray  # the other positions
    level: np.ndarray  # (n,) the row's level of the big factor
    small_index: np.ndarray  # (q,) a column's index among the m small ones (-1.. for big)
    small_cols: np.ndarray  # (n, K - k) the row's small columns, renumbered
    Haa: np.ndarray  # (G, k, k) diagonal blocks of the big part of H^{-1}
    P: np.ndarray  # (G, k, m) W S^{-1}
    Sinv: np.ndarray  # (m, m)


def _schur_parts(system: Any, D: np.ndarray) -> _SchurParts:
    """A^{-1}, S^{-1}, W S^{-1} and the diagonal blocks of the big part of H^{-1} for weights D."""
    split = _split(system)
    if split is None or not schur_applies(system):  # pragma: no cover - guarded by the caller
        raise ValueError("the Schur complement does not apply to this system")
    members, G, k = split
    cols, vals = system.cols, system.vals
    K = cols.shape[1]
    offsets = np.cumsum([0] + [kk for _, _, kk in system.layout])
    # the big factor's positions in a row's pattern (its k effects, block by block) and the rest
    pa = np.concatenate([np.arange(offsets[b], offsets[b + 1]) for b in members])
    pc = np.setdiff1d(np.arange(K), pa)
    level = system.design.blocks[members[0]].level_index  # the row's level of the big factor
    # the other factors' columns renumbered 0..m-1
    in_big = np.zeros(system.q, dtype=bool)
    for b in members:
        start, Gb, kb = system.layout[b]
        in_big[start : start + Gb * kb] = True
    small_index = np.cumsum(~in_big) - 1
    small_cols = small_index[cols[:, pc]]
    m = system.q - G * k

    va, vc = vals[:, pa], vals[:, pc]  # (n, k), (n, kc)
    # A: G blocks k x k, plus I
    Ab = np.zeros((G, k, k))
    for r in range(k):
        for c in range(r, k):
            s = np.bincount(level, weights=D * va[:, r] * va[:, c], minlength=G)
            Ab[:, r, c] += s
            if c != r:
                Ab[:, c, r] += s
    Ab[:, np.arange(k), np.arange(k)] += 1.0
    # B: (G, k, m) dense; C: (m, m) dense, plus I
    Bd = np.zeros((G * k, m))
    for r in range(k):
        for j in range(len(pc)):
            np.add.at(Bd, (level * k + r, small_cols[:, j]), D * va[:, r] * vc[:, j])
    C = np.zeros((m, m))
    for i in range(len(pc)):
        for j in range(len(pc)):
            np.add.at(C, (small_cols[:, i], small_cols[:, j]), D * vc[:, i] * vc[:, j])
    C[np.diag_indices(m)] += 1.0

    Ainv = np.linalg.inv(Ab)  # (G, k, k)
    Bg = Bd.reshape(G, k, m)
    W = np.einsum("gij,gjm->gim", Ainv, Bg)  # A^{-1} B
    S = C - Bd.T @ W.reshape(G * k, m)
    S = 0.5 * (S + S.T)
    Sinv = np.linalg.inv(S)
    Sinv = 0.5 * (Sinv + Sinv.T)
    P = (W.reshape(G * k, m) @ Sinv).reshape(G, k, m)  # W S^{-1}
    Haa = Ainv + np.einsum("gim,gjm->gij", P, W)  # diagonal blocks of the big part

    return _SchurParts(members, pa, pc, level, small_index, small_cols, Haa, P, Sinv)


def row_inverse_blocks(system: Any, D: np.ndarray) -> np.ndarray:
    r"""The (n, K, K) blocks :math:`M_i = (H^{-1})_{c_i c_i}` of
    :math:`H = \Lambda^\top Z^\top \operatorname{diag}(D) Z \Lambda + I` (current theta of
    ``system``), in the column order of ``system.cols``.

    Parameters
    ----------
    system : SparseSystem
        With at least two grouping factors and :func:`schur_applies` true.
    D : np.ndarray
        (n,) weights of the rows (prior weight times the PIRLS weight).
    """
    sp = _schur_parts(system, D)
    pa, pc, level, small_cols = sp.pa, sp.pc, sp.level, sp.small_cols
    n, K = system.cols.shape
    k = len(pa)
    M = np.empty((n, K, K))
    M[:, pa[:, None], pa[None, :]] = sp.Haa[level]
    # -W S^{-1} at (row's level, row's small columns)
    Hac = -sp.P[level[:, None, None], np.arange(k)[None, :, None], small_cols[:, None, :]]
    M[:, pa[:, None], pc[None, :]] = Hac
    M[:, pc[:, None], pa[None, :]] = np.swapaxes(Hac, 1, 2)
    M[:, pc[:, None], pc[None, :]] = sp.Sinv[small_cols[:, :, None], small_cols[:, None, :]]
    return M


def diagonal_blocks(system: Any, D: np.ndarray) -> list[np.ndarray]:
    """The diagonal k_b x k_b blocks of :math:`H^{-1}` of every block (one (G_b, k_b, k_b)
    array each, the layout of ``SparseFactor.cond_cov``), from the Schur parts."""
    sp = _schur_parts(system, D)
    out: list[np.ndarray] = []
    koff = dict(
        zip(sp.members, np.cumsum([0] + [system.layout[b][2] for b in sp.members]), strict=False)
    )
    for b, (start, G, k) in enumerate(system.layout):
        if b in koff:
            j = int(koff[b])
            out.append(sp.Haa[:, j : j + k, j : j + k].copy())
            continue
        idx = sp.small_index[start + np.arange(G)[:, None] * k + np.arange(k)[None, :]]  # (G, k)
        out.append(sp.Sinv[idx[:, :, None], idx[:, None, :]])
    return out
