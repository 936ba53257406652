"""The recipe schema: frozen, typed dataclasses for the sections of a recipe TOML file.

One section per concern: [data], [model], [diffusion], [objective], [optim], [train], [sample]. Components
(data sets, backbones, batch transforms, noise-level distributions, loss weightings) are chosen by ``name``
and keep their own keys in an ``options`` table, whose class is the one the component registered next to its
code (``polydiff.registry``). Every allowed name is read from a registry: the modalities' writers, the
components, and the core's own tables (schedules, parameterizations, c_noise, grids, samplers), so no list
here has to be kept in step with them. Cross-field rules live in each ``check``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config import Config, ConfigError, registered_options, setting, show
from .reference import markdown_reference

BETA_RANGE_SCHEDULES = ("linear", "scaled_linear")  # the schedules whose betas diffusion.beta_range sets
SEED_LIMIT = 2**32 - 1  # seeds are mixed with step numbers into 64-bit generator seeds (train.trainer)


def _core_names(module: str, table: str):
    """The keys of a core registry, imported only when a name is checked (the core pulls in torch)."""

    def names():
        import importlib

        return sorted(getattr(importlib.import_module(f"polydiff.core.{module}"), table))

    return names


def _registered(kind: str):
    """The names registered under ``kind``, looked up when a name is checked."""
    return functools.partial(registered_options, kind)


def registered_output(name: str) -> str:
    """What the registered backbone ``name`` outputs: 'denoiser' or 'logits'."""
    from .. import registry

    return registry.get("model", name).info.get("output", "denoiser")


def _discrete_schedules() -> frozenset:
    from ..core.schedules import DISCRETE_SCHEDULES

    return DISCRETE_SCHEDULES


def _needs_discrete(key: tuple[str, ...], value, schedule: str, schedule_ref: str) -> None:
    """Raise unless ``schedule`` is discrete: ``key`` = ``value`` is defined on T discrete levels only."""
    discrete = sorted(_discrete_schedules())
    if schedule not in discrete:
        raise ConfigError(
            key,
            f"{{key}} = {show(value)} needs a discrete schedule ({', '.join(discrete)}); "
            f"{{{schedule_ref}}} is {show(schedule)}",
        )


# ---------------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class TransformConfig(Config):
    name: str = setting(doc="a registered batch transform, see its options below", choices=_registered("transform"))
    options: object = setting(None, options=("transform", "name"), doc="keys of the chosen transform")


@dataclass(frozen=True)
class DataConfig(Config):
    name: str = setting(doc="data set (see its options below)", choices=_registered("data"))
    batch_size: int = setting(256, gt=0, le=2**24, doc="samples per micro-batch over all processes (the global batch; "
                              "each of W processes takes 1/W)")
    val_fraction: float = setting(0.05, ge=0, le=0.5, doc="fraction of the data held out for validation")
    num_workers: int = setting(0, ge=0, le=256, doc="data-loader worker processes")
    range: tuple[float, float] = setting((-1.0, 1.0), doc="[lo, hi] of the data's values: how samples become pixels "
                                         "or waveforms (lo -> black / -1, hi -> white / +1)")
    transforms: tuple[TransformConfig, ...] = setting((), doc="per-batch transforms, applied in order with "
                                                      "per-example seeded randomness (an array of tables)")
    options: object = setting(None, options=("data", "name"), doc="keys of the chosen data set")

    def check(self) -> None:
        if not self.range[0] < self.range[1]:
            raise ConfigError(("range",), f"{{key}} must be [lo, hi] with lo < hi, got {show(list(self.range))}")


@dataclass(frozen=True)
class ModelConfig(Config):
    name: str = setting(doc="backbone F(x_in, c_noise, cond), see its options below", choices=_registered("model"))
    options: object = setting(None, options=("model", "name"), doc="keys of the chosen backbone (its size)")


@dataclass(frozen=True)
class DiffusionConfig(Config):
    schedule: str = setting("edm", choices=_core_names("schedules", "SCHEDULES"),
                            doc="noise schedule, a name in `core.schedules.SCHEDULES`")
    num_steps: int = setting(1000, ge=2, le=10**6, doc="T, the number of levels of a discrete schedule")
    zero_terminal_snr: bool = setting(False, doc="rescale a discrete schedule to SNR 0 at t = T (Lin et al. 2023)")
    beta_range: tuple[float, float] | None = setting(None, gt=0, lt=1, doc="[beta_1, beta_T] of a \"linear\" or "
                                                     "\"scaled_linear\" schedule, used as given for any num_steps "
                                                     "(WaveGrad: [1e-6, 0.01]); \"none\": the schedule's own (linear: "
                                                     "DDPM's 1e-4 .. 0.02 scaled by 1000 / num_steps)")
    parameterization: str = setting("edm", choices=_core_names("precond", "PARAMETERIZATIONS"),
                                    doc="what the backbone predicts (`core.precond.PARAMETERIZATIONS`)")
    c_noise: str = setting("edm", choices=_core_names("precond", "C_NOISE"),
                           doc="the backbone's noise input (`core.precond.C_NOISE`): ln(sigma)/4, index t, "
                               "sqrt(abar) or logSNR")
    sigma_data: float = setting(0.5, gt=0, doc="std of the data, used by EDM preconditioning")
    learned_variance: bool = setting(False, doc="backbone also outputs the variance interpolation v (iDDPM)")

    def check(self) -> None:
        for key, used in (("zero_terminal_snr", self.zero_terminal_snr), ("c_noise", self.c_noise == "discrete"),
                          ("learned_variance", self.learned_variance)):  # fmt: skip
            if used:
                _needs_discrete((key,), getattr(self, key), self.schedule, "schedule")
        if self.beta_range is not None:
            if self.schedule not in BETA_RANGE_SCHEDULES:
                raise ConfigError(("beta_range",), f"{{key}} sets the betas of a \"linear\" or \"scaled_linear\" "
                                                   f"schedule; {{schedule}} is {show(self.schedule)}")
            if not self.beta_range[0] <= self.beta_range[1]:
                raise ConfigError(("beta_range",), f"{{key}} must be [start, end] with start <= end, got "
                                                   f"{show(list(self.beta_range))}")
        if self.zero_terminal_snr and self.parameterization not in ("v", "x0"):
            raise ConfigError(
                ("parameterization",),
                f"{{key}} must be \"v\" or \"x0\" with {{zero_terminal_snr}} (eps is undefined at SNR 0; "
                f"Lin et al. 2023, sec. 3.2), got {show(self.parameterization)}",
            )


@dataclass(frozen=True)
class NoiseLevelsConfig(Config):
    name: str = setting("lognormal", choices=_registered("noise_levels"),
                        doc="training distribution of sigma, a name in `core.noise_levels.NOISE_LEVELS`")
    options: object = setting(None, options=("noise_levels", "name"), doc="keys of the chosen distribution")


@dataclass(frozen=True)
class WeightingConfig(Config):
    name: str = setting("edm", choices=_registered("weighting"),
                        doc="loss weight lambda(sigma), a name in `core.objectives.WEIGHTINGS`")
    options: object = setting(None, options=("weighting", "name"), doc="keys of the chosen weighting")


@dataclass(frozen=True)
class ObjectiveConfig(Config):
    task: Literal["denoise", "classify"] = setting("denoise", doc="train a denoiser, or a noise-aware classifier "
                                                                  "for classifier guidance (cross-entropy on noised "
                                                                  "examples; the model must output logits)")
    noise_levels: NoiseLevelsConfig = setting(doc="Training noise levels.", factory=NoiseLevelsConfig)
    weighting: WeightingConfig = setting(doc="Loss weighting.", factory=WeightingConfig)
    hybrid_vlb_weight: float = setting(0.0, ge=0, doc="lambda of L_simple + lambda L_vlb (Nichol & Dhariwal 2021)")
    loss: Literal["l2", "l1"] = setting("l2", doc="norm of the weighted residual sqrt(lambda) (D - x0): \"l2\" its "
                                                  "mean square, \"l1\" its mean absolute value (with weighting "
                                                  "\"simple\" and eps: WaveGrad's L1 of the noise, Chen et al. 2021; "
                                                  "`core.objectives`)")

    def check(self) -> None:
        if self.task == "classify" and self.loss != "l2":
            raise ConfigError(("loss",), f"{{key}} = {show(self.loss)} scores a denoiser; {{task}} = \"classify\" "
                                         f"trains with cross-entropy (leave {{key}} at \"l2\")")


@dataclass(frozen=True)
class OptimConfig(Config):
    lr: float = setting(1e-4, gt=0, doc="AdamW peak learning rate")
    betas: tuple[float, float] = setting((0.9, 0.999), ge=0, lt=1, doc="AdamW (beta1, beta2)")
    weight_decay: float = setting(0.0, ge=0, doc="AdamW decoupled weight decay")
    eps: float = setting(1e-8, gt=0, doc="AdamW epsilon")
    warmup_steps: int = setting(0, ge=0, le=10**10, doc="steps of linear learning-rate warm-up from 0")
    lr_schedule: Literal["constant", "cosine"] = setting("constant", doc="learning rate after warm-up")
    grad_clip: float | None = setting(1.0, gt=0, doc="max global gradient norm; \"none\" disables clipping")


@dataclass(frozen=True)
class TrainConfig(Config):
    steps: int = setting(10_000, gt=0, le=10**10, doc="optimizer steps")
    grad_accum: int = setting(1, ge=1, le=4096, doc="micro-batches per optimizer step")
    mixed_precision: Literal["no", "bf16", "fp16"] = setting("no", doc="autocast dtype of the forward pass (fp16: "
                                                             "GPU only, with loss scaling)")
    ema_decay: float | None = setting(None, ge=0, lt=1, doc="per-step EMA decay; no EMA if neither key is set")
    ema_halflife_steps: float | None = setting(None, gt=0, doc="EMA half-life in steps: decay = 0.5^(1/half-life)")
    ema_warmup: bool = setting(True, doc="ramp the EMA up early: min(decay, (1+t)/(10+t)), half-life min(h, ratio t)")
    ema_rampup_ratio: float = setting(0.05, gt=0, doc="ratio of the half-life ramp-up (EDM's ema_rampup_ratio)")
    seed: int = setting(0, ge=0, le=SEED_LIMIT, doc="seed of initialization, data order and noise")
    log_every: int = setting(100, gt=0, doc="steps between log lines")
    sample_every: int = setting(1000, ge=0, doc="steps between sample grids; 0 = never")
    val_every: int = setting(1000, ge=0, doc="steps between validation losses; 0 = never")
    checkpoint_every: int = setting(1000, gt=0, doc="steps between checkpoints")
    keep_last: int = setting(3, ge=1, doc="checkpoints kept on disk")
    max_nonfinite_in_row: int = setting(5, ge=1, doc="stop after this many non-finite losses in a row")
    out_dir: str = setting("runs", doc="directory that holds the run folders")
    cond_drop_prob: float = setting(0.0, ge=0, le=1, doc="probability of dropping the condition (for guidance)")
    fsdp: bool = setting(False, doc="shard parameters, gradients and optimizer state over the processes (FSDP2); "
                                    "needs mixed_precision \"no\" or \"bf16\"")

    def check(self) -> None:
        if self.ema_decay is not None and self.ema_halflife_steps is not None:
            raise ConfigError(("ema_halflife_steps",), "{key} and {ema_decay} are both set; set only one")
        if self.fsdp and self.mixed_precision == "fp16":
            raise ConfigError(("mixed_precision",), "{key} = \"fp16\" is not supported with {fsdp} (its loss "
                                                    "scaler needs whole gradients); use \"bf16\"")
        if not self.out_dir.strip():
            raise ConfigError(("out_dir",), "{key} must name a directory, got an empty string")


@dataclass(frozen=True)
class SampleConfig(Config):
    sampler: str = setting("heun", choices=_core_names("samplers", "SAMPLERS"),
                           doc="a sampler in `core.samplers.SAMPLERS`")
    steps: int = setting(32, gt=0, le=100_000, doc="sampling steps (the grid has steps + 1 levels ending at 0)")
    spacing: str = setting("karras", choices=_core_names("grids", "GRIDS"), doc="sigma grid, a name in `core.grids.GRIDS`")
    betas: tuple[float, ...] = setting((), gt=0, lt=1, doc="an explicit few-step schedule beta_1 .. beta_N (WaveGrad's "
                                       "form): its levels sigma_n = sqrt(1 / abar_n - 1) replace the spacing grid "
                                       "(`core.grids.betas_to_sigmas`), for any sampler; steps must then be N; [] = "
                                       "none")
    guidance: float = setting(1.0, ge=0, doc="classifier-free guidance w in D_u + w (D_c - D_u); 1 = conditional only")
    guidance_rescale: float = setting(0.0, ge=0, le=1, doc="phi of guidance rescale (Lin et al. 2023); 0 = off")
    dynamic_threshold: float = setting(0.0, ge=0, lt=1, doc="Imagen's dynamic thresholding at this percentile of "
                                                            "abs(x0_hat) (e.g. 0.995), within data.range; 0 = off")
    num: int = setting(16, gt=0, le=10**7, doc="samples drawn per sampling round")
    seed: int = setting(0, ge=0, le=SEED_LIMIT, doc="seed of the sampling noise (one generator per sample)")

    def check(self) -> None:
        if self.betas and self.steps != len(self.betas):
            raise ConfigError(("steps",), f"{{key}} must be {len(self.betas)}, the number of {{betas}}, when they are "
                                          f"given (they are the grid), got {self.steps}")


@dataclass(frozen=True)
class RecipeConfig(Config):
    name: str = setting(doc="recipe name, also the run folder name")
    modality: str = setting(choices=_registered("writer"), doc="which modality the recipe trains (a registered "
                            "sample writer); its examples must have the modality's number of dimensions")
    data: DataConfig = setting(doc="The training data and its loader (required).")
    model: ModelConfig = setting(doc="The backbone and its size (required).")
    diffusion: DiffusionConfig = setting(doc="Noise schedule and parameterization.", factory=DiffusionConfig)
    objective: ObjectiveConfig = setting(doc="Training noise levels and loss weighting.", factory=ObjectiveConfig)
    optim: OptimConfig = setting(doc="The AdamW optimizer and learning-rate schedule.", factory=OptimConfig)
    train: TrainConfig = setting(doc="The training loop.", factory=TrainConfig)
    sample: SampleConfig = setting(doc="Sampling defaults (in training and for sampling).", factory=SampleConfig)

    def check(self) -> None:
        schedule = self.diffusion.schedule
        if not self.name.strip() or any(c in self.name for c in "/\\\0") or self.name in (".", ".."):
            raise ConfigError(("name",), f"{{key}} names the run folder: it must be a plain folder name, got "
                                         f"{show(self.name)}")
        levels = self.objective.noise_levels.name
        if levels in ("discrete", "wavegrad"):
            _needs_discrete(("objective", "noise_levels", "name"), levels, schedule, "diffusion.schedule")
        if self.sample.spacing in ("leading", "trailing"):
            _needs_discrete(("sample", "spacing"), self.sample.spacing, schedule, "diffusion.schedule")
        if self.diffusion.learned_variance != (self.objective.hybrid_vlb_weight > 0):
            raise ConfigError(
                ("objective", "hybrid_vlb_weight"),
                f"{{key}} is {show(self.objective.hybrid_vlb_weight)}: it must be > 0 exactly when "
                f"{{diffusion.learned_variance}} is true (only L_vlb trains the variance, Nichol & Dhariwal 2021)",
            )
        output = registered_output(self.model.name)
        if (self.objective.task == "classify") != (output == "logits"):
            want = "a classifier backbone (it outputs logits)" if self.objective.task == "classify" else "a denoiser"
            gives = "logits" if output == "logits" else "denoised examples"
            raise ConfigError(("model", "name"), f"{{key}} = {show(self.model.name)} outputs {gives}, but "
                                                 f"{{objective.task}} = {show(self.objective.task)} trains {want}")
        if self.objective.hybrid_vlb_weight > 0 and levels != "discrete":
            raise ConfigError(("objective", "noise_levels", "name"), f"{{key}} must be \"discrete\" with "
                              f"{{objective.hybrid_vlb_weight}} > 0 (the hybrid loss draws t ~ Uniform{{{{1..T}}}}), "
                              f"got {show(levels)}")


README = Path(__file__).with_name("README.md")
BEGIN, END = "<!-- reference: generated by recipes.schema.write_readme; do not edit -->", "<!-- end of reference -->"


def write_readme(path: Path = README) -> None:
    """Regenerate the reference section of recipes/README.md from this schema."""
    text = path.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    path.write_text(f"{head}{BEGIN}\n\n{markdown_reference(RecipeConfig)}\n{END}{tail}")
