"""Training objectives: a noise-level distribution times a weighting of the denoising error.

    L = E_{sigma ~ p(sigma), x0, n} [ lambda(sigma) || D(x0 + sigma n, sigma) - x0 ||^2 ]   (Karras et al. 2022, eq. 2)

``lambda`` weighs the x0-space squared error (mean over non-batch dims). With a ``Precond``
(D = c_skip x + c_out F) the loss is taken where the network lives, EDM eq. 8:

    lambda c_out^2 || F(c_in x, c_noise) - F_target ||^2,    F_target = (x0 - c_skip x) / c_out,

equal to lambda ||D - x0||^2 because c_out (F - F_target) = D - x0, but without the cancellation of
forming D - x0 at small sigma. A plain denoiser (no ``raw`` / ``target``) is scored in x0 space (c_out = 1).

Weightings, as the weight on the x0 error (SNR = 1 / sigma^2, the sigma-form signal-to-noise ratio):

    simple        1 / c_out^2: unweighted MSE in the model's own output space. eps: c_out^2 = sigma^2 -> SNR
                  (Ho et al. 2020, eq. 14: eps-MSE = SNR x0-MSE); v: c_out^2 = sigma^2 / (1 + sigma^2) -> SNR + 1;
                  x0: 1; EDM: EDM's lambda.
    snr           SNR, i.e. eps-MSE whatever the parameterization.
    min_snr       min(SNR, gamma) (Hang et al. 2023, eq. 12): x0-MSE min(SNR, gamma) = eps-MSE min(SNR, gamma) / SNR
                  = v-MSE min(SNR, gamma) / (SNR + 1), one weighting for every parameterization.
    edm           (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (Karras et al. 2022, Table 1).
    soft_min_snr  (1/SNR + 1/gamma)^-1 = 1 / (sigma^2 + 1/gamma), gamma = sigma_data^-2 by default: the soft
                  minimum of SNR and gamma of Crowson et al. 2024 (HDiT, sec. 4 / k-diffusion 'soft-min-snr',
                  there written as the F-space weight (sigma sigma_data)^2 / (sigma^2 + sigma_data^2)^2 with EDM
                  preconditioning).

The norm (``norm``; a recipe's ``objective.loss``): 'l2' above; 'l1' scores the same weighted residual
r = sqrt(lambda) c_out (F - F_target) = sqrt(lambda) (D - x0) by its mean absolute value, sqrt(lambda) |c_out|
mean|F - F_target|, where 'l2' takes lambda c_out^2 mean (F - F_target)^2 = mean r^2. So a weighting keeps its
meaning, the scale of the residual, under either norm: 'simple' is the plain L1 of the network's target (for eps:
WaveGrad's ||eps - eps_theta||_1, Chen et al. 2021, Algorithm 1, as a mean), 'snr' the L1 of eps whatever the
parameterization, 'edm' |F - F_target| under EDM preconditioning. (lambda c_out^2 on the L1 would weigh |D - x0| by
lambda itself: 'snr' with x0 prediction would be 1/sigma^2 |x0_hat - x0| = |eps_hat - eps| / sigma, not the L1 of
eps.)

Every objective is called as ``objective(model, x0, cond=None, generator=None) -> loss (B,)``; the caller
takes the mean. ``generator`` (one, or one per sample) drives both the noise level and the noise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from .denoiser import Cond
from .noise_levels import NOISE_LEVELS, DiscreteUniform, NoiseLevels
from .schedules import DiscreteSchedule
from .utils import Generator, append_dims, lookup, randn_like
from .vlb import DECODERS, reverse_log_variance, vlb_term

# ---------------------------------------------------------------------------------------------------
# Weightings: lambda(sigma) on the x0-space squared error, given sigma (B,) and the model's c_out (B,)


class Weighting(Protocol):
    def __call__(self, sigma: torch.Tensor, c_out: torch.Tensor) -> torch.Tensor: ...


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")


@dataclass(frozen=True)
class Simple:
    """lambda = 1 / c_out^2: plain MSE in the model's output space (Ho et al. 2020, L_simple, eq. 14)."""

    def __call__(self, sigma, c_out):
        return c_out.pow(-2)


@dataclass(frozen=True)
class SNRWeighting:
    """lambda = SNR = 1 / sigma^2 (the eps-MSE; Kingma et al. 2021, VDM, eq. 14 up to dSNR/dt)."""

    def __call__(self, sigma, c_out):
        return sigma.pow(-2)


