"""Deep Semi-NMF (Trigeorgis, Bousmalis, Zafeiriou & Schuller, ICML 2014) as a DFF factoriser.

In the paper's layout the data is ``X: (p, n)`` (features × samples) and

    X ≈ Z₁ Z₂ ⋯ Z_m H_m,    H_i ≥ 0 (k_i, n),  Z_i of any sign (k_{i−1}, k_i),  k₀ = p.

For DFF, ``X = Aᵀ`` with activations ``A: (n, C) ≥ 0`` (n = image positions), so the deepest layer
gives the heat maps ``W = H_mᵀ: (n, k)`` ≥ 0 with ``k = k_m``, and the concepts are
``(Z₁⋯Z_m)ᵀ: (k, C)`` (mixed sign; ``A ≈ W @ H`` holds for the returned pair).

Semi-NMF of one layer (Ding, Li & Jordan 2010) alternates
    Z ← X H⁺  (least squares, H⁺ the pseudo-inverse),
    H ← H ⊙ sqrt(([ZᵀX]⁺ + [ZᵀZ]⁻ H) / ([ZᵀX]⁻ + [ZᵀZ]⁺ H)),
with ``[M]⁺ = (|M| + M)/2`` and ``[M]⁻ = (|M| − M)/2``; the loss ‖X − ZH‖ never increases.

Pre-training is layer-wise (X₁ = X; (Z_i, H_i) = SemiNMF(X_i, k_i); X_{i+1} = H_i), each layer
initialised by a short NMF of its (non-negative) input. Fine-tuning then minimises the whole
model's loss ‖X − Z₁⋯Z_m H_m‖: for i = 1…m, ``Z_i ← Ψ⁺ X H̃_i⁺`` with Ψ = Z₁⋯Z_{i−1} and
H̃_i = Z_{i+1}⋯Z_m H_m, then the multiplicative rule updates H_m with Z = Z₁⋯Z_m. (The paper also
updates the intermediate H_i, which do not enter the loss once the model is stacked; we skip them.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from cosegment.factorizers.nmf import _as_tensor, _check, nmf, small_threads
from retrieval.core.errors import DataError

ArrayLike = Union[np.ndarray, torch.Tensor]
EPS = 1e-10


def _pos(M: torch.Tensor) -> torch.Tensor:
    return (M.abs() + M) * 0.5


def _neg(M: torch.Tensor) -> torch.Tensor:
    return (M.abs() - M) * 0.5


def semi_nmf_update_H(X: torch.Tensor, Z: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """One multiplicative Semi-NMF update of ``H (k, n) ≥ 0`` for ``X (p, n) ≈ Z (p, k) H``.

    ``H ⊙ sqrt(([ZᵀX]⁺ + [ZᵀZ]⁻H) / ([ZᵀX]⁻ + [ZᵀZ]⁺H + ε))``; returns a new tensor.
    """
    ZtX = Z.T @ X
    ZtZ = Z.T @ Z
    num = _pos(ZtX) + _neg(ZtZ) @ H
    den = _neg(ZtX) + _pos(ZtZ) @ H
    return H * torch.sqrt(num / (den + EPS))


RTOL = 1e-6  # pseudo-inverse cut-off: deeper layers make H̃ = Z_{i+1}⋯Z_m H_m rank-deficient


def _gram_pinv(M: torch.Tensor) -> torch.Tensor:
    """``(M Mᵀ)⁺`` (k, k) in float64 with a cut-off suited to float32 data."""
    Md = M.double()
    return torch.linalg.pinv(Md @ Md.T, rtol=RTOL, hermitian=True)


def _lstsq_right(XHt: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """``X H⁺ = X Hᵀ (H Hᵀ)⁺`` given ``XHt = X Hᵀ (p, k)`` and ``H (k, n)``."""
    return (XHt.double() @ _gram_pinv(H)).to(XHt.dtype)


def semi_nmf_update_Z(X: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """Least-squares ``Z = X H⁺`` (p, k) for ``X (p, n) ≈ Z H (k, n)``."""
    return _lstsq_right(X @ H.T, H)


def _loss(X: torch.Tensor, Z: torch.Tensor, H: torch.Tensor, x2: float) -> float:
    """‖X − ZH‖²/‖X‖² from small products (no p×n residual)."""
    e2 = x2 - 2.0 * float((Z * (X @ H.T)).sum()) + float(((Z.T @ Z) * (H @ H.T)).sum())
    return max(e2, 0.0) / x2


@small_threads
def semi_nmf(
    X: torch.Tensor, k: int, n_iter: int = 100, seed: int = 0, H0: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Semi-NMF ``X (p, n) ≈ Z (p, k) · H (k, n)``, H ≥ 0, Z any sign; X ≥ 0 here (NMF start).

    The start is a 30-iteration HALS NMF of X (``H0`` overrides it).
    """
    if H0 is None:
        # NMF of Xᵀ (n, p) ≈ W (n, k) G (k, p): H = Wᵀ
        W, _ = nmf(X.T.contiguous(), k, max_iter=30, tol=0, seed=seed)
        H = W.T.contiguous()
    else:
        H = H0.clone()
    Z = semi_nmf_update_Z(X, H)
    for _ in range(int(n_iter)):
        H = semi_nmf_update_H(X, Z, H)
        Z = semi_nmf_update_Z(X, H)
    return Z, H


