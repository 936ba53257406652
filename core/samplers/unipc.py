"""UniPC (Zhao et al. 2023, 'UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion
Models', arXiv 2302.04867) in data-prediction form, in sigma form.

With lambda = -log sigma and h = lambda_t - lambda_s (``dpm_solver`` module docstring), a step of
order p from the nodes (lambda_m, D_m), m = 0 the newest, is (their UniP / UniC, data prediction, alpha = 1)

    x_t = e^{-h} x_s + (1 - e^{-h}) D_0 + B(h) sum_m rho_m D1_m,   D1_m = (D_m - D_0) / r_m,
    r_m = (lambda_m - lambda_s) / h,

where rho solves the order conditions sum_m rho_m r_m^{k-1} = k! h phi_{k+1}(h) / B(h), k = 1..K, and a
single condition is replaced by rho = 1/2 (their choice, making B matter):
B(h) = h ('bh1') or 1 - e^{-h} ('bh2', where the order-2 predictor is DPM-Solver++(2M)).
UniP-p (predictor) uses the p - 1 older nodes; UniC-p (corrector) adds the node (lambda_t, D(x_t)) at
r = 1, which the next step evaluates anyway, and so raises the order to p + 1 at no extra D. D stays
the value at the predicted point. The corrector is not applied after the final step (it would need
D at sigma = 0); that step is ``exponential.final_step_to_zero``.

With ``variable='angle'`` D is interpolated in the VP angle instead of lambda (``exponential.angle_variable``):
UniP and UniC then take the exact integral of that polynomial (``exponential.exponential_step``), with no
B(h) and no rho = 1/2 convention; the orders are the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .exponential import Node, exponential_step, interpolation_variable, multistep_loop, phi, solve_small
from .registry import register

VARIANTS = ("bh1", "bh2")


def b_of_h(h: float, variant: str) -> float:
    """UniPC's B(h): h ('bh1') or 1 - e^{-h} ('bh2'), both h + O(h^2)."""
    return h if variant == "bh1" else -math.expm1(-h)


def unipc_rhos(rks: Sequence[float], h: float, variant: str) -> list[float]:
    """rho solving sum_m rho_m r_m^{k-1} = k! h phi_{k+1}(h) / B(h), k = 1..K (UniPC's order conditions);
    a single unknown is set to 1/2, as in the paper."""
    if len(rks) == 1:
        return [0.5]
    b_h = b_of_h(h, variant)
    rows = [[r ** (k - 1) for r in rks] for k in range(1, len(rks) + 1)]  # (K, K)
    rhs = [math.factorial(k) * h * phi(k + 1, h) / b_h for k in range(1, len(rks) + 1)]
    return solve_small(rows, rhs)


def unipc_update(
    x: torch.Tensor, nodes: Sequence[Node], lam_t: float, variant: str, new: torch.Tensor | None = None
) -> torch.Tensor:
    """One UniP step from the nodes (oldest first, the last at lambda_s), or with ``new`` = D(x_t) the
    UniC step that also uses the node at lambda_t (r = 1)."""
    lam_s, d0 = nodes[-1]
    h = lam_t - lam_s
    rks = [(lam - lam_s) / h for lam, _ in nodes[:-1]]
    diffs = [(d - d0) / r for r, (_, d) in zip(rks, nodes[:-1])]
    if new is not None:
        rks, diffs = rks + [1.0], diffs + [new - d0]
    x_t = math.exp(-h) * x - math.expm1(-h) * d0
    if not rks:
        return x_t
    return x_t + b_of_h(h, variant) * sum(rho * d1 for rho, d1 in zip(unipc_rhos(rks, h, variant), diffs))


@register("unipc")
def unipc(
    denoiser,
    x,
    sigmas,
    *,
    cond=None,
    generator=None,
    callback=None,
    order: int = 2,
    variant: str = "bh2",
    corrector: bool = True,
    variable: str = "lambda",
    final_step: str = "gaussian",
    sigma_data: float = 0.5,
    lower_order_final: bool = True,
) -> torch.Tensor:
    """Multistep UniPC: UniP-``order`` (1-3) then UniC (``corrector=False``: UniP alone), one D per step.
    ``variant`` picks B(h) ('bh1' or 'bh2'); ``variable``, ``final_step``, ``sigma_data`` and
    ``lower_order_final`` as in ``dpm_solver.dpmpp_multistep``. ``generator`` is accepted for the shared
    signature and unused."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if not 1 <= order <= 3:
        raise ValueError(f"order must be 1, 2 or 3, got {order}")

    v = interpolation_variable(variable, sigma_data)

    def predict(x, nodes, lam_t):
        if v is not None:
            return exponential_step(x, nodes[-1][0], lam_t, nodes, variable=v)
        return unipc_update(x, nodes, lam_t, variant)

    def correct(x_prev, nodes, lam_t, denoised):
        if v is not None:
            return exponential_step(x_prev, nodes[-1][0], lam_t, [*nodes, (lam_t, denoised)], variable=v)
        return unipc_update(x_prev, nodes, lam_t, variant, new=denoised)

    return multistep_loop(
        denoiser, x, sigmas, cond=cond, callback=callback, order=order, predict=predict,
        correct=correct if corrector else None, final_step=final_step, sigma_data=sigma_data,
        lower_order_final=lower_order_final,
    )  # fmt: skip
