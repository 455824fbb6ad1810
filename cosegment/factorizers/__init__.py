"""One interface for every factoriser DFF can use: activations (n, C) ≥ 0 → W (n, k) ≥ 0, H (k, C).

``factorize(A, k, method="nmf", seed=0, **options)`` dispatches to one of its modules:

* ``nmf`` — :func:`cosegment.factorizers.nmf.nmf`: HALS by default (``solver="mu"`` is the
  paper's Lee–Seung); options max_iter, tol, solver, …
* ``sigmoid-nmf`` — :func:`cosegment.factorizers.sigmoid_nmf.sigmoid_nmf`: W⁺·σ(H) trained with
  Adam; options epochs, lr, nonlin, nonneg, init.
* ``deep-semi-nmf`` — :func:`cosegment.factorizers.deep_semi_nmf.deep_semi_nmf` (Trigeorgis et al.
  2014); options layers, pre_iter, fine_iter.

A new factoriser is one module here with a function ``(A, k, seed=0, **options) -> (W, H)`` and
one entry in :data:`FACTORIZERS`.

Every method returns concepts ``H`` such that ``A ≈ W @ H``, so new images project onto any of
them with :func:`project` (fixed-H HALS, exact non-negative least squares per position).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, Tuple, Union

import numpy as np
import torch

from cosegment.factorizers.deep_semi_nmf import deep_semi_nmf
from cosegment.factorizers.nmf import nmf
from cosegment.factorizers.sigmoid_nmf import sigmoid_nmf
from retrieval.core.errors import DataError

ArrayLike = Union[np.ndarray, torch.Tensor]


def _nmf(A: ArrayLike, k: int, seed: int = 0, **options) -> Tuple[ArrayLike, ArrayLike]:
    return nmf(A, k, seed=seed, **options)


FACTORIZERS: Dict[str, Callable[..., Tuple[ArrayLike, ArrayLike]]] = {
    "nmf": _nmf,
    "sigmoid-nmf": sigmoid_nmf,
    "deep-semi-nmf": deep_semi_nmf,
}


@dataclass
class Factors:
    """W: (n, k) float32 ≥ 0 (one heat-map column per factor); H: (k, C) float32 concepts;
    method: the factoriser's name; seconds: wall time of the factorisation."""

    W: ArrayLike
    H: ArrayLike
    method: str
    seconds: float


def factorize(A: ArrayLike, k: int, method: str = "nmf", seed: int = 0, **options) -> Factors:
    """Factorise activations ``A: (n, C) float32 ≥ 0`` (numpy, or a torch tensor on any device)
    into ``k`` factors with ``method`` (a key of :data:`FACTORIZERS`); arrays keep A's type."""
    if method not in FACTORIZERS:
        raise DataError(f"unknown factorizer '{method}' (choose from {', '.join(FACTORIZERS)})")
    if isinstance(A, torch.Tensor) and A.is_cuda:
        torch.cuda.synchronize(A.device)
    t0 = time.perf_counter()
    W, H = FACTORIZERS[method](A, k, seed=seed, **options)  # each one limits threads on small CPU problems
    if isinstance(W, torch.Tensor) and W.is_cuda:
        torch.cuda.synchronize(W.device)
    return Factors(W, H, method, time.perf_counter() - t0)


def project(A: ArrayLike, H: ArrayLike, max_iter: int = 100, tol: float = 1e-5) -> ArrayLike:
    """Heat maps of new activations ``A: (n, C) ≥ 0`` on fixed concepts ``H: (k, C)``:
    ``W (n, k) ≥ 0`` minimising ‖A − W H‖ (fixed-H HALS; H may have any sign)."""
    k = int(H.shape[0])
    W, _ = nmf(A, k, max_iter=max_iter, tol=tol, H=H, solver="hals")
    return W
