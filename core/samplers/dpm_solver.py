"""DPM-Solver++ (Lu et al. 2022, 'DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models', arXiv 2211.01095) in data-prediction form, in sigma form.

In the paper's VP notation x_t / alpha_t is our x and sigma_t / alpha_t our sigma, so its updates hold here
with alpha = 1 (sigma_t / sigma_s = e^{-h}, h = lambda_t - lambda_s, lambda = -log sigma). The solution
formula, the phi functions, the last step to sigma = 0 and the multistep loop are in ``exponential.py``
(shared with UniPC); this module holds the samplers: multistep 2M / 3M (and their SDE variant), singlestep
2S (optionally ancestral) and the singlestep SDE solver.
"""

from __future__ import annotations

import math

import torch

from .common import add_noise, ancestral_split, denoise, report, sigma_pairs
from .exponential import (
    check_final_step, exponential_step, final_step_to_zero, half_logsnr, interpolation_variable, multistep_loop,
)  # fmt: skip
from .registry import register

def dpmpp_multistep(
    denoiser,
    x,
    sigmas,
    *,
    cond=None,
    generator=None,
    callback=None,
    order: int = 2,
    eta: float = 0.0,
    midpoint: bool = False,
    variable: str = "lambda",
    final_step: str = "gaussian",
    sigma_data: float = 0.5,
    lower_order_final: bool = True,
) -> torch.Tensor:
    """Multistep DPM-Solver++ of ``order`` 1-3 (order 2: Algorithm 2), with eta > 0 the SDE variant.

    Each step integrates the polynomial through the last k denoised values exactly
    (``exponential_step``); at order 2 ``midpoint=True`` gives Algorithm 2's literal update, ``False``
    the exact phi_2 weight (both second order). ``variable='angle'`` interpolates D in the VP angle
    arctan(sigma / sigma_data) instead of lambda (``exponential.angle_variable``; midpoint then does not
    apply). eta > 0 adds noise sigma_t sqrt(1 - e^{-2 eta h}) n.
    """
    if not 1 <= order <= 3:
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    kappa = 1.0 + eta
    v = interpolation_variable(variable, sigma_data)

    def predict(x, nodes, lam_t):
        lam_s = nodes[-1][0]
        noise_std = math.exp(-lam_t) * math.sqrt(-math.expm1(-2.0 * eta * (lam_t - lam_s)))  # 0.0 for eta = 0
        return add_noise(exponential_step(x, lam_s, lam_t, nodes, kappa, midpoint, v), noise_std, generator)

    return multistep_loop(
        denoiser, x, sigmas, cond=cond, callback=callback, order=order, predict=predict,
        final_step=final_step, sigma_data=sigma_data, lower_order_final=lower_order_final,
    )  # fmt: skip


