"""Guidance as Denoiser -> Denoiser wrappers (guidance never lives on a network; CONTRIBUTING.md).

Every wrapper returns a plain denoiser ``D~(x, sigma, cond) -> x0_hat``, so samplers, thresholding and
further wrappers compose with it: ``dynamic_thresholding(classifier_free_guidance(D, 4.0, null))``.

In score form (Tweedie, D(x) = x + sigma^2 grad log p_sigma(x)) both kinds of guidance sample from
p(x) p(y|x)^w: classifier-free guidance computes grad log p(y|x) = grad log p(x|y) - grad log p(x)
from the conditional and unconditional denoisers, classifier guidance from a noisy classifier.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from .conditioning import null_conditions
from .denoiser import Cond, Denoiser
from .utils import append_dims, batch_sigma

LogProbFn = Callable[[torch.Tensor, torch.Tensor, Cond], torch.Tensor]


def _std_per_sample(t: torch.Tensor) -> torch.Tensor:
    """Standard deviation of each sample over its non-batch dims: (B, *S) -> (B,)."""
    return t.flatten(1).std(dim=1)  # (B, N) -> (B,)


def rescale_guidance(guided: torch.Tensor, conditional: torch.Tensor, phi: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2023, "Common diffusion noise schedules and sample steps are flawed",
    sec. 3.4): x_rescaled = x_cfg * std(x_pos) / std(x_cfg), x_final = phi x_rescaled + (1 - phi) x_cfg,
    with std per sample over the non-batch dims.

    Applied to the x0 prediction. Lin et al. motivate it by over-exposure: large w inflates the
    magnitude of the predicted *image*, so x0 is the quantity whose statistics should be restored. It is
    also what the denoiser contract returns. Rescaling eps instead would rescale x - x0, not x0, and at
    the zero-terminal-SNR level eps = x / sigma carries no information to rescale; for their v-prediction
    model at that level v = -x0, so both readings agree where the paper's fix matters most.
    """
    std_cfg, std_pos = _std_per_sample(guided), _std_per_sample(conditional)
    ratio = torch.where(std_cfg > 0, std_pos / std_cfg, torch.ones_like(std_cfg))
    factor = phi * ratio + (1.0 - phi)  # (B,)
    return guided * append_dims(factor, guided.ndim)


def _guided_rows(sigma: torch.Tensor, sigma_interval: tuple[float, float] | None):
    """Index of the rows that get guidance: a slice of all rows, or the (A,) rows with sigma in (lo, hi]
    (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval improves sample and
    distribution quality in diffusion models")."""
    if sigma_interval is None:
        return slice(None)
    lo, hi = sigma_interval
    return ((sigma > lo) & (sigma <= hi)).nonzero().squeeze(1)  # (A,)