@dataclass(frozen=True)
class MinSNR:
    """lambda = min(SNR, gamma) (Hang et al. 2023, Min-SNR-gamma, eq. 12; gamma = 5 in their experiments)."""

    gamma: float = field(default=5.0, metadata={"doc": "the SNR cap gamma (Hang et al. 2023)", "gt": 0})

    def __post_init__(self):
        _positive("gamma", self.gamma)

    def __call__(self, sigma, c_out):
        return sigma.pow(-2).clamp(max=self.gamma)


@dataclass(frozen=True)
class EDMWeighting:
    """lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (Karras et al. 2022, Table 1), which makes
    lambda c_out^2 = 1 under EDM preconditioning: unit weight on F."""

    sigma_data: float = 0.5

    def __post_init__(self):
        _positive("sigma_data", self.sigma_data)

    def __call__(self, sigma, c_out):
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2


@dataclass(frozen=True)
class SoftMinSNR:
    """lambda = (1/SNR + 1/gamma)^-1 = SNR gamma / (SNR + gamma), the soft min of SNR and gamma
    (Crowson et al. 2024, HDiT, soft-min-SNR); gamma defaults to sigma_data^-2, i.e. 1 / (sigma^2 + sigma_data^2)."""

    gamma: float | None = field(default=None, metadata={"doc": 'soft cap gamma; "none" = sigma_data^-2', "gt": 0})
    sigma_data: float = 0.5

    def __post_init__(self):
        _positive("sigma_data", self.sigma_data)
        if self.gamma is not None:
            _positive("gamma", self.gamma)

    def __call__(self, sigma, c_out):
        gamma = self.gamma if self.gamma is not None else self.sigma_data**-2
        return 1.0 / (sigma**2 + 1.0 / gamma)


# name -> class. Fields with a "doc" are the options a recipe sets; ``sigma_data`` comes from the recipe's diffusion.
WEIGHTINGS: dict[str, Callable[..., Weighting]] = {
    "simple": Simple,
    "snr": SNRWeighting,
    "min_snr": MinSNR,
    "edm": EDMWeighting,
    "soft_min_snr": SoftMinSNR,
}

# ---------------------------------------------------------------------------------------------------
# One network call, scored where the network lives


@dataclass(frozen=True)
class Prediction:
    """A model's answer at (x, sigma): x0_hat, the variance interpolation v (or None), the residual in the model's
    output space, F - F_target (D - x0 for a plain denoiser), shaped like x, and its c_out (B,) (1 for a plain
    denoiser)."""

    x0_hat: torch.Tensor
    v: torch.Tensor | None
    residual: torch.Tensor
    c_out: torch.Tensor

    @property
    def error(self) -> torch.Tensor:
        """The per-sample mean squared residual (B,)."""
        return self.residual.pow(2).flatten(1).mean(1)  # (B, *S) -> (B, D) -> (B,)


NORMS = ("l2", "l1")  # of the weighted residual (module docstring)


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")


