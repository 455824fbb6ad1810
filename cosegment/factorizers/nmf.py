"""Non-negative matrix factorisation V ≈ W H for the Frobenius loss, in torch (CPU or GPU), float32.

Deep Feature Factorization (Collins, Achanta & Süsstrunk, ECCV 2018) factorises the activations of
a CNN layer over a set of images, ``V: (N·h·w, C)``, into heat maps ``W: (N·h·w, k)`` and concept
vectors ``H: (k, C)``. Two solvers share one interface:

``solver="mu"``
    Lee & Seung multiplicative updates (the paper's choice), W then H each iteration:
    ``W ← W ⊙ (V Hᵀ) / (W H Hᵀ)``, ``H ← H ⊙ (Wᵀ V) / (Wᵀ W H)``.
``solver="hals"`` (default)
    Hierarchical alternating least squares with inner iterations on cached products (Cichocki &
    Phan 2009; the accelerated scheme of Gillis & Glineur 2012). Per outer iteration the expensive
    products ``V Hᵀ`` (n×k) and ``Wᵀ V`` (k×m) are computed once, and the cheap column/row sweeps
    over the k factors are repeated on them while they still improve (at most ``1 + α·ρ`` sweeps, ρ
    the ratio of the product's cost to a sweep's cost; stop when a sweep changes the factor by less
    than ``δ`` = 0.03 times the first sweep's change; Gillis & Glineur use 0.1, but a smaller δ
    halved the iterations to a given error on DFF activations). Each sweep is an exact block
    minimisation, so the loss never increases; in practice it reaches a given error many times
    sooner than ``mu``.

Both start from the same initialisation, ``|N(0, 1)|·sqrt(mean(V)/k)`` drawn from ``seed`` on the
CPU (W first, then H), so results do not depend on the device. Every ``check_every`` iterations the
relative error ``‖V − WH‖_F / ‖V‖_F`` is evaluated from the cached products (no n×m temporary) and
the run stops when it improved by less than ``tol`` (relative) since the last check.

Fixed-H mode (``H=`` given) solves only W — the projection of new images onto concepts learned
before (``V Hᵀ`` and ``H Hᵀ`` are computed once, so each iteration costs O(n·k²)).
"""
from __future__ import annotations

import functools
import inspect
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from retrieval.core.errors import DataError

ArrayLike = Union[np.ndarray, torch.Tensor]
SOLVERS = ("hals", "mu")
EPS = 1e-10  # floor of MU denominators; HALS keeps entries ≥ this (exact zeros stall MU)


#: Below this many multiply-adds per product (n·m·k), CPU work runs on one thread: the products
#: are too small to gain from threads, and on a busy machine every multi-threaded op can wait
#: milliseconds for a descheduled worker (measured: 3 s instead of 10 ms for a 400×192, k=2 NMF).
SMALL_PROBLEM = 1 << 22


@contextmanager
def cpu_threads_for(work: int, device: Union[str, torch.device, None] = "cpu") -> Iterator[None]:
    """Run the block on one CPU thread when ``work`` (multiply-adds per product) is small."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type != "cpu" or work >= SMALL_PROBLEM or torch.get_num_threads() == 1:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def small_threads(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a factoriser ``fn(A, k, ..., device=None)``: the call runs under
    :func:`cpu_threads_for` with A's size × k as the work (A and k given by position or name)."""
    a_name, k_name = list(inspect.signature(fn).parameters)[:2]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {**dict(zip((a_name, k_name), args)), **kwargs}
        A, k = given.get(a_name), given.get(k_name)
        shape = tuple(getattr(A, "shape", ()))
        work = shape[0] * shape[1] * int(k) if len(shape) == 2 and isinstance(k, (int, np.integer)) else 0
        dev = A.device if isinstance(A, torch.Tensor) else (kwargs.get("device") or "cpu")
        with cpu_threads_for(work, dev):
            return fn(*args, **kwargs)

    return wrapper


