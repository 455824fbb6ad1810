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

Layout (as scikit-learn's ``decomposition/_nmf.py``): helpers first (thread scope, start, sweeps,
error), one ``_update_<solver>`` per solver, the one loop :func:`_fit` with the one convergence
check shared by both solvers and both modes, then the public :func:`nmf_fit` and :func:`nmf`.
Small CPU problems run on one thread inside a scoped context (:func:`torch_threads`): the
caller's thread count is restored afterwards.
"""
from __future__ import annotations

import functools
import inspect
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

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
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous count (also when
    the block raises). Scoped, never a process-wide change; nests (the innermost count wins)."""
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def cpu_threads_for(work: int, device: Union[str, torch.device, None] = "cpu") -> Iterator[None]:
    """Run the block on one CPU thread (:func:`torch_threads`) when ``work`` (multiply-adds per
    product) is below :data:`SMALL_PROBLEM`; on a GPU or for larger work, change nothing."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type != "cpu" or work >= SMALL_PROBLEM:
        yield
        return
    with torch_threads(1):
        yield


def small_threads(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a factoriser ``fn(A, k, ..., device=None)``: the call runs inside the scoped
    context :func:`cpu_threads_for` with A's size × k as the work (A and k given by position or
    name); the caller's thread count is restored when it returns or raises."""
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


def _start(V: torch.Tensor, k: int, seed: int, solver: str, H: Optional[ArrayLike],
           W0: Optional[ArrayLike], H0: Optional[ArrayLike]) -> Tuple[torch.Tensor, torch.Tensor]:
    """The starting factors on V's device: ``Wt (k, n)`` (W transposed: one factor per contiguous
    row) and ``H (k, m)``; the seeded :func:`init_factors` unless ``W0``/``H0`` (or a fixed ``H``)
    are given; HALS keeps every entry ≥ EPS (of a fixed H, none is changed)."""
    n, m = V.shape
    Wi, Hi = init_factors(n, m, k, float(V.mean()), seed)
    if W0 is not None:
        Wi = _as_tensor(W0, None).clone()
    if H is not None:
        Hi = _as_tensor(H, None).clone()
        if tuple(Hi.shape) != (k, m):
            raise DataError(f"fixed H has shape {tuple(Hi.shape)}, expected ({k}, {m})")
        if solver == "mu" and bool((Hi < 0).any()):
            raise DataError("fixed H has negative entries: use solver='hals' (NNLS for any H)")
    elif H0 is not None:
        Hi = _as_tensor(H0, None).clone()
    W_ = Wi.to(V.device).contiguous()
    H_ = Hi.to(V.device).contiguous()
    if tuple(W_.shape) != (n, k) or tuple(H_.shape) != (k, m):
        raise DataError(f"starting factors have shapes {tuple(W_.shape)}, {tuple(H_.shape)}; "
                        f"expected ({n}, {k}), ({k}, {m})")
    if solver == "hals":
        W_.clamp_(min=EPS)
        if H is None:
            H_.clamp_(min=EPS)
    return W_.T.contiguous(), H_


def _sweeps(inner: Union[int, str], n: int, m: int, k: int, alpha: float, delta: float) -> Tuple[int, int, float]:
    """HALS sweeps per W update and per H update, and the early-stop ratio δ of the sweeps:
    ``inner="auto"`` → at most ``1 + α·ρ`` with ρ the cost of the big product over the cost of one
    sweep (Gillis & Glineur), stopping at ``delta``; an int → exactly that many (δ = 0)."""
    if isinstance(inner, str):
        if inner != "auto":
            raise DataError(f"inner must be 'auto' or an integer, got {inner!r}")
        rho_W = 1 + (n * m * k + m * k * k) / (n * k * k + n * k)
        rho_H = 1 + (n * m * k + n * k * k) / (m * k * k + m * k)
        return max(1, int(1 + alpha * rho_W)), max(1, int(1 + alpha * rho_H)), delta
    s = max(1, int(inner))
    return s, s, 0.0


def _rel_err(v2: float, X: torch.Tensor, P: torch.Tensor, G: torch.Tensor) -> float:
    """``‖V − WH‖_F / ‖V‖_F`` from cached products, no n×m temporary: X is the factor updated
    last (``Wᵀ (k, n)`` or ``H (k, m)``), P its product with V (``(V Hᵀ)ᵀ`` or ``Wᵀ V``) and G the
    other factor's Gram (k, k), so ``‖V − WH‖² = ‖V‖² − 2⟨X, P⟩ + ⟨X Xᵀ, G⟩`` (``v2 = ‖V‖²``)."""
    e2 = v2 - 2.0 * float((X.double() * P.double()).sum()) + float(((X @ X.T).double() * G.double()).sum())
    return math.sqrt(max(e2, 0.0) / v2) if v2 > 0 else 0.0


