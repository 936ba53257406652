"""Driving diffusers' schedulers on the mixture through their documented API (set_timesteps,
scale_model_input, step), with an exact epsilon model and honest NFE counting.

The "network" receives what a diffusers UNet receives, the (scaled) latent and the timestep t, and
answers eps = (x - D(x, sigma_t)) / sigma_t, with sigma_t = sqrt((1 - abar_t) / abar_t) read off the
timestep (log-linear between integer steps, the inverse of diffusers' ``_sigma_to_t``) and
x = input * sqrt(1 + sigma_t^2): a VP latent z_t = x / sqrt(1 + sigma^2) for DDIM / PNDM / DPM-Solver /
UniPC / DEIS, and the same after ``scale_model_input`` for the sigma-form Euler / Heun / LMS / KDPM2
family. So a scheduler that rounds timesteps (DPMSolver with Karras sigmas) is answered for the
rounded t, as a real network would be.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import torch

STOCHASTIC = {"EulerAncestralDiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "DDPMScheduler"}


@dataclass(frozen=True)
class SchedulerConfig:
    """A diffusers scheduler class name and the config options that differ from its defaults."""

    cls: str
    options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.cls.replace('Scheduler', '')}({opts})"

    @property
    def stochastic(self) -> bool:
        return self.cls in STOCHASTIC or str(self.options.get("algorithm_type", "")).startswith("sde")


def _placements(cls: str, options: dict | None = None, karras: bool = True) -> list[SchedulerConfig]:
    """One config per documented timestep placement that starts at t = T - 1 like the reference
    ('leading' starts lower and is left out): 'linspace', 'trailing' and, where offered, Karras sigmas."""
    options = options or {}
    out = [SchedulerConfig(cls, {"timestep_spacing": s, **options}) for s in ("linspace", "trailing")]
    if karras:
        out.append(SchedulerConfig(cls, {"use_karras_sigmas": True, **options}))
    return out


def deterministic_configs() -> list[SchedulerConfig]:
    """The deterministic schedulers with the documented options worth trying on each: placements,
    solver order, lower_order_final, DPM-Solver's Lu lambdas / heun solver type, UniPC's bh1 / bh2.
    UniPC 'bh1' with the default final_sigmas_type='zero' returns NaN (B(h) = -h at h = inf), so it is
    also run with final_sigmas_type='sigma_min'."""
    configs = _placements("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": True}, karras=False)
    configs += _placements("PNDMScheduler", {"skip_prk_steps": True, "set_alpha_to_one": True}, karras=False)
    for cls in ("LMSDiscreteScheduler", "EulerDiscreteScheduler", "HeunDiscreteScheduler", "KDPM2DiscreteScheduler"):
        configs += _placements(cls)
    for order in (2, 3):
        configs += _placements("DPMSolverMultistepScheduler", {"solver_order": order})
        configs.append(SchedulerConfig("DPMSolverMultistepScheduler", {"solver_order": order, "use_lu_lambdas": True}))
        for extra in ({}, {"use_karras_sigmas": True}):
            configs.append(SchedulerConfig("DPMSolverSinglestepScheduler", {"solver_order": order, **extra}))
        configs += _placements("UniPCMultistepScheduler", {"solver_order": order, "solver_type": "bh2"})
        bh1 = {"solver_order": order, "solver_type": "bh1", "final_sigmas_type": "sigma_min"}
        configs += _placements("UniPCMultistepScheduler", bh1)
        configs += _placements("DEISMultistepScheduler", {"solver_order": order})
    no_lof = {"solver_order": 3, "use_karras_sigmas": True, "lower_order_final": False}
    configs.append(SchedulerConfig("DPMSolverMultistepScheduler", no_lof))
    configs.append(SchedulerConfig("DPMSolverMultistepScheduler", {"use_karras_sigmas": True, "solver_type": "heun"}))
    return configs


def stochastic_configs() -> list[SchedulerConfig]:
    """Ancestral / SDE schedulers, scored on the distribution metric only (DPMSolverSDEScheduler needs
    torchsde and is left out)."""
    return [
        SchedulerConfig("EulerAncestralDiscreteScheduler", {"timestep_spacing": "trailing"}),
        SchedulerConfig("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}),
        SchedulerConfig("DDPMScheduler", {"clip_sample": False, "timestep_spacing": "trailing"}),
        SchedulerConfig(
            "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}
        ),
    ]


class EpsModel:
    """eps(input, t) for the exact denoiser of ``mixture`` on ``schedule``; counts its calls."""

    def __init__(self, mixture, schedule):
        self.mixture, self.schedule, self.calls = mixture, schedule, 0

    def __call__(self, model_input: torch.Tensor, t) -> torch.Tensor:
        self.calls += 1
        t = torch.as_tensor(t, dtype=torch.float64).reshape(1)
        sigma = float(self.schedule.index_to_sigma(t))
        x = model_input.to(torch.float64) * math.sqrt(1.0 + sigma**2)  # z_t -> sigma form
        return ((x - self.mixture(x, sigma)) / sigma).to(model_input.dtype)


def build(config: SchedulerConfig, beta_schedule: str, beta_start: float, beta_end: float):
    """A scheduler instance with eps prediction and the benchmark's betas."""
    import diffusers

    cls = getattr(diffusers, config.cls)
    return cls(
        num_train_timesteps=1000, beta_start=beta_start, beta_end=beta_end, beta_schedule=beta_schedule,
        prediction_type="epsilon", **config.options,
    )  # fmt: skip


def run_scheduler(scheduler, steps: int, model: EpsModel, x_T: torch.Tensor, sigma_max: float, seed: int = 0):
    """Sample from the sigma-form start x_T = sigma_max n; returns the final sample (what a pipeline
    decodes). Sigma-form schedulers (init_noise_sigma > 1) take x_T itself, VP ones z_T = x_T / sqrt(1 +
    sigma_max^2), so every scheduler starts from the reference's point."""
    scheduler.set_timesteps(steps)
    sigma_form = float(scheduler.init_noise_sigma) > 1.0
    sample = x_T.clone() if sigma_form else x_T / math.sqrt(1.0 + sigma_max**2)
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    extra = {"generator": torch.Generator().manual_seed(seed)} if takes_generator else {}
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(sample, t)
        eps = model(model_input, t)
        sample = scheduler.step(eps, t, sample, **extra).prev_sample
    return sample.to(torch.float64)


def calls_per_run(make, model: EpsModel, probe: torch.Tensor, sigma_max: float):
    """steps -> model calls of a dry run on a one-sample probe (Heun / KDPM2 call twice per step)."""

    def calls(steps: int) -> int:
        model.calls = 0
        run_scheduler(make(), steps, model, probe, sigma_max)
        return model.calls

    return calls