@dataclass
class NMFResult:
    """Outcome of :func:`nmf_fit`.

    W: (n, k) float32 ≥ 0; H: (k, m) float32 ≥ 0 (numpy if V was numpy, else torch on V's device);
    n_iter: outer iterations run; errors: relative errors ``‖V−WH‖/‖V‖`` at each check (the first
    is at the initialisation); converged: stopped by ``tol`` rather than ``max_iter``.
    """

    W: ArrayLike
    H: ArrayLike
    n_iter: int
    errors: List[float] = field(default_factory=list)
    converged: bool = False


def init_factors(n: int, m: int, k: int, mean: float, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The starting point of every solver: ``|N(0,1)|·sqrt(mean/k)``, W (n, k) then H (k, m).

    Drawn on the CPU from ``torch.Generator().manual_seed(seed)``; float32 CPU tensors.
    """
    g = torch.Generator().manual_seed(int(seed))
    scale = math.sqrt(max(float(mean), 0.0) / k)
    W = torch.randn(n, k, generator=g, dtype=torch.float32).abs_().mul_(scale)
    H = torch.randn(k, m, generator=g, dtype=torch.float32).abs_().mul_(scale)
    return W, H


def _as_tensor(V: ArrayLike, device: Optional[Union[str, torch.device]]) -> torch.Tensor:
    if isinstance(V, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(V, dtype=np.float32))
    elif isinstance(V, torch.Tensor):
        t = V.detach().to(torch.float32)
    else:
        raise TypeError(f"V must be a numpy array or a torch tensor, got {type(V).__name__}")
    if device is not None:
        t = t.to(device)
    return t


def _check(V: torch.Tensor, k: int, fixed_H: bool = False) -> None:
    if V.dim() != 2:
        raise DataError(f"NMF needs a 2-D matrix, got shape {tuple(V.shape)}")
    n, m = V.shape
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"k must be a positive integer, got {k!r}")
    if n == 0 or m == 0:
        raise DataError(f"NMF of an empty matrix ({n}×{m})")
    if not fixed_H and k > min(n, m):
        raise DataError(f"k={k} is larger than the data allows: the matrix is {n}×{m} (k ≤ {min(n, m)})")
    mn, mx = (float(x) for x in torch.aminmax(V))  # one pass; NaN propagates, ±inf shows
    if not (math.isfinite(mn) and math.isfinite(mx)):
        raise DataError("NMF input contains NaN or infinite values")
    if mn < 0:
        raise DataError("NMF input has negative entries (activations must be ≥ 0, e.g. after ReLU)")


def _rel_err(v2: float, W_AV: torch.Tensor, G1: torch.Tensor, G2: torch.Tensor) -> float:
    """sqrt(‖V‖² − 2⟨·,·⟩ + ⟨G1, G2⟩)/‖V‖ from cached products; W_AV is ⟨W, VHᵀ⟩ or ⟨H, WᵀV⟩."""
    e2 = v2 - 2.0 * float(W_AV) + float((G1.double() * G2.double()).sum())
    return math.sqrt(max(e2, 0.0) / v2) if v2 > 0 else 0.0


def _hals_sweeps(X: torch.Tensor, A: torch.Tensor, B: torch.Tensor, max_sweeps: int, delta: float) -> None:
    """In place, over the k rows of ``X (k, n) ≥ 0`` (one factor per contiguous row), given the
    cached ``A (k, n)`` (e.g. H Vᵀ) and the Gram ``B (k, k)``: exact block minimisation
    ``X[j] ← max(EPS, X[j] + (A[j] − B[j] X) / B[j, j])``, repeated up to ``max_sweeps`` times while
    a sweep changes X by more than ``delta`` × the first sweep's change."""
    k = X.shape[0]
    diag = B.diagonal().clamp_min(EPS).tolist()
    first = None
    for s in range(max_sweeps):
        track = s + 1 < max_sweeps and delta > 0
        if track:
            X_old = X.clone()
        for j in range(k):
            step = torch.addmv(A[j], X.T, B[j], alpha=-1.0)  # A[j] - B[j] @ X
            X[j].add_(step, alpha=1.0 / diag[j]).clamp_(min=EPS)
        if s + 1 >= max_sweeps:
            break
        if not track:
            continue
        change = float(torch.linalg.vector_norm(X_old.sub_(X)))
        if first is None:
            first = change
            if first == 0.0:
                break
        elif change <= delta * first:
            break


@small_threads
def nmf_fit(
    V: ArrayLike,
    k: int,
    max_iter: int = 200,
    tol: float = 1e-4,
    seed: int = 0,
    H: Optional[ArrayLike] = None,
    solver: str = "hals",
    *,
    W0: Optional[ArrayLike] = None,
    H0: Optional[ArrayLike] = None,
    check_every: int = 10,
    inner: Union[int, str] = "auto",
    alpha: float = 0.5,
    delta: float = 0.03,
    device: Optional[Union[str, torch.device]] = None,
) -> NMFResult:
    """Factorise ``V: (n, m) float32 ≥ 0`` as ``W (n, k) ≥ 0`` times ``H (k, m) ≥ 0``.

    Args:
        V: numpy array or torch tensor (n, m), non-negative. A tensor stays on its device.
        k: number of factors, 1 ≤ k ≤ min(n, m) (else :class:`DataError`).
        max_iter: outer iterations at most (one W and one H update each).
        tol: stop when the relative error improved by less than ``tol`` (relative) over the last
            ``check_every`` iterations; 0 runs exactly ``max_iter`` iterations.
        seed: seed of the initialisation (see :func:`init_factors`).
        H: fixed concepts (k, m) — solve only W (projection onto saved concepts); with
            ``solver="hals"`` H may have any sign (each row of W is then an exact NNLS solution).
        solver: ``"hals"`` (default, fast) or ``"mu"`` (Lee–Seung, the paper's).
        W0, H0: optional starting factors (override the seeded initialisation).
        check_every: iterations between error checks (the stopping rule and ``errors``).
        inner: HALS sweeps per update: ``"auto"`` (the adaptive rule with ``alpha``/``delta``)
            or a fixed int.
        device: where to compute when V is numpy (default CPU).

    Returns:
        :class:`NMFResult`; arrays are numpy float32 if V was numpy, else torch float32 on V's device.
    """
    if solver not in SOLVERS:
        raise DataError(f"unknown NMF solver '{solver}' (choose from {', '.join(SOLVERS)})")
    as_numpy = isinstance(V, np.ndarray)
    Vt = _as_tensor(V, device)
    dev = Vt.device
    fixed_H = H is not None
    _check(Vt, k, fixed_H)
    n, m = Vt.shape
    k = int(k)
    Wi, Hi = init_factors(n, m, k, float(Vt.mean()), seed)
    if W0 is not None:
        Wi = _as_tensor(W0, None).clone()
    if fixed_H:
        Hi = _as_tensor(H, None).clone()
        if tuple(Hi.shape) != (k, m):
            raise DataError(f"fixed H has shape {tuple(Hi.shape)}, expected ({k}, {m})")
        if solver == "mu" and bool((Hi < 0).any()):
            raise DataError("fixed H has negative entries: use solver='hals' (NNLS for any H)")
    elif H0 is not None:
        Hi = _as_tensor(H0, None).clone()
    W_ = Wi.to(dev).contiguous()
    H_ = Hi.to(dev).contiguous()
    if tuple(W_.shape) != (n, k) or tuple(H_.shape) != (k, m):
        raise DataError(f"starting factors have shapes {tuple(W_.shape)}, {tuple(H_.shape)}; expected ({n}, {k}), ({k}, {m})")
    if solver == "hals":
        W_.clamp_(min=EPS)
        if not fixed_H:
            H_.clamp_(min=EPS)

    # ‖V‖²: float32 row norms (one pass, no n×m temporary), squared and summed in float64
    v2 = float((torch.linalg.vector_norm(Vt, dim=1).double() ** 2).sum())
    if isinstance(inner, str):
        if inner != "auto":
            raise DataError(f"inner must be 'auto' or an integer, got {inner!r}")
        # cost of the big product over the cost of one sweep (Gillis & Glineur's ρ)
        rho_W = 1 + (n * m * k + m * k * k) / (n * k * k + n * k)
        rho_H = 1 + (n * m * k + n * k * k) / (m * k * k + m * k)
        sweeps_W = max(1, int(1 + alpha * rho_W))
        sweeps_H = max(1, int(1 + alpha * rho_H))
        dlt = delta
    else:
        sweeps_W = sweeps_H = max(1, int(inner))
        dlt = 0.0
    check_every = max(1, int(check_every))

    errors: List[float] = []
    converged = False
    it = 0
    Wt = W_.T.contiguous()  # (k, n): one factor per contiguous row
    del W_
    with torch.no_grad():
        if fixed_H:
            A = torch.mm(Vt, H_.T).T.contiguous()  # (k, n) = (V Hᵀ)ᵀ, fixed (V @ Hᵀ reads V row-major: 4× faster than H @ Vᵀ)
            B = H_ @ H_.T  # (k, k), fixed
            errors.append(_rel_err(v2, (Wt.double() * A.double()).sum(), Wt @ Wt.T, B))
            for it in range(1, max_iter + 1):
                if solver == "mu":
                    Wt.mul_(A.div((B @ Wt).add_(EPS)))
                else:
                    _hals_sweeps(Wt, A, B, sweeps_W, dlt)
                if it % check_every == 0 or it == max_iter:
                    e = _rel_err(v2, (Wt.double() * A.double()).sum(), Wt @ Wt.T, B)
                    prev = errors[-1]
                    errors.append(e)
                    if tol > 0 and prev > 0 and (prev - e) / prev < tol:
                        converged = True
                        break
        else:
            WtV = Wt @ Vt  # (k, m)
            errors.append(_rel_err(v2, (H_.double() * WtV.double()).sum(), Wt @ Wt.T, H_ @ H_.T))
            for it in range(1, max_iter + 1):
                A = torch.mm(Vt, H_.T).T.contiguous()  # (k, n)
                B = H_ @ H_.T  # (k, k)
                if solver == "mu":
                    Wt.mul_(A.div((B @ Wt).add_(EPS)))
                else:
                    _hals_sweeps(Wt, A, B, sweeps_W, dlt)
                WtV = Wt @ Vt  # (k, m)
                WtW = Wt @ Wt.T  # (k, k)
                if solver == "mu":
                    H_.mul_(WtV.div((WtW @ H_).add_(EPS)))
                else:
                    _hals_sweeps(H_, WtV, WtW, sweeps_H, dlt)
                if it % check_every == 0 or it == max_iter:
                    e = _rel_err(v2, (H_.double() * WtV.double()).sum(), WtW, H_ @ H_.T)
                    prev = errors[-1]
                    errors.append(e)
                    if tol > 0 and prev > 0 and (prev - e) / prev < tol:
                        converged = True
                        break
    W_ = Wt.T.contiguous()
    if as_numpy:
        return NMFResult(W_.cpu().numpy(), H_.cpu().numpy(), it, errors, converged)
    return NMFResult(W_, H_, it, errors, converged)


def nmf(
    V: ArrayLike,
    k: int,
    max_iter: int = 200,
    tol: float = 1e-4,
    seed: int = 0,
    H: Optional[ArrayLike] = None,
    solver: str = "hals",
    **kwargs,
) -> Tuple[ArrayLike, ArrayLike]:
    """``V: (n, m) ≥ 0`` → ``(W (n, k), H (k, m))``, both ≥ 0, float32; see :func:`nmf_fit`.

    With ``H`` given only W is solved (projection onto fixed concepts) and H is returned unchanged.
    """
    r = nmf_fit(V, k, max_iter=max_iter, tol=tol, seed=seed, H=H, solver=solver, **kwargs)
    return r.W, r.H


def relative_error(V: ArrayLike, W: ArrayLike, H: ArrayLike) -> float:
    """Exact ``‖V − W H‖_F / ‖V‖_F`` (forms the n×m residual; for checks and benchmarks)."""
    Vt, Wt, Ht = (_as_tensor(x, None).double() for x in (V, W, H))
    Wt, Ht = Wt.to(Vt.device), Ht.to(Vt.device)
    nv = float(torch.linalg.vector_norm(Vt))
    return float(torch.linalg.vector_norm(Vt - Wt @ Ht)) / nv if nv > 0 else 0.0
