"""DPM-Solver++ (Lu et al. 2022, 'DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models', arXiv 2211.01095) in data-prediction form, in sigma form; and the exponential-integrator pieces
that UniPC (``unipc.py``) shares with it.

With lambda = -log sigma (half the logSNR) the probability-flow ODE dx/dsigma = (x - D) / sigma reads

    dx/dlambda = D(x, lambda) - x,

and from lambda_s to lambda_t = lambda_s + h its solution is (variation of constants, the paper's eq. 9)

    x_t = e^{-h} x_s + int_0^h e^{-(h - u)} D(lambda_s + u) du.

In the paper's VP notation x_t / alpha_t is our x and sigma_t / alpha_t our sigma, so its formulas hold
here with alpha = 1 (sigma_t / sigma_s = e^{-h}). A solver of order k replaces D by the polynomial in
lambda through k denoised values and integrates it exactly with the phi functions
phi_k(z) = int_0^1 e^{-z (1 - tau)} tau^{k-1} / (k-1)! dtau. The SDE variants (the paper's sec. 5 /
SDE-DPM-Solver++) add Langevin noise at rate eta: dx = (1 + eta)(D - x) dlambda + sqrt(2 eta) sigma dW,
the same integral with kernel kappa e^{-kappa (h - u)}, kappa = 1 + eta, plus Gaussian noise of variance
sigma_t^2 (1 - e^{-2 eta h}).

The grid ends at sigma = 0 (lambda = +inf), where only the zeroth-order term survives (h^k phi_k -> inf
for k >= 2). ``final_step`` lands there without evaluating D at 0: 'denoised' is the first-order step
x = D (DPM-Solver's lower_order_final); 'gaussian' (default) is the exact PF-ODE map to 0 for data
N(mu, sigma_data^2 I), x_0 = D + w (x - D) with w = sqrt(r) / (1 + sqrt(r)), r = sigma_data^2 /
(sigma_data^2 + sigma^2). As sigma -> 0, w -> 1/2 for any data: along the ODE, x = x_0 + a t + O(t^2) in
t = sigma^2 and D = x - 2 t dx/dt, so (x + D) / 2 is x_0 to O(sigma^4) (an Euler step in t), where
x_0 = D is only O(sigma^2). For a large last sigma (a one-step grid) w -> 0, i.e. x_0 = D.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .common import add_noise, ancestral_split, denoise, report, sigma_pairs
from .registry import register

Node = tuple[float, torch.Tensor]  # (lambda_j, D_j): a denoised value and the log-noise level it was taken at
FINAL_STEPS = ("gaussian", "denoised")

# ---------------------------------------------------------------------------------------------------
# Exponential-integrator math (shared with unipc.py)


def half_logsnr(sigma: float) -> float:
    """lambda = -log sigma = logSNR / 2 (Lu et al. 2022, sec. 2), for sigma > 0."""
    return -math.log(sigma)


def phi(k: int, z: float) -> float:
    """phi_k(z) = int_0^1 e^{-z (1 - tau)} tau^{k-1} / (k-1)! dtau, phi_0(z) = e^{-z} (Hochbruck & Ostermann
    2010, with the sign of the data-prediction form): the recursion phi_{k+1} = (1/k! - phi_k) / z, or its
    Taylor series sum_j (-z)^j / (j + k)! for z < 1 where the recursion would cancel."""
    if z < 1.0:
        return sum((-z) ** j / math.factorial(j + k) for j in range(30))
    value = math.exp(-z)
    for j in range(k):
        value = (1.0 / math.factorial(j) - value) / z
    return value


def solve_small(matrix: Sequence[Sequence[float]], rhs: Sequence[float]) -> list[float]:
    """Solve a small dense linear system (order conditions, k <= 4) in float64."""
    a = torch.tensor(matrix, dtype=torch.float64)  # (k, k)
    b = torch.tensor(rhs, dtype=torch.float64)  # (k,)
    return torch.linalg.solve(a, b).tolist()


def exponential_weights(
    lam_s: float, lam_t: float, node_lams: Sequence[float], kappa: float = 1.0, midpoint: bool = False
) -> tuple[float, list[float]]:
    """Coefficients (a, b_j) of x_t = a x_s + sum_j b_j D_j, the exact integral of
    kappa e^{-kappa (lambda_t - lambda)} against the polynomial through (node_lams[j], D_j):
    a = e^{-kappa h} and the b_j reproduce its moments for every monomial of degree m < k,

        sum_j b_j (lambda_j - lambda_s)^m / m! = kappa h^{m+1} phi_{m+1}(kappa h)    (paper eq. 9, expanded).

    ``midpoint`` replaces the m = 1 moment by (1 - e^{-kappa h}) h / 2, which makes the order-2 multistep
    step exactly DPM-Solver++(2M), Algorithm 2 (D~ = (1 + 1/2r) D_0 - (1/2r) D_{-1})."""
    h = lam_t - lam_s
    k = len(node_lams)
    moments = [kappa * h ** (m + 1) * phi(m + 1, kappa * h) for m in range(k)]
    if midpoint and k == 2:
        moments[1] = -math.expm1(-kappa * h) * h / 2
    vandermonde = [[(lam - lam_s) ** m / math.factorial(m) for lam in node_lams] for m in range(k)]  # (k, k)
    return math.exp(-kappa * h), solve_small(vandermonde, moments)


def exponential_step(
    x: torch.Tensor, lam_s: float, lam_t: float, nodes: Sequence[Node], kappa: float = 1.0, midpoint: bool = False
) -> torch.Tensor:
    """x_t = a x_s + sum_j b_j D_j with the weights of ``exponential_weights`` (DPM-Solver++ update)."""
    decay, weights = exponential_weights(lam_s, lam_t, [lam for lam, _ in nodes], kappa, midpoint)
    return decay * x + sum(b * d for b, (_, d) in zip(weights, nodes))


def check_final_step(final_step: str) -> None:
    if final_step not in FINAL_STEPS:
        raise ValueError(f"final_step must be one of {FINAL_STEPS}, got {final_step!r}")


def final_step_to_zero(
    x: torch.Tensor, denoised: torch.Tensor, sigma: float, rule: str = "gaussian", sigma_data: float = 0.5
) -> torch.Tensor:
    """The last step sigma -> 0 from x and D(x, sigma), without evaluating D at 0 (module docstring):
    'denoised' returns D; 'gaussian' returns D + w (x - D), w = sqrt(r) / (1 + sqrt(r)),
    r = sigma_data^2 / (sigma_data^2 + sigma^2): exact for N(mu, sigma_data^2 I), O(sigma^4) for any data."""
    if rule == "denoised":
        return denoised
    root_r = sigma_data / math.sqrt(sigma_data**2 + sigma**2)
    return denoised + root_r / (1.0 + root_r) * (x - denoised)


Predict = Callable[[torch.Tensor, Sequence[Node], float], torch.Tensor]
Correct = Callable[[torch.Tensor, Sequence[Node], float, torch.Tensor], torch.Tensor]


def multistep_loop(
    denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    cond=None,
    callback=None,
    order: int,
    predict: Predict,
    correct: Correct | None = None,
    final_step: str = "gaussian",
    sigma_data: float = 0.5,
    lower_order_final: bool = True,
) -> torch.Tensor:
    """The loop of the multistep exponential integrators (DPM-Solver++(2M/3M), UniPC): one D per step.

    Keeps the last ``order`` nodes (lambda_j, D_j), oldest first. A step uses k = min(order, #nodes)
    of them (warm-up), and with ``lower_order_final`` also k <= steps left, counting the final one
    (DPM-Solver's lower_order_final). ``predict(x, nodes, lambda_next)`` takes the step;
    ``correct(x_prev, nodes, lambda, D)`` (UniC) refines the point just predicted with the D evaluated
    there, before anything else uses it; D keeps its value at the predicted point (UniPC), and the final
    step moves it with the correction (dD/dx -> I as sigma -> 0).
    """
    check_final_step(final_step)
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    history: list[Node] = []
    nodes: list[Node] = []  # the nodes of the last prediction
    x_prev = x
    steps = len(sigmas) - 1
    for i, sigma, sigma_next in sigma_pairs(sigmas):
        denoised = denoise(denoiser, x, sigma, cond)
        lam = half_logsnr(sigma)
        shift = 0.0
        if correct is not None and nodes:
            corrected = correct(x_prev, nodes, lam, denoised)
            shift, x = corrected - x, corrected
        history = (history + [(lam, denoised)])[-order:]
        x_prev = x
        if sigma_next == 0.0:
            x, nodes = final_step_to_zero(x, denoised + shift, sigma, final_step, sigma_data), []
        else:
            k = min(order, len(history), steps - i) if lower_order_final else min(order, len(history))
            nodes = history[-k:]
            x = predict(x, nodes, half_logsnr(sigma_next))
        report(callback, i, x, sigma, sigma_next, denoised)
    return x


# ---------------------------------------------------------------------------------------------------
# DPM-Solver++ samplers


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
    final_step: str = "gaussian",
    sigma_data: float = 0.5,
    lower_order_final: bool = True,
) -> torch.Tensor:
    """Multistep DPM-Solver++ of ``order`` 1-3 (order 2: Algorithm 2), with eta > 0 the SDE variant.

    Each step integrates the polynomial through the last k denoised values exactly
    (``exponential_step``); ``midpoint=True`` gives Algorithm 2's literal order-2 update, the default
    the exact phi_2 weight (both second order). eta > 0 adds noise sigma_t sqrt(1 - e^{-2 eta h}) n.
    """
    if not 1 <= order <= 3:
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    kappa = 1.0 + eta

    def predict(x, nodes, lam_t):
        x_t = exponential_step(x, nodes[-1][0], lam_t, nodes, kappa, midpoint)
        return add_noise(x_t, math.exp(-lam_t) * math.sqrt(-math.expm1(-2.0 * eta * (lam_t - nodes[-1][0]))), generator)

    return multistep_loop(
        denoiser, x, sigmas, cond=cond, callback=callback, order=order, predict=predict,
        final_step=final_step, sigma_data=sigma_data, lower_order_final=lower_order_final,
    )  # fmt: skip


@register("dpmpp_2m")
def dpmpp_2m(
    denoiser, x, sigmas, *, cond=None, generator=None, callback=None, midpoint: bool = False,
    final_step: str = "gaussian", sigma_data: float = 0.5, lower_order_final: bool = True,
) -> torch.Tensor:  # fmt: skip
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): second-order multistep, one D per step.
    Options as ``dpmpp_multistep``; ``generator`` is accepted for the shared signature and unused."""
    return dpmpp_multistep(
        denoiser, x, sigmas, cond=cond, callback=callback, order=2, midpoint=midpoint,
        final_step=final_step, sigma_data=sigma_data, lower_order_final=lower_order_final,
    )  # fmt: skip


@register("dpmpp_3m")
def dpmpp_3m(
    denoiser, x, sigmas, *, cond=None, generator=None, callback=None,
    final_step: str = "gaussian", sigma_data: float = 0.5, lower_order_final: bool = True,
) -> torch.Tensor:  # fmt: skip
    """Third-order multistep DPM-Solver++ (Lu et al. 2022, sec. 4.2 with order 3): D quadratic in lambda
    through the last three denoised values, integrated exactly (weight h^3 phi_3 on D''; the reference
    code's D2 term carries half of it, which leaves that update second order). Options as ``dpmpp_2m``."""
    return dpmpp_multistep(
        denoiser, x, sigmas, cond=cond, callback=callback, order=3,
        final_step=final_step, sigma_data=sigma_data, lower_order_final=lower_order_final,
    )  # fmt: skip


@register("dpmpp_2m_sde", stochastic=True)
def dpmpp_2m_sde(
    denoiser, x, sigmas, *, cond=None, generator=None, callback=None, eta: float = 1.0, order: int = 2,
    midpoint: bool = False, final_step: str = "gaussian", sigma_data: float = 0.5, lower_order_final: bool = True,
) -> torch.Tensor:  # fmt: skip
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, sec. 5): the multistep update of the reverse SDE with Langevin
    rate eta (eta = 1: the reverse-time VP SDE; eta = 0: dpmpp_2m), noise from ``generator``."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    return dpmpp_multistep(
        denoiser, x, sigmas, cond=cond, generator=generator, callback=callback, order=order, eta=eta,
        midpoint=midpoint, final_step=final_step, sigma_data=sigma_data, lower_order_final=lower_order_final,
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
    """Singlestep SDE-DPM-Solver++ (2nd order in the drift, r = 1/2; Lu et al. 2022, sec. 5): the SDE step
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
