"""Descriptor whitening: learned from matching pairs (Lw, Radenović et al. TPAMI 2018) or PCA.

Both return a :class:`Whitening` (mean ``m`` and projection ``P``) applied as
``x' = L2(P[:d] · (x − m))``. Descriptors are rows: ``X`` is ``(N, D)`` float32, row-major (the
reference implementation keeps columns, ``D × N``; the algebra is the same transposed).

Learned whitening (Lw), from pairs ``(qidx[i], pidx[i])`` of matching descriptors:

1. ``m`` = mean of the query descriptors ``X[qidx]``;
2. ``S`` = covariance of the matching differences ``X[qidx] − X[pidx]`` (about zero, not about
   their mean: a matching pair should have a zero difference);
3. ``P₁ = L⁻¹`` with ``S = L Lᵀ`` (Cholesky; if ``S`` is not positive definite a jitter is added to
   the diagonal, growing tenfold until it factors) — after ``P₁`` the differences are white;
4. project all descriptors, ``Y = P₁ (x − m)``, and take the eigenvectors ``E`` of their covariance,
   largest eigenvalue first (a rotation: the differences stay white);
5. ``P = Eᵀ P₁``; keeping the first ``d`` rows of ``P`` reduces the dimension.

Few pairs (fewer than about D): ``S`` is then rank-deficient, the jittered directions are amplified
enormously and Lw over-fits (the training classes collapse to points, held-out ones get worse).
``shrinkage`` blends ``S`` with a multiple of the identity first, ``S ← (1 − α)·S + α·(tr S / D)·I``;
``shrinkage="auto"`` picks α by the Ledoit–Wolf formula (Ledoit & Wolf, 2004), which is close to 0
when the pairs are plenty. The default ``0`` is the formula above, unchanged.

PCA whitening (the baseline, no labels): ``m`` = mean of all descriptors, ``P = Λ^{-1/2} Eᵀ`` with
``E, Λ`` the eigen-decomposition of their covariance, largest first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from retrieval.core.errors import DataError

#: Jitter schedule of the Cholesky step, relative to the mean diagonal of S.
_JITTER_START = 1e-10
_JITTER_MAX = 1.0


@dataclass
class Whitening:
    """A learned whitening.

    Attributes:
        m: ``(D,)`` float32 mean subtracted first.
        P: ``(D, D)`` float32 projection; row i is the i-th output direction (most important first).
        kind: ``"lw"`` (learned from pairs) or ``"pca"``.
        jitter: what was added to the diagonal of S for the Cholesky step (0 when none was needed).
        shrinkage: the α blended into S (0 = none).
    """

    m: np.ndarray
    P: np.ndarray
    kind: str = "lw"
    jitter: float = 0.0
    shrinkage: float = 0.0

    @property
    def dim(self) -> int:
        """Input (and maximal output) dimension D."""
        return int(self.P.shape[1])

    def apply(self, X: np.ndarray, dim: Optional[int] = None) -> np.ndarray:
        """Whiten rows: ``X (N, D)`` → ``(N, d)`` float32 L2-normalised, ``d = dim`` or all the rows
        of ``P`` (D, or fewer for a whitening cut to its rank)."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ValueError(f"expected descriptors of shape (N, {self.dim}), got {X.shape}")
        d = self.P.shape[0] if dim is None else int(dim)
        if not 1 <= d <= self.P.shape[0]:
            raise ValueError(f"dim must be in 1..{self.P.shape[0]}, got {dim}")
        Y = (X - self.m[None, :]) @ self.P[:d].T
        Y /= np.linalg.norm(Y, axis=1, keepdims=True) + 1e-6
        return Y.astype(np.float32, copy=False)

    def projection(self, dim: Optional[int] = None) -> np.ndarray:
        """The first ``dim`` rows of ``P`` (all by default): ``(d, D)`` float32 (what
        ``DescriptorNet.set_whitening`` takes)."""
        d = self.P.shape[0] if dim is None else int(dim)
        return np.ascontiguousarray(self.P[:d], dtype=np.float32)

    def to_state(self) -> dict:
        """Plain dict of numpy arrays / scalars (for checkpoints)."""
        return {"m": self.m, "P": self.P, "kind": self.kind, "jitter": float(self.jitter),
                "shrinkage": float(self.shrinkage)}

    @classmethod
    def from_state(cls, state: dict) -> "Whitening":
        """Inverse of :meth:`to_state` (accepts torch tensors too)."""
        m = np.asarray(state["m"], dtype=np.float32)
        P = np.asarray(state["P"], dtype=np.float32)
        return cls(m=m, P=P, kind=str(state.get("kind", "lw")), jitter=float(state.get("jitter", 0.0)),
                   shrinkage=float(state.get("shrinkage", 0.0)))