def weighted_error(p: Prediction, weight: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """The per-sample loss (B,) of prediction ``p`` under x0-space weight lambda = ``weight`` (B,): 'l2'
    lambda c_out^2 mean (F - F_target)^2 = lambda ||D - x0||^2 (EDM eq. 8), or 'l1' sqrt(lambda) |c_out|
    mean|F - F_target| = sqrt(lambda) |D - x0|_1, the same residual's L1 (module docstring)."""
    _check_norm(norm)
    if norm == "l2":
        return weight * p.c_out**2 * p.error
    return weight.sqrt() * p.c_out.abs() * p.residual.abs().flatten(1).mean(1)  # (B, *S) -> (B, D) -> (B,)


def predict(model, x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, cond: Cond = None) -> Prediction:
    """Call the model once at x = x0 + sigma n. For a ``Precond`` the residual is F - F_target (EDM eq. 8);
    otherwise D - x0, with v from ``denoise_with_variance`` when the denoiser has it."""
    if hasattr(model, "raw") and hasattr(model, "target"):
        out, v = model.split_output(model.raw(x, sigma, cond))
        out = out.to(x.dtype)
        c_skip, c_out, _ = model.coefficients(sigma, sigma.ndim)  # (B,) each
        x0_hat = append_dims(c_skip, x.ndim) * x + append_dims(c_out, x.ndim) * out
        return Prediction(x0_hat, v, out - model.target(x, x0, sigma), c_out)
    if hasattr(model, "denoise_with_variance"):
        x0_hat, v = model.denoise_with_variance(x, sigma, cond)
    else:
        x0_hat, v = model(x, sigma, cond), None
    return Prediction(x0_hat, v, x0_hat - x0, torch.ones_like(sigma))


def _weighted_loss(model, x0, sigma, noise, weighting: Weighting, cond: Cond, norm: str = "l2"):
    """(the per-sample loss (B,) of ``weighted_error``, the prediction, the noisy input x)."""
    x = x0 + append_dims(sigma, x0.ndim) * noise
    p = predict(model, x, x0, sigma, cond)
    return weighted_error(p, weighting(sigma, p.c_out), norm), p, x


def denoising_loss(
    model, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, weighting: Weighting, cond: Cond = None,
    norm: str = "l2",
) -> torch.Tensor:
    """lambda(sigma) ||D(x0 + sigma n, sigma) - x0||^2 per sample (B,) ('l1': sqrt(lambda) |D - x0|_1, the mean
    over non-batch dims), computed in the model's output space."""
    return _weighted_loss(model, x0, sigma, noise, weighting, cond, norm)[0]


# ---------------------------------------------------------------------------------------------------
# Objectives


@dataclass(frozen=True)
class Objective:
    """Noise-level distribution x weighting x norm (EDM's loss, Karras et al. 2022, sec. 5, is LogNormal x
    EDMWeighting x 'l2'; WaveGrad's, Chen et al. 2021, its noise levels x Simple x 'l1' with eps prediction)."""

    noise_levels: NoiseLevels
    weighting: Weighting
    norm: str = "l2"

    def __post_init__(self):
        _check_norm(self.norm)

    def draw(self, x0: torch.Tensor, generator: Generator = None) -> dict[str, torch.Tensor]:
        """The randomness of one loss evaluation for a batch shaped like ``x0``: sigma (B,) and noise.
        Drawn apart from ``loss`` so a trainer can draw for a global batch and give each process its rows."""
        sigma = self.noise_levels.sample(x0.shape[0], generator, x0.device, x0.dtype)
        return {"sigma": sigma, "noise": randn_like(x0, generator)}

    def loss(self, model, x0: torch.Tensor, draws: dict[str, torch.Tensor], cond: Cond = None) -> torch.Tensor:
        """Per-sample loss (B,) for given ``draws``."""
        return denoising_loss(model, x0, draws["sigma"], draws["noise"], self.weighting, cond, self.norm)

    def __call__(self, model, x0: torch.Tensor, cond: Cond = None, generator: Generator = None) -> torch.Tensor:
        return self.loss(model, x0, self.draw(x0, generator), cond)


def _pop_fields(registry: dict, name: str, kwargs: dict, what: str):
    """Build ``registry[name]`` from the entries of ``kwargs`` that are its dataclass fields (popped)."""
    cls = lookup(registry, name, what)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: kwargs.pop(k) for k in list(kwargs) if k in names})


def make_objective(
    noise_levels: str | NoiseLevels = "lognormal", weighting: str | Weighting = "edm", norm: str = "l2", **kwargs
) -> Objective:
    """An ``Objective`` from registry names (or instances) and a norm; each other keyword goes to whichever of the
    two takes it, e.g. ``make_objective("discrete", "min_snr", schedule=s, gamma=5.0)``. Unused keywords are an
    error."""
    if isinstance(noise_levels, str):
        noise_levels = _pop_fields(NOISE_LEVELS, noise_levels, kwargs, "noise levels")
    if isinstance(weighting, str):
        weighting = _pop_fields(WEIGHTINGS, weighting, kwargs, "weighting")
    if kwargs:
        raise TypeError(f"make_objective: no noise-level distribution or weighting takes {', '.join(kwargs)}")
    return Objective(noise_levels, weighting, norm)