@register("dpmpp_2m")
def dpmpp_2m(
    denoiser, x, sigmas, *, cond=None, generator=None, callback=None, midpoint: bool = True,
    variable: str = "lambda", final_step: str = "gaussian", sigma_data: float = 0.5, lower_order_final: bool = True,
) -> torch.Tensor:  # fmt: skip
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): second-order multistep, one D per step.
    ``midpoint=False`` uses the exact phi_2 weight instead of Algorithm 2's; other options as
    ``dpmpp_multistep``. ``generator`` is accepted for the shared signature and unused."""
    return dpmpp_multistep(
        denoiser, x, sigmas, cond=cond, callback=callback, order=2, midpoint=midpoint, variable=variable,
        final_step=final_step, sigma_data=sigma_data, lower_order_final=lower_order_final,
    )  # fmt: skip


@register("dpmpp_3m")
def dpmpp_3m(
    denoiser, x, sigmas, *, cond=None, generator=None, callback=None, variable: str = "lambda",
    final_step: str = "gaussian", sigma_data: float = 0.5, lower_order_final: bool = True,
) -> torch.Tensor:  # fmt: skip
    """Third-order multistep DPM-Solver++ (Lu et al. 2022, the multistep method at order 3): D quadratic in lambda
    through the last three denoised values, integrated exactly (weight h^3 phi_3 on D''; the reference
    code's D2 term carries half of it, which leaves that update second order). Options as ``dpmpp_2m``."""
    return dpmpp_multistep(
        denoiser, x, sigmas, cond=cond, callback=callback, order=3, variable=variable,
        final_step=final_step, sigma_data=sigma_data, lower_order_final=lower_order_final,
    )  # fmt: skip


@register("dpmpp_2m_sde", stochastic=True)
def dpmpp_2m_sde(
    denoiser, x, sigmas, *, cond=None, generator=None, callback=None, eta: float = 1.0, order: int = 2,
    midpoint: bool = True, variable: str = "lambda", final_step: str = "gaussian", sigma_data: float = 0.5,
    lower_order_final: bool = True,
) -> torch.Tensor:  # fmt: skip
    """SDE-DPM-Solver++(2M) (after Lu et al. 2022; diffusers' sde-dpmsolver++): the multistep update of the
    reverse SDE with Langevin rate eta (eta = 1: the reverse-time VP SDE; eta = 0: dpmpp_2m), noise from
    ``generator``."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    return dpmpp_multistep(
        denoiser, x, sigmas, cond=cond, generator=generator, callback=callback, order=order, eta=eta,
        midpoint=midpoint, variable=variable, final_step=final_step, sigma_data=sigma_data,
        lower_order_final=lower_order_final,
    )  # fmt: skip


def singlestep_loop(denoiser, x, sigmas, *, cond, callback, step, final_step: str, sigma_data: float):
    """Loop of the singlestep solvers: ``step(x, D, sigma, sigma_next)`` for each interval, the final
    step to 0 by ``final_step_to_zero`` (one D, no intermediate stage)."""
    check_final_step(final_step)
    for i, sigma, sigma_next in sigma_pairs(sigmas):
        denoised = denoise(denoiser, x, sigma, cond)
        if sigma_next == 0.0:
            x = final_step_to_zero(x, denoised, sigma, final_step, sigma_data)
        else:
            x = step(x, denoised, sigma, sigma_next)
        report(callback, i, x, sigma, sigma_next, denoised)
    return x


@register("dpmpp_2s")
def dpmpp_2s(
    denoiser, x, sigmas, *, cond=None, generator=None, callback=None, eta: float = 0.0,
    final_step: str = "gaussian", sigma_data: float = 0.5,
) -> torch.Tensor:  # fmt: skip
    """DPM-Solver++(2S) (Lu et al. 2022, Algorithm 1, r = 1/2): per step a first-order stage to the
    lambda-midpoint, then the exact integral of D linear in lambda through both values; 2 D per step
    (1 for the final one). With eta > 0 each step is ancestral: the deterministic step goes to
    sigma_down and fresh noise sigma_up is added (``common.ancestral_split``); eta = 0 is deterministic."""

    def step(x, d0, sigma, sigma_next):
        sigma_down, sigma_up = ancestral_split(sigma, sigma_next, eta)
        if sigma_down == 0.0:
            return add_noise(final_step_to_zero(x, d0, sigma, final_step, sigma_data), sigma_up, generator)
        lam_s, lam_t = half_logsnr(sigma), half_logsnr(sigma_down)
        lam_mid = (lam_s + lam_t) / 2
        x_mid = exponential_step(x, lam_s, lam_mid, [(lam_s, d0)])
        d_mid = denoise(denoiser, x_mid, math.exp(-lam_mid), cond)
        return add_noise(exponential_step(x, lam_s, lam_t, [(lam_s, d0), (lam_mid, d_mid)]), sigma_up, generator)

    return singlestep_loop(
        denoiser, x, sigmas, cond=cond, callback=callback, step=step, final_step=final_step, sigma_data=sigma_data
    )


@register("dpmpp_sde", stochastic=True)
def dpmpp_sde(
    denoiser, x, sigmas, *, cond=None, generator=None, callback=None, eta: float = 1.0,
    final_step: str = "gaussian", sigma_data: float = 0.5,
) -> torch.Tensor:  # fmt: skip
    """Singlestep SDE-DPM-Solver++ (2nd order in the drift, r = 1/2; after Lu et al. 2022): the SDE step
    with kappa = 1 + eta to the lambda-midpoint with noise N_1, then the full step with D linear in lambda.
    The full step's noise is the same Brownian path: e^{-kappa h/2} N_1 + N_2, where N_1 and N_2 (std
    sigma_mid sqrt(1 - e^{-eta h}) and sigma_t sqrt(1 - e^{-eta h})) are independent draws from
    ``generator``; together they have the exact variance sigma_t^2 (1 - e^{-2 eta h}). 2 D per step."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    kappa = 1.0 + eta

    def step(x, d0, sigma, sigma_next):
        lam_s, lam_t = half_logsnr(sigma), half_logsnr(sigma_next)
        lam_mid = (lam_s + lam_t) / 2
        half_std = math.sqrt(-math.expm1(-eta * (lam_t - lam_s)))  # sqrt(1 - e^{-2 eta h/2})
        noise_1 = add_noise(torch.zeros_like(x), math.exp(-lam_mid) * half_std, generator)
        x_mid = exponential_step(x, lam_s, lam_mid, [(lam_s, d0)], kappa) + noise_1
        d_mid = denoise(denoiser, x_mid, math.exp(-lam_mid), cond)
        x_t = exponential_step(x, lam_s, lam_t, [(lam_s, d0), (lam_mid, d_mid)], kappa)
        x_t = x_t + math.exp(-kappa * (lam_t - lam_mid)) * noise_1
        return add_noise(x_t, sigma_next * half_std, generator)

    return singlestep_loop(
        denoiser, x, sigmas, cond=cond, callback=callback, step=step, final_step=final_step, sigma_data=sigma_data
    )
