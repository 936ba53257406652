"""The recipe schema: frozen, typed dataclasses for every section of a recipe TOML file.

One section per concern: [data], [model], [diffusion], [objective], [optim], [train], [sample].
Datasets and backbones keep their own keys in an ``options`` table, checked against the class
registered for their name (``register_options``). Cross-field rules live in each ``check``.
The names accepted for schedules, parameterizations, c_noise, noise levels, weightings and grid
spacings are those of ``polydiff.core`` (tests/recipes/test_config.py keeps them in step); samplers
are looked up in the sampler registry itself.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config import Config, ConfigError, register_options, registered_options, setting, show
from .reference import markdown_reference

Modality = Literal["toy", "image", "video", "audio"]
ScheduleName = Literal["linear", "scaled_linear", "cosine", "sigmoid", "vp", "ve", "edm", "shifted_cosine"]
DISCRETE_SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")  # DiscreteSchedule in core.schedules
Parameterization = Literal["eps", "x0", "v", "edm"]
CNoise = Literal["edm", "discrete", "sqrt_alpha_bar", "logsnr"]
NoiseLevels = Literal["discrete", "continuous", "lognormal", "wavegrad"]
Weighting = Literal["simple", "snr", "min_snr", "edm", "soft_min_snr"]
Spacing = Literal["karras", "logsnr", "warped_logsnr", "linspace", "leading", "trailing"]


def _sampler_names():
    """The sampler registry, imported only when a sampler name is checked (it pulls in torch)."""
    from ..core.samplers import SAMPLERS

    return SAMPLERS


def _registered(kind: str):
    """The names with options registered under ``kind``, looked up when a name is checked."""
    return functools.partial(registered_options, kind)


def _needs_discrete(key: tuple[str, ...], value, schedule: str, schedule_ref: str) -> None:
    """Raise unless ``schedule`` is discrete: ``key`` = ``value`` is defined on T discrete levels only."""
    if schedule not in DISCRETE_SCHEDULES:
        raise ConfigError(
            key,
            f"{{key}} = {show(value)} needs a discrete schedule ({', '.join(DISCRETE_SCHEDULES)}); "
            f"{{{schedule_ref}}} is {show(schedule)}",
        )


# ---------------------------------------------------------------------------------------------------
# Options of datasets and backbones (one class per registered name)


@dataclass(frozen=True)
class SwissRollOptions(Config):
    """``polydiff.data.swiss_roll.swiss_roll``: a fixed set of points drawn once from the seed."""

    num_samples: int = setting(20_000, gt=0, doc="points in the data set (train and validation together)")
    noise: float = setting(0.05, ge=0, doc="std of the Gaussian jitter added to each point")


@dataclass(frozen=True)
class MLPOptions(Config):
    """Keyword arguments of ``polydiff.modalities.nn.mlp.MLPBackbone``."""

    dims: int = setting(2, gt=0, doc="data dimension D; x has shape (B, D)")
    hidden: int = setting(128, gt=0, doc="width of the residual blocks")
    depth: int = setting(3, ge=1, doc="number of residual blocks")
    embed_dim: int = setting(64, gt=0, doc="size of the Fourier noise embedding (even)")
    num_classes: int = setting(0, ge=0, doc="class labels for conditioning; 0 = unconditional")

    def check(self) -> None:
        if self.embed_dim % 2:
            raise ConfigError(("embed_dim",), f"{{key}} must be even (cos and sin halves), got {self.embed_dim}")


register_options("data", "swiss_roll", SwissRollOptions)
register_options("model", "mlp", MLPOptions)


# ---------------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class DataConfig(Config):
    name: str = setting(doc="data set (see its options below)", choices=_registered("data"))
    batch_size: int = setting(256, gt=0, doc="samples per micro-batch over all processes (the global batch; each of W processes takes 1/W)")
    val_fraction: float = setting(0.05, ge=0, le=0.5, doc="fraction of the data held out for validation")
    num_workers: int = setting(0, ge=0, doc="data-loader worker processes")
    options: object = setting(None, options=("data", "name"), doc="keys of the chosen data set")


@dataclass(frozen=True)
class ModelConfig(Config):
    name: str = setting(doc="backbone F(x_in, c_noise, cond), see its options below", choices=_registered("model"))
    options: object = setting(None, options=("model", "name"), doc="keys of the chosen backbone (its size)")


@dataclass(frozen=True)
class DiffusionConfig(Config):
    schedule: ScheduleName = setting("edm", doc="noise schedule, a name in `core.schedules.SCHEDULES`")
    num_steps: int = setting(1000, ge=2, doc="T, the number of levels of a discrete schedule")
    zero_terminal_snr: bool = setting(False, doc="rescale a discrete schedule to SNR 0 at t = T (Lin et al. 2023)")
    parameterization: Parameterization = setting("edm", doc="what the backbone predicts (`core.precond`)")
    c_noise: CNoise = setting("edm", doc="the backbone's noise input: ln(sigma)/4, index t, sqrt(abar) or logSNR")
    sigma_data: float = setting(0.5, gt=0, doc="std of the data, used by EDM preconditioning")
    learned_variance: bool = setting(False, doc="backbone also outputs the variance interpolation v (iDDPM)")

    def check(self) -> None:
        for key, used in (("zero_terminal_snr", self.zero_terminal_snr), ("c_noise", self.c_noise == "discrete"),
                          ("learned_variance", self.learned_variance)):  # fmt: skip
            if used:
                _needs_discrete((key,), getattr(self, key), self.schedule, "schedule")
        if self.zero_terminal_snr and self.parameterization not in ("v", "x0"):
            raise ConfigError(
                ("parameterization",),
                f"{{key}} must be \"v\" or \"x0\" with {{zero_terminal_snr}} (eps is undefined at SNR 0; "
                f"Lin et al. 2023, sec. 3.2), got {show(self.parameterization)}",
            )


@dataclass(frozen=True)
class ObjectiveConfig(Config):
    noise_levels: NoiseLevels = setting("lognormal", doc="training distribution of sigma, `core.noise_levels`")
    weighting: Weighting = setting("edm", doc="loss weight lambda(sigma), `core.objectives.WEIGHTINGS`")
    gamma: float = setting(5.0, gt=0, doc="gamma of min-SNR-gamma and soft-min-SNR (Hang et al. 2023)")
    p_mean: float = setting(-1.2, doc="mean of ln(sigma) for lognormal noise levels (Karras et al. 2022)")
    p_std: float = setting(1.2, gt=0, doc="std of ln(sigma) for lognormal noise levels")
    hybrid_vlb_weight: float = setting(0.0, ge=0, doc="lambda of L_simple + lambda L_vlb (Nichol & Dhariwal 2021)")


@dataclass(frozen=True)
class OptimConfig(Config):
    lr: float = setting(1e-4, gt=0, doc="AdamW peak learning rate")
    betas: tuple[float, float] = setting((0.9, 0.999), ge=0, lt=1, doc="AdamW (beta1, beta2)")
    weight_decay: float = setting(0.0, ge=0, doc="AdamW decoupled weight decay")
    eps: float = setting(1e-8, gt=0, doc="AdamW epsilon")
    warmup_steps: int = setting(0, ge=0, doc="steps of linear learning-rate warm-up from 0")
    lr_schedule: Literal["constant", "cosine"] = setting("constant", doc="learning rate after warm-up")
    grad_clip: float | None = setting(1.0, gt=0, doc="max global gradient norm; \"none\" disables clipping")


@dataclass(frozen=True)
class TrainConfig(Config):
    steps: int = setting(10_000, gt=0, doc="optimizer steps")
    grad_accum: int = setting(1, ge=1, doc="micro-batches per optimizer step")
    mixed_precision: Literal["no", "bf16", "fp16"] = setting("no", doc="autocast dtype of the forward pass")
    ema_decay: float | None = setting(None, ge=0, lt=1, doc="per-step EMA decay; no EMA if neither key is set")
    ema_halflife_steps: float | None = setting(None, gt=0, doc="EMA half-life in steps: decay = 0.5^(1/half-life)")
    ema_warmup: bool = setting(True, doc="ramp the EMA up early: min(decay, (1+t)/(10+t)), half-life min(h, ratio t)")
    ema_rampup_ratio: float = setting(0.05, gt=0, doc="ratio of the half-life ramp-up (EDM's ema_rampup_ratio)")
    seed: int = setting(0, ge=0, doc="seed of initialization, data order and noise")
    log_every: int = setting(100, gt=0, doc="steps between log lines")
    sample_every: int = setting(1000, ge=0, doc="steps between sample grids; 0 = never")
    val_every: int = setting(1000, ge=0, doc="steps between validation losses; 0 = never")
    checkpoint_every: int = setting(1000, gt=0, doc="steps between checkpoints")
    keep_last: int = setting(3, ge=1, doc="checkpoints kept on disk")
    max_nonfinite_in_row: int = setting(5, ge=1, doc="stop after this many non-finite losses in a row")
    out_dir: str = setting("runs", doc="directory that holds the run folders")
    cond_drop_prob: float = setting(0.0, ge=0, le=1, doc="probability of dropping the condition (for guidance)")

    def check(self) -> None:
        if self.ema_decay is not None and self.ema_halflife_steps is not None:
            raise ConfigError(("ema_halflife_steps",), "{key} and {ema_decay} are both set; set only one")


@dataclass(frozen=True)
class SampleConfig(Config):
    sampler: str = setting("heun", choices=_sampler_names, doc="a sampler in `core.samplers.SAMPLERS`")
    steps: int = setting(32, gt=0, doc="sampling steps (the grid has steps + 1 levels ending at 0)")
    spacing: Spacing = setting("karras", doc="sigma grid, a name in `core.grids.GRIDS`")
    guidance: float = setting(1.0, ge=0, doc="classifier-free guidance w in D_u + w (D_c - D_u); 1 = conditional only")
    guidance_rescale: float = setting(0.0, ge=0, le=1, doc="phi of guidance rescale (Lin et al. 2023); 0 = off")
    num: int = setting(16, gt=0, doc="samples drawn per sampling round")
    seed: int = setting(0, ge=0, doc="seed of the sampling noise (one generator per sample)")


@dataclass(frozen=True)
class RecipeConfig(Config):
    name: str = setting(doc="recipe name, also the run folder name")
    modality: Modality = setting(doc="which part of polydiff the recipe trains")
    data: DataConfig = setting(doc="The training data and its loader (required).")
    model: ModelConfig = setting(doc="The backbone and its size (required).")
    diffusion: DiffusionConfig = setting(doc="Noise schedule and parameterization.", factory=DiffusionConfig)
    objective: ObjectiveConfig = setting(doc="Training noise levels and loss weighting.", factory=ObjectiveConfig)
    optim: OptimConfig = setting(doc="The AdamW optimizer and learning-rate schedule.", factory=OptimConfig)
    train: TrainConfig = setting(doc="The training loop.", factory=TrainConfig)
    sample: SampleConfig = setting(doc="Sampling defaults (in training and for sampling).", factory=SampleConfig)

    def check(self) -> None:
        schedule = self.diffusion.schedule
        if self.objective.noise_levels in ("discrete", "wavegrad"):
            _needs_discrete(("objective", "noise_levels"), self.objective.noise_levels, schedule, "diffusion.schedule")
        if self.sample.spacing in ("leading", "trailing"):
            _needs_discrete(("sample", "spacing"), self.sample.spacing, schedule, "diffusion.schedule")
        if self.diffusion.learned_variance != (self.objective.hybrid_vlb_weight > 0):
            raise ConfigError(
                ("objective", "hybrid_vlb_weight"),
                f"{{key}} is {show(self.objective.hybrid_vlb_weight)}: it must be > 0 exactly when "
                f"{{diffusion.learned_variance}} is true (only L_vlb trains the variance, Nichol & Dhariwal 2021)",
            )


README = Path(__file__).with_name("README.md")
BEGIN, END = "<!-- reference: generated by recipes.schema.write_readme; do not edit -->", "<!-- end of reference -->"


def write_readme(path: Path = README) -> None:
    """Regenerate the reference section of recipes/README.md from this schema."""
    text = path.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    path.write_text(f"{head}{BEGIN}\n\n{markdown_reference(RecipeConfig)}\n{END}{tail}")