@dataclass(frozen=True)
class HybridLoss:
    """Improved DDPM's L_hybrid = L_simple + lambda L_vlb, lambda = 0.001 (Nichol & Dhariwal 2021, sec. 3.1).

    t ~ Uniform{1..T}; L_simple is ``weighting`` under ``norm`` (default: MSE in the model's output space, eps-MSE
    for eps); L_vlb is the bound's term at t (``vlb.vlb_term``, bits/dim) with mu_theta from a stop-gradient x0_hat
    and the learned variance exp(v log beta_t + (1 - v) log beta_tilde_t) (their eq. 15), so it trains only v.
    L_vlb = sum_t L_t is estimated by T L_t, so the per-sample loss is L_simple + lambda T L_t (their code's
    'num_timesteps / 1000' factor). The model must predict v: a ``Precond(learned_variance=True)`` or a
    ``VarianceDenoiser``.
    """

    schedule: DiscreteSchedule
    vlb_weight: float = 1e-3
    weighting: Weighting = Simple()
    decoder: str = "discrete"
    norm: str = "l2"

    def __post_init__(self):
        _check_norm(self.norm)
        if not isinstance(self.schedule, DiscreteSchedule):
            raise TypeError(f"schedule: HybridLoss needs a DiscreteSchedule, got {type(self.schedule).__name__}")
        if not self.vlb_weight >= 0:
            raise ValueError(f"vlb_weight must be >= 0, got {self.vlb_weight}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}")

    def terms(self, model, x0: torch.Tensor, index: torch.Tensor, noise: torch.Tensor, cond: Cond = None):
        """(L_simple (B,), L_t in bits/dim (B,)) at level indices ``index`` (B,) with noise ``noise``."""
        sigma = self.schedule.sigmas.to(x0.device)[index].to(x0.dtype)
        simple, p, x = _weighted_loss(model, x0, sigma, noise, self.weighting, cond, self.norm)
        if p.v is None:
            raise ValueError("HybridLoss needs a model that predicts the variance interpolation v")
        log_var = reverse_log_variance(self.schedule, index, "learned", p.v)
        return simple, vlb_term(x0, x, p.x0_hat.detach(), log_var, self.schedule, index, self.decoder)

    def draw(self, x0: torch.Tensor, generator: Generator = None) -> dict[str, torch.Tensor]:
        """Level indices t - 1 ~ Uniform{0..T-1} (B,) and noise shaped like ``x0``."""
        index = DiscreteUniform(self.schedule).sample_indices(x0.shape[0], generator, x0.device)
        return {"index": index, "noise": randn_like(x0, generator)}

    def loss(self, model, x0: torch.Tensor, draws: dict[str, torch.Tensor], cond: Cond = None) -> torch.Tensor:
        """Per-sample L_simple + lambda T L_t (B,) for given ``draws``."""
        simple, vlb = self.terms(model, x0, draws["index"], draws["noise"], cond)
        return simple + self.vlb_weight * self.schedule.num_steps * vlb

    def __call__(self, model, x0: torch.Tensor, cond: Cond = None, generator: Generator = None) -> torch.Tensor:
        return self.loss(model, x0, self.draw(x0, generator), cond)


@dataclass(frozen=True)
class NoisyClassification:
    """The loss of a noise-aware classifier for classifier guidance (Dhariwal & Nichol 2021, sec. 4): cross-
    entropy of p_phi(y | x0 + sigma n) at noise levels from ``noise_levels``, the label read from
    ``cond["class_labels"]`` (and withheld from the classifier). The model is a ``Precond`` whose backbone
    outputs logits (B, K); ``raw`` gives them, with the parameterization's input scaling c_in."""

    noise_levels: NoiseLevels

    def draw(self, x0: torch.Tensor, generator: Generator = None) -> dict[str, torch.Tensor]:
        sigma = self.noise_levels.sample(x0.shape[0], generator, x0.device, x0.dtype)
        return {"sigma": sigma, "noise": randn_like(x0, generator)}

    def loss(self, model, x0: torch.Tensor, draws: dict[str, torch.Tensor], cond: Cond = None) -> torch.Tensor:
        """Per-sample cross-entropy (B,)."""
        cond = dict(cond or {})
        labels = cond.pop("class_labels")
        x = x0 + append_dims(draws["sigma"], x0.ndim) * draws["noise"]
        logits = model.raw(x, draws["sigma"], cond).float()
        return torch.nn.functional.cross_entropy(logits, labels, reduction="none")

    def __call__(self, model, x0: torch.Tensor, cond: Cond = None, generator: Generator = None) -> torch.Tensor:
        return self.loss(model, x0, self.draw(x0, generator), cond)
