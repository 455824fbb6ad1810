"""Sigmoid-NMF: a one-layer non-linear factoriser ``A ≈ W⁺ · σ(H)`` trained with Adam.

A drop-in alternative to :func:`cosegment.factorizers.nmf.nmf` for Deep Feature Factorization: activations
``A: (n, C) ≥ 0`` → heat maps ``W: (n, k) ≥ 0`` and concepts ``σ(H): (k, C)`` in (0, 1). The sigmoid
bounds each concept's channel weights, so the magnitudes live in W (the heat maps) and a concept
cannot explain a region by one huge channel weight.

Choices (keyword options, all compared in the factoriser table of the README):

``nonlin``   ``"sigmoid"`` (default, ``W⁺·σ(H)``) or ``"relu"`` (``W⁺·H⁺``, i.e. NMF by Adam — the
             control that isolates the effect of the non-linearity).
``nonneg``   how W stays ≥ 0: ``"clamp"`` (default; projected Adam, W ← max(W, 0) after each step),
             ``"relu"`` (the forward uses max(W, 0); a negative entry receives no gradient) or
             ``"softplus"`` (W = softplus(θ), always > 0).
``init``     ``"nmf"`` (default; start from a short HALS NMF, rows of H rescaled into (0, 1) and
             the scale moved to W, so training starts at NMF's fit) or ``"random"``
             (``|N(0,1)|``-scaled W and H ~ N(0, 1), as in the paper's random start).
``loss``     mean squared reconstruction error divided by mean(A²) (scale-free learning rate).

The returned concepts are the effective ``σ(H)`` (k, C) ≥ 0, so ``A ≈ W @ H`` holds for the
returned pair like for NMF, and new images project onto them with fixed-H NMF.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from cosegment.factorizers.nmf import _as_tensor, _check, init_factors, nmf, small_threads
from retrieval.core.errors import DataError

ArrayLike = Union[np.ndarray, torch.Tensor]
NONLINS = ("sigmoid", "relu")
NONNEGS = ("clamp", "relu", "softplus")
INITS = ("nmf", "random")


@dataclass
class SigmoidNMFResult:
    """W: (n, k) ≥ 0; H: (k, C) effective concepts (σ(H) or H⁺) ≥ 0; losses: the relative loss
    ``mean((A − W·H)²)/mean(A²)`` after each epoch (first entry: at the start)."""

    W: ArrayLike
    H: ArrayLike
    losses: List[float] = field(default_factory=list)


def _inv_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


@small_threads
def sigmoid_nmf_fit(
    A: ArrayLike,
    k: int,
    *,
    epochs: int = 300,
    lr: float = 0.05,
    nonlin: str = "sigmoid",
    nonneg: str = "clamp",
    init: str = "nmf",
    init_iter: int = 20,
    seed: int = 0,
    device: Optional[Union[str, torch.device]] = None,
) -> SigmoidNMFResult:
    """Fit ``A (n, C) ≥ 0 ≈ W⁺ (n, k) · σ(H) (k, C)`` by full-batch Adam.

    Args:
        A: numpy array or torch tensor (n, C) float32 ≥ 0; a tensor stays on its device.
        k: number of factors (1 ≤ k ≤ min(n, C)).
        epochs: Adam steps (full batch).
        lr: Adam learning rate (parameters are O(1): W is scaled by the data's RMS internally).
        nonlin, nonneg, init: see the module docstring.
        init_iter: HALS iterations of the NMF initialisation.
        seed: seeds the initialisation.
    Returns:
        :class:`SigmoidNMFResult` (numpy if A was numpy, else tensors on A's device).
    """
    for name, val, allowed in (("nonlin", nonlin, NONLINS), ("nonneg", nonneg, NONNEGS), ("init", init, INITS)):
        if val not in allowed:
            raise DataError(f"sigmoid-nmf: unknown {name} '{val}' (choose from {', '.join(allowed)})")
    as_numpy = isinstance(A, np.ndarray)
    At = _as_tensor(A, device)
    _check(At, k)
    n, C = At.shape
    dev = At.device
    ms = float((At.double() ** 2).mean())
    if ms == 0:
        raise DataError("sigmoid-nmf: all activations are zero")
    rms = math.sqrt(ms)

    # Initial effective factors W0 (n, k) ≥ 0 and P0 (k, C) ≥ 0 with A ≈ W0 P0.
    if init == "nmf":
        W0, P0 = nmf(At, k, max_iter=init_iter, tol=0, seed=seed, solver="hals")
    else:
        W0, P0 = init_factors(n, C, k, float(At.mean()), seed)
        W0, P0 = W0.to(dev), P0.to(dev)
    if nonlin == "sigmoid":
        if init == "nmf":
            # rescale each concept into (0, 1): P0[j] / (1.25 max) ≤ 0.8, scale moved into W
            s = P0.amax(dim=1).clamp_min(1e-12) * 1.25
            P0 = (P0 / s[:, None]).clamp(1e-3, 1 - 1e-3)
            W0 = W0 * s[None, :]
            H0 = torch.logit(P0)
        else:
            g = torch.Generator().manual_seed(int(seed) + 1)
            H0 = torch.randn(k, C, generator=g).to(dev)
            W0 = W0 * (float(At.mean()) / max(float(W0.mean()) * k * 0.5, 1e-12))  # E[σ(N(0,1))] = 0.5
    else:
        H0 = P0
    # Parameters are kept O(1): W = rms · Wn.
    Wn0 = (W0 / rms).clamp_min(0.0)
    if nonneg == "softplus":
        Wp = _inv_softplus(Wn0.clamp_min(1e-4))
    else:
        Wp = Wn0
    Wp = Wp.detach().clone().requires_grad_(True)
    Hp = H0.detach().clone().to(dev).requires_grad_(True)
    opt = torch.optim.Adam([Wp, Hp], lr=lr)

    def w_eff() -> torch.Tensor:
        if nonneg == "softplus":
            return F.softplus(Wp)
        if nonneg == "relu":
            return F.relu(Wp)
        return Wp

    def h_eff() -> torch.Tensor:
        return torch.sigmoid(Hp) if nonlin == "sigmoid" else F.relu(Hp)

    An = At / rms
    losses: List[float] = []
    with torch.no_grad():
        losses.append(float(((An - w_eff() @ h_eff()) ** 2).mean()))
    for _ in range(int(epochs)):
        opt.zero_grad(set_to_none=True)
        loss = ((An - w_eff() @ h_eff()) ** 2).mean()
        loss.backward()
        opt.step()
        if nonneg == "clamp":
            with torch.no_grad():
                Wp.clamp_(min=0.0)
        if nonlin == "relu":
            with torch.no_grad():
                Hp.clamp_(min=0.0)
        losses.append(float(loss.detach()))
    with torch.no_grad():
        W = (w_eff() * rms).detach().contiguous()
        H = h_eff().detach().contiguous()
        losses.append(float(((An - w_eff() @ h_eff()) ** 2).mean()))
    # losses[i] for i ≥ 1 is the loss *before* step i; keep [start, after each step]
    losses = [losses[0]] + losses[2:]
    if as_numpy:
        return SigmoidNMFResult(W.cpu().numpy(), H.cpu().numpy(), losses)
    return SigmoidNMFResult(W, H, losses)


def sigmoid_nmf(A: ArrayLike, k: int, seed: int = 0, **options) -> Tuple[ArrayLike, ArrayLike]:
    """``A (n, C) ≥ 0`` → ``(W (n, k) ≥ 0, σ(H) (k, C))``; options as :func:`sigmoid_nmf_fit`."""
    r = sigmoid_nmf_fit(A, k, seed=seed, **options)
    return r.W, r.H
