"""The exponential-integrator pieces shared by DPM-Solver++ (``dpm_solver.py``) and UniPC (``unipc.py``).

With lambda = -log sigma (half the logSNR) the probability-flow ODE dx/dsigma = (x - D) / sigma reads

    dx/dlambda = D(x, lambda) - x,

and from lambda_s to lambda_t = lambda_s + h its solution is (variation of constants; Lu et al. 2022)

    x_t = e^{-h} x_s + int_0^h e^{-(h - u)} D(lambda_s + u) du.

A multistep solver of order k replaces D by the polynomial through k denoised values and integrates it
exactly: in lambda with the phi functions phi_k(z) = int_0^1 e^{-z (1 - tau)} tau^{k-1} / (k-1)! dtau
(DPM-Solver++, UniPC), or in another variable (``angle_variable``) by quadrature. The SDE variants add
Langevin noise at rate eta, dx = (1 + eta)(D - x) dlambda + sqrt(2 eta) sigma dW: the same integral with
kernel kappa e^{-kappa (h - u)}, kappa = 1 + eta, plus Gaussian noise of variance sigma_t^2 (1 - e^{-2 eta h}).

The grid ends at sigma = 0 (lambda = +inf), where only the zeroth-order term survives (h^k phi_k -> inf
for k >= 2). ``final_step_to_zero`` lands there without evaluating D at 0: 'denoised' is the first-order
step x = D (DPM-Solver's lower_order_final); 'gaussian' (default) is the exact PF-ODE map to 0 for data
N(mu, sigma_data^2 I), x_0 = D + w (x - D) with w = sqrt(r) / (1 + sqrt(r)), r = sigma_data^2 /
(sigma_data^2 + sigma^2). As sigma -> 0, w -> 1/2 for any data: along the ODE, x = x_0 + a t + O(t^2) in
t = sigma^2 and D = x - 2 t dx/dt, so (x + D) / 2 is x_0 to O(sigma^4) (an Euler step in t), where
x_0 = D is only O(sigma^2). For a large last sigma (a one-step grid) w -> 0, i.e. x_0 = D.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .common import denoise, report, sigma_pairs
from .multistep import gauss_legendre

Node = tuple[float, torch.Tensor]  # (lambda_j, D_j): a denoised value and the log-noise level it was taken at
FINAL_STEPS = ("gaussian", "denoised")
QUADRATURE_POINTS = 16  # Gauss-Legendre points for the moments in a variable other than lambda


def half_logsnr(sigma: float) -> float:
    """lambda = -log sigma = logSNR / 2 (Lu et al. 2022), for sigma > 0."""
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


Variable = Callable[[float], float]  # lambda -> the variable D is interpolated in


def angle_variable(sigma_data: float = 0.5) -> Variable:
    """The VP angle theta = arctan(sigma / sigma_data) as a function of lambda (alpha = cos theta, sigma_VP =
    sin theta for data of scale sigma_data). Along the PF ODE, D is smooth in 1/sigma at high noise and in
    sigma^2 at low noise; theta ~ pi/2 - sigma_data / sigma and ~ sigma / sigma_data there, whereas lambda
    reaches both ends only logarithmically, so polynomials in theta extrapolate D's saturation better."""
    return lambda lam: math.atan(math.exp(-lam) / sigma_data)


VARIABLES = {"lambda": None, "angle": angle_variable}


def interpolation_variable(name: str, sigma_data: float) -> Variable | None:
    """The ``variable`` option of the multistep samplers: 'lambda' (the papers'; None = closed-form moments)
    or 'angle' (``angle_variable``)."""
    if name not in VARIABLES:
        raise ValueError(f"variable must be one of {tuple(VARIABLES)}, got {name!r}")
    return VARIABLES[name](sigma_data) if VARIABLES[name] else None


def exponential_weights(
    lam_s: float, lam_t: float, node_lams: Sequence[float], kappa: float = 1.0, midpoint: bool = False,
    variable: Variable | None = None,
) -> tuple[float, list[float]]:  # fmt: skip
    """Coefficients (a, b_j) of x_t = a x_s + sum_j b_j D_j, the exact integral of
    kappa e^{-kappa (lambda_t - lambda)} against the polynomial through (node_lams[j], D_j):
    a = e^{-kappa h} and the b_j reproduce its moments for every monomial of degree m < k,

        sum_j b_j (lambda_j - lambda_s)^m / m! = kappa h^{m+1} phi_{m+1}(kappa h)    (Taylor terms of D, integrated).

    ``midpoint`` replaces the m = 1 moment by (1 - e^{-kappa h}) h / 2, which makes the order-2 multistep
    step exactly DPM-Solver++(2M), Algorithm 2 (D~ = (1 + 1/2r) D_0 - (1/2r) D_{-1}). With a ``variable``
    v(lambda) the polynomial is in v and the moments of (v - v_s)^m / m! are Gauss-Legendre integrals
    (``midpoint`` does not apply)."""
    h = lam_t - lam_s
    k = len(node_lams)
    if variable is None:
        moments = [kappa * h ** (m + 1) * phi(m + 1, kappa * h) for m in range(k)]
        if midpoint and k == 2:
            moments[1] = -math.expm1(-kappa * h) * h / 2
        offsets = [lam - lam_s for lam in node_lams]
    else:
        v_s = variable(lam_s)
        points, gl_weights = gauss_legendre(QUADRATURE_POINTS)
        quad = [((t + 1) * h / 2, w * h / 2) for t, w in zip(points, gl_weights)]  # (u, weight) on [0, h]
        kernel = [(variable(lam_s + u) - v_s, w * kappa * math.exp(-kappa * (h - u))) for u, w in quad]
        moments = [sum(w * dv**m for dv, w in kernel) / math.factorial(m) for m in range(k)]
        offsets = [variable(lam) - v_s for lam in node_lams]
    vandermonde = [[off**m / math.factorial(m) for off in offsets] for m in range(k)]  # (k, k)
    return math.exp(-kappa * h), solve_small(vandermonde, moments)


def exponential_step(
    x: torch.Tensor, lam_s: float, lam_t: float, nodes: Sequence[Node], kappa: float = 1.0, midpoint: bool = False,
    variable: Variable | None = None,
) -> torch.Tensor:  # fmt: skip
    """x_t = a x_s + sum_j b_j D_j with the weights of ``exponential_weights`` (DPM-Solver++ update)."""
    decay, weights = exponential_weights(lam_s, lam_t, [lam for lam, _ in nodes], kappa, midpoint, variable)
    return decay * x + sum(b * d for b, (_, d) in zip(weights, nodes))


def check_final_step(final_step: str) -> None:
    """Fail early, naming the choices, on an unknown final-step rule."""
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
