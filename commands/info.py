"""``polydiff info [MODEL_DIR]``: versions, devices and what is registered; or what a model folder holds."""

from __future__ import annotations

import platform

from ..registry import components, register_command


def _arguments(p) -> None:
    p.add_argument("model_dir", nargs="?", default=None, help="a model folder to describe instead")


def _model_lines(path: str) -> dict:
    from ..pipeline import DiffusionModel

    model = DiffusionModel.from_pretrained(path)
    params = sum(p.numel() for p in model.denoiser.parameters())
    cfg, s = model.config, model.sampling
    preset = getattr(cfg.model.options, "preset", "none")
    lines = {
        "model": path,
        "recipe": f"{cfg.name} (modality {cfg.modality})",
        "backbone": f"{cfg.model.name}{f' (preset {preset})' if preset != 'none' else ''}, {params:,} parameters",
        "example shape": "x".join(map(str, model.example_shape)),
        "diffusion": f"{cfg.diffusion.schedule} schedule, {cfg.diffusion.parameterization} parameterization",
        "sampling": f"{s.sampler}, {s.steps} steps, {'the grid of sample.betas' if s.betas else f'{s.spacing} grid'}, "
                    f"guidance {s.guidance}",
    }
    if cfg.objective.task == "classify":
        classes = model.denoiser.backbone.num_classes
        lines["sampling"] = f"none: a noise-aware classifier of {classes} classes (polydiff sample MODEL --classifier)"
    return lines


def _system_lines() -> dict:
    import torch

    from .. import __version__
    from ..core.samplers import SAMPLERS

    lines = {
        "polydiff": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": f"{torch.cuda.is_available()} ({torch.cuda.device_count()} devices)",
        "threads": torch.get_num_threads(),
        "cpu capability": torch.backends.cpu.get_cpu_capability(),
        "samplers": ", ".join(sorted(SAMPLERS)),
    }
    for kind, label in (("writer", "modalities"), ("model", "backbones"), ("data", "data sets"),
                        ("transform", "transforms"), ("command", "commands")):
        lines[label] = ", ".join(c.name for c in components(kind)) or "none"
    for mod in ("torchvision", "torchaudio", "accelerate", "av", "safetensors", "soundfile", "einops"):
        try:
            lines[mod] = __import__(mod).__version__
        except Exception as err:  # an optional library that fails to load is reported, not fatal
            lines[mod] = f"unavailable ({type(err).__name__})"
    return lines


@register_command("info", help="versions, devices and registered components; or describe a model folder",
                  arguments=_arguments)
def info_command(args) -> int:
    lines = _model_lines(args.model_dir) if args.model_dir else _system_lines()
    width = max(map(len, lines))
    for key, value in lines.items():
        print(f"{key:<{width}}  {value}")
    return 0