def classifier_free_guidance(
    denoiser: Denoiser,
    scale: float,
    null_cond: Mapping[str, object],
    *,
    rescale: float = 0.0,
    sigma_interval: tuple[float, float] | None = None,
) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6 in x0 form):

        D_w(x) = D_u(x) + w (D_c(x) - D_u(x)),      D_u = D(x, sigma, null(cond)), D_c = D(x, sigma, cond)

    w = ``scale``; w = 1 is the conditional model and w = 0 the unconditional one (Ho & Salimans
    write (1 + w') eps_c - w' eps_u, i.e. w = 1 + w'). ``null_cond`` follows the convention of
    ``core.conditioning``. The network is called ONCE per evaluation on a batch of B + A rows: all B rows
    with their conditions, then the A guided rows with the null conditions (A = B unless
    ``sigma_interval=(lo, hi)`` restricts guidance to sigma in (lo, hi], where rows outside get the
    conditional model and no unconditional evaluation). ``rescale`` is phi of ``rescale_guidance``.
    """

    def guided(x: torch.Tensor, sigma: torch.Tensor, cond: Cond = None) -> torch.Tensor:
        sigma = batch_sigma(sigma, x)
        cond = dict(cond or {})
        uncond = null_conditions(cond, null_cond)
        rows = _guided_rows(sigma, sigma_interval)
        batch = x.shape[0]
        out = denoiser(
            torch.cat([x, x[rows]]),  # (B + A, *S)
            torch.cat([sigma, sigma[rows]]),  # (B + A,)
            {key: torch.cat([value, uncond[key][rows]]) for key, value in cond.items()},
        )
        d_cond, d_uncond = out[:batch], out[batch:]
        d_guided = d_uncond + scale * (d_cond[rows] - d_uncond)
        if rescale:
            d_guided = rescale_guidance(d_guided, d_cond[rows], rescale)
        result = d_cond.clone()
        result[rows] = d_guided
        return result

    return guided


def classifier_log_prob_grad(log_prob_fn: LogProbFn, x: torch.Tensor, sigma: torch.Tensor, cond: Cond):
    """grad_x log p_phi(y | x_sigma) of a noisy classifier; ``log_prob_fn(x, sigma, cond) -> (B,)``."""
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        log_p = log_prob_fn(x_in, sigma, cond)  # (B,); rows are independent, so d(sum)/dx_i = d(row i)/dx_i
        (grad,) = torch.autograd.grad(log_p.sum(), x_in)
    return grad


def classifier_guidance(denoiser: Denoiser, log_prob_fn: LogProbFn, scale: float) -> Denoiser:
    """Classifier guidance (Dhariwal & Nichol 2021, Algorithm 2, eps~ = eps - sqrt(1 - abar) s grad log p(y|x))
    in x0 form via Tweedie (x0 = x + sigma^2 score):

        D~(x, sigma) = D(x, sigma) + s sigma^2 grad_x log p_phi(y | x_sigma)

    ``log_prob_fn(x, sigma, cond) -> (B,)`` is a classifier trained on noisy inputs; it reads the target
    y from ``cond``. With the exact classifier, guiding the unconditional model with scale s equals
    classifier-free guidance with w = s, and guiding the conditional model equals w = 1 + s.
    """

    def guided(x: torch.Tensor, sigma: torch.Tensor, cond: Cond = None) -> torch.Tensor:
        sigma = batch_sigma(sigma, x)
        grad = classifier_log_prob_grad(log_prob_fn, x, sigma, cond)
        return denoiser(x, sigma, cond) + scale * append_dims(sigma**2, x.ndim) * grad.to(x.dtype)

    return guided


def reconstruction_guidance(denoiser: Denoiser, known: torch.Tensor, mask: torch.Tensor, weight: float,
                            noise: torch.Tensor) -> Denoiser:
    """Reconstruction guidance (Ho et al. 2022, "Video Diffusion Models", sec. 3.1, eq. 7) in sigma form: the
    known part x^a (``mask`` 1) of ``known`` conditions the generated part x^b, for any sampler.

        D~^b(x, sigma) = D^b(x_r, sigma) - (w_r / 2) grad_{x^b} || x^a - D^a(x_r, sigma) ||^2,   D~^a = x^a

    x_r is x with its known part replaced by x^a + sigma n (``editing.with_known``, one fixed n = ``noise`` per
    sample), as the replacement method does; w_r = ``weight`` (0: the replacement method; the paper uses w_r > 1).
    The paper writes z_t = alpha_t x + sigma_t eps and -(w_r alpha_t / 2) grad_{z^b}; with x = z_t / alpha_t,
    sigma = sigma_t / alpha_t, grad_z = grad_x / alpha_t and the alpha_t cancel. It is w_r sigma^2 times the
    score of the approximation q(x^a | x_sigma) = N(D^a(x_sigma), sigma^2 I) (Tweedie, D = x + sigma^2 score),
    the conditional score that replacement leaves out. One network call with a backward pass per evaluation.
    """
    from .editing import with_known

    mask = mask.to(known.dtype)

    def guided(x: torch.Tensor, sigma: torch.Tensor, cond: Cond = None) -> torch.Tensor:
        sigma = batch_sigma(sigma, x)
        with torch.enable_grad():
            x_in = with_known(x, sigma, known, mask, noise).detach().requires_grad_(True)
            x0 = denoiser(x_in, sigma, cond)
            error = (mask * (known - x0)).square().sum()  # sum over rows: rows are independent
            (grad,) = torch.autograd.grad(error, x_in) if weight else (torch.zeros_like(x_in),)
        return mask * known + (1 - mask) * (x0.detach() - (weight / 2) * grad.to(x.dtype))

    return guided
