"""``polydiff vocode``: mel spectrograms (or the mels of waveforms) to speech with a trained vocoder model folder.

    polydiff vocode MODEL_DIR --mel a.npy [b.pt ...] | --wav a.wav [...] [--steps 6] [--sampler ddpm] --out out.wav

The model folder's recipe holds the mel config the vocoder was trained on (data.options); input mels are checked
against it (``mel_input``) and vocoded in overlapping chunks (``chunks``) in batches over every input, one WAV per
input at the model's sample rate. Each chunk's mel goes through the backbone's noise-free mel path once
(WaveGrad's ``encode_mel``), not at every sampling step; x0_hat is clipped to the data's range at every step
(static thresholding, Saharia et al. 2022; lmnt-com/wavegrad clamps its iterate likewise), which keeps sampling
bounded even for an undertrained model and, unlike dynamic thresholding, depends on no other chunk.

A WaveGrad runs as ``wavegrad_fast.FastWaveGrad`` (the same function: channels-last, its noise-free first UBlock half
cached per chunk too), under ``torch.inference_mode``, in ``--precision`` (auto: bf16 on an AVX-512 CPU, else fp32;
the sampler's state stays fp32), on ``--threads`` CPU threads (default: the physical cores); ``--compile`` opts into
``torch.compile``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from pathlib import Path

import torch
from torch import nn

from ...commands.arguments import name, positive_int, seed
from ...core.grids import GRIDS, betas_to_sigmas
from ...errors import UserError
from ...registry import register_command
from .chunks import CROSSFADES, ChunkSampler, vocode_chunks
from .mel import MelConfig
from .mel_input import LAYOUTS, LOG_BASES, read_mel, read_wav
from .wavegrad_fast import PRECISIONS, set_cpu_threads

FEATURES = "mel_features"  # the cond key of the cached mel path


def _beta(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


class CachedMel(nn.Module):
    """A backbone with a split mel path (``encode_mel`` / ``decode``, e.g. WaveGrad; or ``wavegrad_fast.FastWaveGrad``'s
    ``encode`` / ``decode``) as F(x_in, c_noise, cond) taking cond[FEATURES] = ``encode(mel)``, computed once per
    chunk by the caller (``encode``). ``compile``: ``torch.compile`` the decode."""

    def __init__(self, backbone: nn.Module, compile: bool = False):
        super().__init__()
        self.backbone, self.null_cond = backbone, {}
        self.encode = getattr(backbone, "encode", None) or backbone.encode_mel
        self.decode = torch.compile(backbone.decode, dynamic=False) if compile else backbone.decode

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond) -> torch.Tensor:
        return self.decode(x_in, c_noise, cond[FEATURES])


def mel_config_of(model) -> MelConfig:
    """The mel config a vocoder model was trained on (its recipe's data options), or a ``UserError``."""
    where = model.source or "this model"
    if "mel" not in getattr(model.denoiser.backbone, "required_cond", ()):
        raise UserError(f"{where} is a {model.config.modality!r} model that takes no mel ({model.config.model.name!r});"
                        f" this needs a vocoder model (e.g. one trained from recipes/audio/wavegrad_tiny.toml)")
    config = getattr(model.config.data.options, "mel_config", None)
    if not isinstance(config, MelConfig):
        raise UserError(f"{where}: its data set {model.config.data.name!r} names no mel config (data.options)")
    return config


def chunk_sampler(model, *, sampler: str | None = None, steps: int | None = None, spacing: str | None = None,
                  sigmas: torch.Tensor | None = None, precision: str = "auto", fast: bool = True,
                  compile: bool = False) -> ChunkSampler:
    """A ``chunks.ChunkSampler`` for ``model``: its sampling defaults (sample.betas, or steps and spacing) unless
    given (``pipeline.build.build_sigmas``; ``sigmas``: an explicit grid ending at 0), x0_hat clipped to data.range,
    the mel path cached per chunk when the backbone splits it, the sampler's noise drawn by sample position.

    ``precision``: "fp32", "bf16" or "auto" (bf16 on an AVX-512 CPU only; ``wavegrad_fast.resolve_precision``); the
    sampler's state stays fp32 either way. ``fast``: a WaveGrad backbone runs as ``wavegrad_fast.FastWaveGrad`` (the
    same function, channels-last, with its noise-free first half cached per chunk); False runs the backbone itself
    (bf16 then through ``torch.autocast``). ``compile``: ``torch.compile`` the fast decode (opt-in: a first call
    compiles for a minute or more, and again for each new chunk shape)."""
    from ...core.precond import Precond
    from ...core.samplers import SAMPLERS
    from ...pipeline.build import build_sigmas
    from .wavegrad import WaveGrad
    from .wavegrad_fast import DTYPES, FastWaveGrad, resolve_precision

    sampler = sampler or model.sampling.sampler
    if sampler not in SAMPLERS:
        raise UserError(f"--sampler: unknown sampler {sampler!r}; known: {', '.join(sorted(SAMPLERS))}")
    if spacing is not None and spacing not in GRIDS:
        raise UserError(f"--spacing: unknown spacing {spacing!r}; known: {', '.join(sorted(GRIDS))}")
    if sigmas is None:
        sigmas = build_sigmas(model.config, model.schedule, steps, spacing, model.sampling)
    sigmas = sigmas.to(model.device, torch.float32)
    dtype = DTYPES[resolve_precision(precision, model.device)]
    run, (lo, hi), denoiser = SAMPLERS[sampler], model.config.data.range, model.denoiser
    backbone, d = denoiser.backbone, denoiser
    autocast = contextlib.nullcontext
    if fast and isinstance(backbone, WaveGrad):
        backbone = FastWaveGrad(backbone.eval(), dtype)
        denoiser = Precond(CachedMel(backbone, compile), d.parameterization.name, d.c_noise, d.sigma_data,
                           d.learned_variance)
    else:
        if dtype != torch.float32:
            autocast = functools.partial(torch.autocast, model.device.type, dtype)
        if callable(getattr(backbone, "encode_mel", None)) and callable(getattr(backbone, "decode", None)):
            # the same parameterization and noise input around the split backbone
            denoiser = Precond(CachedMel(backbone), d.parameterization.name, d.c_noise, d.sigma_data,
                               d.learned_variance)
    encode = denoiser.backbone.encode if isinstance(denoiser.backbone, CachedMel) else None

    def clipped(x, sigma, cond=None):
        return denoiser(x, sigma, cond).clamp(lo, hi)

    @torch.inference_mode()
    def sample(mel: torch.Tensor, start: torch.Tensor, noise) -> torch.Tensor:
        with autocast():
            cond = {FEATURES: encode(mel)} if encode else {"mel": mel}
            return run(clipped, sigmas[0] * start, sigmas, cond=cond, generator=noise).float()

    return sample


def vocode_mels(model, mels: list[torch.Tensor], *, sampler: str | None = None, steps: int | None = None,
                spacing: str | None = None, sigmas: torch.Tensor | None = None, seed: int = 0, chunk: int = 512,
                overlap: int = 64, batch: int = 8, crossfade: str = "linear", progress: bool = False,
                precision: str = "auto", fast: bool = True, compile: bool = False) -> list[torch.Tensor]:
    """Waveforms (frames * hop,) in the data's range for log-mels (n_mels, frames) in the model's convention
    (``precision``, ``fast``, ``compile``: see ``chunk_sampler``)."""
    hop = mel_config_of(model).hop_length
    sample = chunk_sampler(model, sampler=sampler, steps=steps, spacing=spacing, sigmas=sigmas, precision=precision,
                           fast=fast, compile=compile)
    return vocode_chunks(sample, mels, hop, seed=seed, chunk=chunk, overlap=overlap, batch=batch,
                         crossfade=crossfade, progress=progress, device=model.device)


def output_paths(out: str, sources: list[str]) -> list[Path]:
    """``--out`` as one .wav file (one input) or a folder holding <input name>.wav for each input."""
    if out.lower().endswith(".wav"):
        if len(sources) > 1:
            raise UserError(f"--out {out}: {len(sources)} inputs need a folder, got a .wav file name")
        return [Path(out)]
    paths = [Path(out) / f"{Path(s).stem}.wav" for s in sources]
    seen = {}
    for source, path in zip(sources, paths):
        if path in seen:
            raise UserError(f"--out {out}: {seen[path]} and {source} would both be written to {path}; rename one")
        seen[path] = source
    return paths


def _arguments(p) -> None:
    p.add_argument("model_dir", help="a vocoder's model folder (e.g. runs/wavegrad_tiny/model)")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--mel", nargs="+", metavar="FILE", help=".npy / .pt log-mels (bins x frames or frames x "
                                                                "bins, optionally a leading batch dimension of 1)")
    given.add_argument("--wav", nargs="+", metavar="FILE", help="waveforms: their mel with the model's mel config")
    p.add_argument("--out", required=True, help="a .wav file for one input, else a folder (<input name>.wav each)")
    p.add_argument("--steps", type=positive_int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--sampler", type=name, default=None, help="a sampler of core.samplers (default: the model's)")
    p.add_argument("--spacing", type=name, default=None, help="a sigma grid of core.grids (default: the model's)")
    p.add_argument("--betas", type=_beta, nargs="+", default=None, metavar="BETA", help="an explicit few-step "
                   "schedule beta_1 .. beta_N (WaveGrad's form), instead of --steps and --spacing (default: the "
                   "model's sample.betas, if any)")
    p.add_argument("--seed", type=seed, default=0, help="noise seed; input i uses seed + i")
    p.add_argument("--mel-log", choices=LOG_BASES, default=None, help="the log base of the --mel files (default: "
                                                                      "what a .pt declares, else the model's)")
    p.add_argument("--mel-layout", choices=LAYOUTS, default="auto", help="the --mel arrays' axes (auto: the axis "
                                                                         "with the model's n_mels bins)")
    p.add_argument("--mel-rate", type=positive_int, default=None, help="sample rate the --mel files were made for "
                                                                       "(checked against the model's)")
    p.add_argument("--mel-hop", type=positive_int, default=None, help="hop length of the --mel files (checked)")
    p.add_argument("--chunk", type=positive_int, default=512, help="mel frames vocoded at once (bounds memory)")
    p.add_argument("--overlap", type=_non_negative_int, default=64, help="mel frames shared by neighbouring chunks "
                                                                         "and crossfaded (at most --chunk / 2)")
    p.add_argument("--crossfade", choices=CROSSFADES, default="linear")
    p.add_argument("--batch", type=positive_int, default=8, help="chunks vocoded together")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda when available)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="network precision (auto: bf16 on a CPU "
                   "with AVX-512, else fp32; bf16 elsewhere is emulated and slow); sampling stays fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (a minute or more to compile "
                                                          "per chunk shape; pays off for long inputs)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: OMP_NUM_THREADS, else "
                                                                      "the physical cores)")


@register_command("vocode", help="turn mel spectrograms (or the mels of waveforms) into speech with a vocoder",
                  arguments=_arguments)
def vocode_command(args) -> int:
    import soundfile

    from ...pipeline import DiffusionModel
    from ...storage.output import check_output_dir, make_output_dir, writing
    from .writer import to_waves

    if 2 * args.overlap > args.chunk:
        raise UserError(f"--overlap {args.overlap} must be at most half of --chunk {args.chunk}")
    sigmas = None if args.betas is None else betas_to_sigmas(args.betas)
    sources = args.mel or args.wav
    paths = output_paths(args.out, sources)
    for folder in dict.fromkeys(p.parent for p in paths):
        check_output_dir(folder, "--out")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available here; use --device cpu")
    if device == "cpu":
        set_cpu_threads(args.threads)
    model = DiffusionModel.from_pretrained(args.model_dir, device)
    config = mel_config_of(model)
    declared = {"sample_rate": args.mel_rate, "hop_length": args.mel_hop}
    inputs = ([read_mel(p, config, args.mel_log, args.mel_layout, declared) for p in args.mel] if args.mel
              else [read_wav(p, config) for p in args.wav])
    for given in inputs:
        print(given.note)
    waves = vocode_mels(model, [i.mel for i in inputs], sampler=args.sampler, steps=args.steps, spacing=args.spacing,
                        sigmas=sigmas, seed=args.seed, chunk=args.chunk, overlap=args.overlap, batch=args.batch,
                        progress=sys.stderr.isatty(), crossfade=args.crossfade, precision=args.precision,
                        compile=args.compile)
    for path, wave in zip(paths, waves):
        with writing(f"writing {path.name}", path.parent):
            make_output_dir(path.parent, "--out")
            samples = to_waves(wave[None, None], model.config.data.range)[0]  # (T,) -> (1, 1, T) -> (T,) in [-1, 1]
            soundfile.write(str(path), samples, config.sample_rate, subtype="PCM_16")
    seconds = sum(w.numel() for w in waves) / config.sample_rate
    print(f"wrote {len(paths)} file(s), {seconds:.1f} s at {config.sample_rate} Hz: {', '.join(map(str, paths))}")
    return 0