def cholesky_jitter(S: np.ndarray) -> tuple:
    """Lower Cholesky factor of a symmetric ``S (D, D)`` float64, adding jitter until it factors.

    Returns ``(L, jitter)``; the jitter starts at 0, then ``1e-10·mean(diag S)`` and grows ×10.
    """
    scale = float(np.mean(np.diag(S)))
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    alpha = 0.0
    eye = np.eye(S.shape[0])
    while True:
        try:
            return np.linalg.cholesky(S + alpha * eye), alpha
        except np.linalg.LinAlgError:
            alpha = _JITTER_START * scale if alpha == 0 else alpha * 10
            if alpha > _JITTER_MAX * scale:
                raise DataError("cannot learn whitening: the matching differences are degenerate") from None


def _eig_desc(C: np.ndarray) -> tuple:
    """Eigen-decomposition of symmetric ``C``, eigenvalues descending: ``(vals (D,), vecs (D, D))``."""
    vals, vecs = np.linalg.eigh((C + C.T) / 2)
    order = np.argsort(vals)[::-1]
    return vals[order], vecs[:, order]


def _check_X(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"expected descriptors of shape (N, D), got {X.shape}")
    return X.astype(np.float64)


def ledoit_wolf_shrinkage(Z: np.ndarray) -> float:
    """Ledoit–Wolf shrinkage α of the second-moment matrix ``S = ZᵀZ / n`` towards ``(tr S / D)·I``.

    Args:
        Z: ``(n, D)`` float rows (taken as centred: here the matching differences).

    Returns:
        α in [0, 1]: ``β / δ`` with ``δ = ‖S − μI‖²_F``, ``μ = tr S / D`` and
        ``β = min(δ, (Σ_k ‖z_k‖⁴ − n‖S‖²_F) / n²)``.
    """
    Z = np.asarray(Z, dtype=np.float64)
    n, d = Z.shape
    S = Z.T @ Z / n
    mu = np.trace(S) / d
    delta = float(np.sum((S - mu * np.eye(d)) ** 2))
    if delta <= 0:
        return 0.0
    beta_bar = (float(np.sum(np.sum(Z * Z, axis=1) ** 2)) - n * float(np.sum(S * S))) / n ** 2
    return float(min(max(beta_bar, 0.0), delta) / delta)


def learn_whitening(X: np.ndarray, qidx: np.ndarray, pidx: np.ndarray,
                    shrinkage: Union[float, str] = 0.0) -> Whitening:
    """Learn Lw from matching pairs.

    Args:
        X: ``(N, D)`` float32 training descriptors (L2-normalised), row-major.
        qidx, pidx: ``(M,)`` int, ``X[qidx[i]]`` matches ``X[pidx[i]]``.
        shrinkage: α in [0, 1] blending S with ``(tr S / D)·I``, or ``"auto"`` (Ledoit–Wolf);
            0 (default) is the plain formula.

    Returns:
        :class:`Whitening` with ``m (D,)`` float32 (mean of the queries) and ``P (D, D)`` float32
        such that the whitened matching differences have identity covariance.
    """
    X = _check_X(X)
    qidx = np.asarray(qidx, dtype=np.int64).ravel()
    pidx = np.asarray(pidx, dtype=np.int64).ravel()
    if qidx.shape != pidx.shape:
        raise ValueError(f"qidx and pidx differ in length: {qidx.shape} vs {pidx.shape}")
    if len(qidx) < 2:
        raise DataError(f"cannot learn whitening from {len(qidx)} matching pair(s); need at least 2")
    m = X[qidx].mean(axis=0)
    df = X[qidx] - X[pidx]
    S = df.T @ df / len(df)
    alpha = ledoit_wolf_shrinkage(df) if shrinkage == "auto" else float(shrinkage)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1] or 'auto', got {shrinkage!r}")
    if alpha > 0:
        S = (1 - alpha) * S + alpha * (np.trace(S) / S.shape[0]) * np.eye(S.shape[0])
    L, jitter = cholesky_jitter(S)
    P1 = np.linalg.inv(L)
    Y = (X - m) @ P1.T
    _, E = _eig_desc(Y.T @ Y / len(Y))
    P = E.T @ P1
    return Whitening(m=m.astype(np.float32), P=P.astype(np.float32), kind="lw", jitter=jitter, shrinkage=alpha)


def pca_whitening(X: np.ndarray, eps: float = 1e-12) -> Whitening:
    """PCA whitening learned without labels.

    Args:
        X: ``(N, D)`` float32 descriptors, row-major.
        eps: eigenvalues below ``eps·max`` are floored there (keeps ``P`` finite when N ≤ D).

    Returns:
        :class:`Whitening` with ``m`` the mean and ``P = Λ^{-1/2} Eᵀ`` (largest variance first).
    """
    X = _check_X(X)
    if len(X) < 2:
        raise DataError(f"cannot learn PCA whitening from {len(X)} descriptor(s)")
    m = X.mean(axis=0)
    Xc = X - m
    vals, E = _eig_desc(Xc.T @ Xc / len(X))
    vals = np.maximum(vals, eps * max(float(vals[0]), 1e-30))
    P = (E / np.sqrt(vals)[None, :]).T
    return Whitening(m=m.astype(np.float32), P=P.astype(np.float32), kind="pca")