@dataclass
class DeepSemiNMFResult:
    """W: (n, k) ≥ 0 heat maps (H_mᵀ); H: (k, C) concepts ((Z₁⋯Z_m)ᵀ, any sign); Zs: the layer
    matrices; losses: relative loss ‖X − Z₁⋯Z_m H_m‖²/‖X‖² after pre-training and each fine-tune
    iteration."""

    W: ArrayLike
    H: ArrayLike
    Zs: List[ArrayLike] = field(default_factory=list)
    losses: List[float] = field(default_factory=list)


def default_layers(k: int) -> Tuple[int, ...]:
    """(k+2, k+1, k): e.g. (6, 5, 4) for k = 4."""
    return (k + 2, k + 1, k)


@small_threads
def deep_semi_nmf_fit(
    A: ArrayLike,
    k: int,
    *,
    layers: Optional[Sequence[int]] = None,
    pre_iter: int = 100,
    fine_iter: int = 100,
    seed: int = 0,
    device: Optional[Union[str, torch.device]] = None,
) -> DeepSemiNMFResult:
    """Deep Semi-NMF of activations ``A (n, C) ≥ 0``; the last layer has ``k`` factors.

    Args:
        A: numpy array or torch tensor (n, C) float32 ≥ 0.
        k: number of factors; ``layers[-1]`` must equal k.
        layers: layer sizes from the widest to the deepest, e.g. (6, 5, 4); default
            :func:`default_layers`.
        pre_iter: Semi-NMF iterations per layer in pre-training.
        fine_iter: fine-tuning iterations of the whole stack.
        seed: seeds each layer's NMF start.
    Returns:
        :class:`DeepSemiNMFResult` (numpy if A was numpy, else tensors on A's device).
    """
    as_numpy = isinstance(A, np.ndarray)
    At = _as_tensor(A, device)
    _check(At, k)
    layers = tuple(int(x) for x in (layers if layers is not None else default_layers(int(k))))
    if not layers or layers[-1] != k:
        raise DataError(f"deep-semi-nmf: the last layer size must equal k={k}, got layers {layers}")
    if any(s < 1 for s in layers):
        raise DataError(f"deep-semi-nmf: layer sizes must be ≥ 1, got {layers}")
    n, C = At.shape
    if layers[0] > min(n, C):
        raise DataError(f"deep-semi-nmf: first layer size {layers[0]} is larger than the data allows ({n}×{C})")
    X = At.T.contiguous()  # (C, n)
    x2 = float((X.double() ** 2).sum())
    if x2 == 0:
        raise DataError("deep-semi-nmf: all activations are zero")

    with torch.no_grad():
        Zs: List[torch.Tensor] = []
        Xi = X
        for i, ki in enumerate(layers):
            if ki > min(Xi.shape):
                raise DataError(f"deep-semi-nmf: layer {i + 1} size {ki} exceeds its input's rank bound {min(Xi.shape)}")
            Z, H = semi_nmf(Xi, ki, n_iter=pre_iter, seed=seed + i)
            Zs.append(Z)
            Xi = H
        Hm = Xi

        def prod(mats: List[torch.Tensor]) -> Optional[torch.Tensor]:
            out = None
            for M in mats:
                out = M if out is None else out @ M
            return out

        Zall = prod(Zs)
        losses = [_loss(X, Zall, Hm, x2)]
        m = len(Zs)
        for _ in range(int(fine_iter)):
            for i in range(m):
                Psi = prod(Zs[:i])  # (C, k_{i-1}) or None (identity)
                Ht = Hm if i == m - 1 else prod(Zs[i + 1:]) @ Hm  # (k_i, n)
                XHt = X @ Ht.T  # (C, k_i)
                if Psi is None:
                    Zs[i] = _lstsq_right(XHt, Ht)
                else:
                    # Ψ⁺ X H̃⁺ = (ΨᵀΨ)⁺ Ψᵀ (X H̃ᵀ) (H̃H̃ᵀ)⁺
                    left = _gram_pinv(Psi.T) @ (Psi.T @ XHt).double()
                    Zs[i] = (left @ _gram_pinv(Ht)).to(X.dtype)
            Zall = prod(Zs)
            Hm = semi_nmf_update_H(X, Zall, Hm)
            losses.append(_loss(X, Zall, Hm, x2))
        W = Hm.T.contiguous()
        Hc = Zall.T.contiguous()
    if as_numpy:
        return DeepSemiNMFResult(W.cpu().numpy(), Hc.cpu().numpy(), [z.cpu().numpy() for z in Zs], losses)
    return DeepSemiNMFResult(W, Hc, Zs, losses)


def deep_semi_nmf(A: ArrayLike, k: int, seed: int = 0, **options) -> Tuple[ArrayLike, ArrayLike]:
    """``A (n, C) ≥ 0`` → ``(W (n, k) ≥ 0, H (k, C))``; options as :func:`deep_semi_nmf_fit`."""
    r = deep_semi_nmf_fit(A, k, seed=seed, **options)
    return r.W, r.H
