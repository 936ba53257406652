"""Adaptive Dormand-Prince 5(4) Runge-Kutta integration in torch, batched with one step size per sample.

Dormand & Prince 1980, "A family of embedded Runge-Kutta formulae" (the tableau of scipy's RK45 and
MATLAB's ode45): a 7-stage, first-same-as-last pair whose 5th-order solution is propagated and whose
4th-order companion estimates the local error. Step-size control and the initial step follow Hairer,
Norsett & Wanner, "Solving Ordinary Differential Equations I", sec. II.4.

Every sample of the batch has its own time t_i and step h_i, accepted or rejected on its own error, so
a sample's solution does not depend on the rest of the batch (per-sample randomness and solutions, CONTRIBUTING.md); ``f(t, y)`` is
called with ``t`` of shape (B,), which is exactly how a denoiser takes sigma. Computation stays in
``y0``'s dtype (use float64 for tight tolerances).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from .utils import append_dims

# Butcher tableau of DOPRI5: stage i is evaluated at t + C[i] h, y + h sum_j A[i][j] k_j. The last row
# of A holds the 5th-order weights b, so the 7th stage point is the new solution (FSAL).
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
# b - b_hat: 5th-order minus 4th-order weights (b_hat = 5179/57600, 0, 7571/16695, 393/640,
# -92097/339200, 187/2100, 1/40), over all 7 stages.
_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)
_ERROR_ORDER = 4  # the embedded estimate is O(h^5): exponent 1 / (4 + 1) in the controller
_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0

ODEFunc = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ODEResult(NamedTuple):
    """Solution at t1 (B, ...), function evaluations (batched calls), and accepted / rejected steps per sample."""

    y: torch.Tensor
    nfe: int
    accepted: torch.Tensor
    rejected: torch.Tensor


def _rms(t: torch.Tensor) -> torch.Tensor:
    """Root mean square per sample: (B, ...) -> (B,)."""
    return t.flatten(1).square().mean(1).sqrt()  # (B, N) -> (B,)


def _combine(ks: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """sum_j w_j k_j over the nonzero weights."""
    return sum(w * k for w, k in zip(weights, ks) if w != 0.0)


def _dopri_step(f: ODEFunc, t: torch.Tensor, y: torch.Tensor, k1: torch.Tensor, h: torch.Tensor):
    """One DOPRI5 step of signed size h (B,): returns y_new, f(t + h, y_new) and the error estimate."""
    hb = append_dims(h, y.ndim)
    ks = [k1]
    for c, a in zip(_C[1:], _A[1:]):
        point = y + hb * _combine(ks, a)
        ks.append(f(t + c * h, point))
    return point, ks[-1], hb * _combine(ks, _E)  # the 7th stage point is y_new (FSAL)


def _initial_step(f, t0, y0, f0, direction, rtol, atol):
    """Starting step size |h| per sample (Hairer et al., sec. II.4, "starting step size"): one extra call."""
    scale = atol + rtol * y0.abs()
    d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    f1 = f(t0 + direction * h0, y0 + direction * append_dims(h0, y0.ndim) * f0)
    d2 = _rms((f1 - f0) / scale) / h0
    d12 = torch.maximum(d1, d2)
    h1 = torch.where(d12 <= 1e-15, (h0 * 1e-3).clamp(min=1e-6), (0.01 / d12) ** (1 / (_ERROR_ORDER + 1)))
    return torch.minimum(100 * h0, h1)


def rk45(
    f: ODEFunc,
    y0: torch.Tensor,
    t0: float,
    t1: float,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    first_step: float | None = None,
    max_steps: int = 10_000,
) -> ODEResult:
    """Integrate dy/dt = f(t, y) from t0 to t1 (either direction) with adaptive Dormand-Prince 5(4).

    y0: (B, ...); f(t, y) with t (B,) returns dy/dt shaped like y. A step is accepted when
    rms(err / (atol + rtol max(|y|, |y_new|))) <= 1 for that sample; the next step is
    h * clip(0.9 err^(-1/5), 0.2, 10). Raises RuntimeError after ``max_steps`` attempted steps.
    """
    batch, span = y0.shape[0], abs(t1 - t0)
    direction = 1.0 if t1 >= t0 else -1.0
    t = torch.full((batch,), float(t0), dtype=y0.dtype, device=y0.device)
    accepted = torch.zeros(batch, dtype=torch.long, device=y0.device)
    rejected = torch.zeros_like(accepted)
    if span == 0:
        return ODEResult(y0, 0, accepted, rejected)
    y, k1, nfe = y0, f(t, y0), 1
    if first_step is None:
        h, nfe = _initial_step(f, t, y0, k1, direction, rtol, atol), nfe + 1
    else:
        h = torch.full_like(t, float(first_step))
    done = torch.zeros(batch, dtype=torch.bool, device=y0.device)
    for _ in range(max_steps):
        if bool(done.all()):
            return ODEResult(y, nfe, accepted, rejected)
        remaining = (t1 - t) * direction  # (B,) >= 0
        last = h >= remaining
        step = torch.where(done, torch.zeros_like(h), torch.where(last, remaining, h))
        y_new, k_new, err_vec = _dopri_step(f, t, y, k1, direction * step)
        nfe += 6
        err = _rms(err_vec / (atol + rtol * torch.maximum(y.abs(), y_new.abs())))  # (B,)
        ok = (err <= 1.0) & ~done
        t = torch.where(ok, torch.where(last, torch.full_like(t, float(t1)), t + direction * step), t)
        y = torch.where(append_dims(ok, y.ndim), y_new, y)
        k1 = torch.where(append_dims(ok, y.ndim), k_new, k1)
        accepted, rejected = accepted + ok.long(), rejected + (~ok & ~done).long()
        done = done | (ok & last)
        factor = (_SAFETY * err.pow(-1 / (_ERROR_ORDER + 1))).clamp(_MIN_FACTOR, _MAX_FACTOR)
        h = step * torch.where(ok, factor, factor.clamp(max=1.0))
    raise RuntimeError(f"rk45 did not reach t1 = {t1} within {max_steps} steps")