def _converged(prev: float, e: float, tol: float) -> bool:
    """The stopping rule: the relative error improved by less than ``tol`` (relative) since ``prev``."""
    return tol > 0 and prev > 0 and (prev - e) / prev < tol


# ----------------------------------------------------------------------------------------------
# One update per solver: in place on X (k, p) ≥ 0 (one factor per contiguous row), given its
# cached product P (k, p) with V and the other factor's Gram G (k, k). For W: X = Wᵀ, P = (V Hᵀ)ᵀ,
# G = H Hᵀ; for H: X = H, P = Wᵀ V, G = Wᵀ W.
# ----------------------------------------------------------------------------------------------
def _update_mu(X: torch.Tensor, P: torch.Tensor, G: torch.Tensor, sweeps: int, delta: float) -> None:
    """Lee–Seung: ``X ← X ⊙ P / (G X + EPS)`` (``sweeps`` and ``delta`` do not apply)."""
    X.mul_(P.div((G @ X).add_(EPS)))


def _update_hals(X: torch.Tensor, P: torch.Tensor, G: torch.Tensor, sweeps: int, delta: float) -> None:
    """HALS: exact block minimisation ``X[j] ← max(EPS, X[j] + (P[j] − G[j] X) / G[j, j])`` over
    the k rows, repeated up to ``sweeps`` times while a sweep changes X by more than ``delta`` ×
    the first sweep's change."""
    k = X.shape[0]
    diag = G.diagonal().clamp_min(EPS).tolist()
    first = None
    for s in range(sweeps):
        track = s + 1 < sweeps and delta > 0
        if track:
            X_old = X.clone()
        for j in range(k):
            step = torch.addmv(P[j], X.T, G[j], alpha=-1.0)  # P[j] - G[j] @ X
            X[j].add_(step, alpha=1.0 / diag[j]).clamp_(min=EPS)
        if s + 1 >= sweeps:
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


_UPDATES: Dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, float], None]] = {
    "hals": _update_hals,
    "mu": _update_mu,
}


def _fit(V: torch.Tensor, Wt: torch.Tensor, H: torch.Tensor, update: Callable[..., None], *, fixed_H: bool,
         max_iter: int, tol: float, check_every: int, sweeps_W: int, sweeps_H: int,
         delta: float) -> Tuple[int, List[float], bool]:
    """The one loop of every solver, in place on ``Wt (k, n)`` and (unless ``fixed_H``) ``H (k, m)``:
    per iteration W then H by ``update``, and every ``check_every`` iterations (and at the last)
    the error check of :func:`_converged`. Returns (iterations run, errors, converged)."""
    v2 = float((torch.linalg.vector_norm(V, dim=1).double() ** 2).sum())  # ‖V‖², no n×m temporary
    if fixed_H:  # products with the fixed H, once (V @ Hᵀ reads V row-major: 4× faster than H @ Vᵀ)
        P, G = torch.mm(V, H.T).T.contiguous(), H @ H.T
        last = (Wt, P, G)
    else:
        last = (H, Wt @ V, Wt @ Wt.T)
    errors = [_rel_err(v2, *last)]
    it = 0
    for it in range(1, max_iter + 1):
        if not fixed_H:
            P, G = torch.mm(V, H.T).T.contiguous(), H @ H.T
        update(Wt, P, G, sweeps_W, delta)
        last = (Wt, P, G)
        if not fixed_H:
            WtV, WtW = Wt @ V, Wt @ Wt.T
            update(H, WtV, WtW, sweeps_H, delta)
            last = (H, WtV, WtW)
        if it % check_every == 0 or it == max_iter:
            errors.append(_rel_err(v2, *last))
            if _converged(errors[-2], errors[-1], tol):
                return it, errors, True
    return it, errors, False


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
    fixed_H = H is not None
    _check(Vt, k, fixed_H)
    n, m = Vt.shape
    k = int(k)
    Wt, H_ = _start(Vt, k, seed, solver, H, W0, H0)
    sweeps_W, sweeps_H, dlt = _sweeps(inner, n, m, k, alpha, delta)
    with torch.no_grad():
        it, errors, converged = _fit(Vt, Wt, H_, _UPDATES[solver], fixed_H=fixed_H, max_iter=max_iter, tol=tol,
                                     check_every=max(1, int(check_every)), sweeps_W=sweeps_W, sweeps_H=sweeps_H,
                                     delta=dlt)
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
