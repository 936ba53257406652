"""``polydiff tune-schedule``: search a vocoder's few-step noise schedule on held-out clips and keep the winner.

    polydiff tune-schedule MODEL_DIR --data DIR [--steps 6] [--sampler ddpm] [--clips 8] [--candidates 36] [--dry-run]

WaveGrad's few-step schedules (Chen et al. 2021; the 6-iteration one that ``core.grids`` cites from sec. 4) were found
by a search over beta sequences; lmnt-com/wavegrad's ``src/wavegrad/noise_schedule.py`` (commit c3d54c8) searches betas
beta_i = m_i * 10^(e_i), with exponents e = linspace(-6, -1, N) fixed per position and mantissas m_i drawn from
``search_level`` random values in [0, 10), every one of the search_level^N combinations scored by the squared
log-mel error of the vocoded clips. Here the candidates are

    betas    the same exponent ladder (N = 1: 10^-1, a single step must reach the noise) with mantissas on the fixed
             coarse grid ``MANTISSAS``, searched coordinate-wise within ``--candidates`` K evaluations: first the
             uniform schedules m * 10^(e_i) for m in MANTISSAS, then, from the best schedule so far, one position
             at a time (the noisiest first) every other mantissa, moving whenever the score drops, in passes until
             a pass brings nothing or K is spent. The full grid has |MANTISSAS|^N points (46,656 at N = 6); a
             random subset of K ~ 36 of them would cover under 0.1% and rarely land near the best, while each
             coordinate step starts from the best schedule found so far. The search itself draws nothing at
             random: the same clips and K always give the same schedules.
    spacing  every sampling grid of ``core.grids.GRIDS`` at N steps of the model's training schedule;
    default  the model's current sampling default (its sample.betas, or its steps and spacing), as it is, when it
             has N steps (a grid equal to it is scored once, as the default).

Each candidate vocodes the same clips with the same noise (common random numbers: seeds ``--seed`` + i) through
``vocode.vocode_mels`` with ``--sampler`` (default: the model's), and scores the mean over clips of the mean
absolute difference between the log-mels (the model's own ``MelConfig``) of the vocoded and the original audio.
The winner becomes the model folder's sampling default (``sample.betas`` for a beta schedule; sampler, steps and
spacing for a grid), written together with ``tuned_schedule.json`` (the previous default, every score, the
settings, earlier tunings) in one atomic replacement of the folder (``storage.atomic``).
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ... import __version__
from ...commands.arguments import name, positive_int, seed
from ...core.grids import GRIDS, betas_to_sigmas, sampling_sigmas
from ...data.folder import READ_ERRORS, list_files
from ...errors import UserError
from ...registry import register_command
from .folder import SUFFIXES, check_wave, read_metadata, read_window
from .mel import MelConfig, mel_spectrogram
from .vocode import mel_config_of, vocode_mels
from .writer import to_waves

RECORD_FILE = "tuned_schedule.json"
MANTISSAS = (1, 2, 3, 5, 7, 9)  # m of beta_i = m * 10^(e_i); the largest beta is 9 * 10^-1 < 1
SILENCE = 1e-3  # a clip whose peak is below this is skipped, as the audio data sets skip silent windows


# ---------------------------------------------------------------------------------------------- held-out clips

@dataclass(frozen=True)
class Clip:
    """A held-out segment: its waveform (T,) in [-1, 1] at the model's rate, T a multiple of hop, and its log-mel."""

    source: str
    wave: torch.Tensor
    mel: torch.Tensor  # (n_mels, T // hop)


def audio_files(root: Path) -> list[Path]:
    """The audio of ``--data``: an LJSpeech folder's listed wavs (metadata.csv), else every .wav / .flac below."""
    if (root / "metadata.csv").is_file():
        return read_metadata(root)[0]
    return list_files(root, SUFFIXES, False, "--data")[0]


def read_clips(root: str | Path, config: MelConfig, clips: int, frames: int, seed: int = 0) -> list[Clip]:
    """``clips`` segments of ``frames`` mel frames (fewer where a file is shorter) from the files under ``root``,
    chosen by ``seed``: files in a seeded order, one segment each at a seeded frame, round after round until there
    are enough. Files at another rate are resampled (said once, on stderr); unreadable, too short or silent files
    are skipped; a folder with no usable audio is a ``UserError`` naming it."""
    import soundfile

    root = Path(root).expanduser()
    files = audio_files(root)
    rng = np.random.default_rng(seed)
    order = [files[i] for i in rng.permutation(len(files))]
    hop, rate, length = config.hop_length, config.sample_rate, frames * config.hop_length
    found, failed, resampled = [], {}, {}
    while order and len(found) < clips:
        for path in list(order):
            if len(found) == clips:
                break
            try:
                info = soundfile.info(str(path))
                total = math.ceil(info.frames * rate / info.samplerate)
                start = hop * int(rng.integers(0, max(0, total - length) // hop + 1))
                wave = read_window(path, start, length, rate)
                check_wave(wave, config.n_fft, SILENCE)
                wave = wave[: wave.numel() // hop * hop]  # whole frames: the vocoder gives frames * hop samples
                if wave.numel() < config.n_fft:
                    raise ValueError(f"{wave.numel()} samples in whole frames, shorter than n_fft {config.n_fft}")
            except READ_ERRORS as err:
                failed[path] = f"{type(err).__name__}: {str(err).splitlines()[0][:100] if str(err) else ''}"
                order.remove(path)
                continue
            if info.samplerate != rate:
                resampled[path] = info.samplerate
            found.append(Clip(str(path), wave, mel_spectrogram(wave, config)))
            if total <= length:  # a file no longer than a segment has only the one
                order.remove(path)
    if not found:
        path, why = next(iter(failed.items()))
        raise UserError(f"--data {root}: none of its {len(files)} audio file(s) gave a clip (readable, not silent, at "
                        f"least n_fft = {config.n_fft} samples); e.g. {path}: {why}")
    if resampled:
        rates = ", ".join(f"{r} Hz" for r in sorted(set(resampled.values())))
        print(f"polydiff: --data: {len(resampled)} file(s) under {root} are at {rates}, not the model's {rate} Hz "
              f"(e.g. {next(iter(resampled))}): resampled to {rate} Hz", file=sys.stderr)
    if failed:
        print(f"polydiff: --data: skipped {len(failed)} unusable file(s) under {root} (e.g. "
              f"{next(iter(failed))}: {next(iter(failed.values()))})", file=sys.stderr)
    return found


def log_mel_distance(waves: list[torch.Tensor], clips: list[Clip], config: MelConfig) -> torch.Tensor:
    """Per clip, mean |log-mel(wave) - log-mel(clip)| over bins and frames, waves (T,) in [-1, 1]: shape (M,)."""
    return torch.stack([(mel_spectrogram(w.float(), config) - c.mel).abs().mean() for w, c in zip(waves, clips)])


# ------------------------------------------------------------------------------------------------ candidates

@dataclass(frozen=True)
class Candidate:
    """A schedule to try: ``sampling`` holds the keys it sets in the model folder's sampling section."""

    kind: str  # "betas", "spacing" or "default"
    label: str
    sampling: dict
    sigmas: torch.Tensor = field(repr=False)  # (steps + 1,) descending, ending at 0


@dataclass(frozen=True)
class Scored:
    candidate: Candidate
    score: float  # mean log-mel L1 over the clips (lower is better)
    per_clip: tuple[float, ...]


def beta_exponents(steps: int) -> np.ndarray:
    """lmnt-com/wavegrad's exponent ladder 10^linspace(-6, -1, N) (noise_schedule.py); one step: 10^-1."""
    return 10.0 ** (np.linspace(-6, -1, steps) if steps > 1 else np.array([-1.0]))


def beta_candidate(mantissas: tuple[int, ...], sampler: str) -> Candidate:
    """betas m_i * 10^(e_i), rounded to 6 significant digits (what is stored is what was scored)."""
    betas = [float(f"{m * e:.6g}") for m, e in zip(mantissas, beta_exponents(len(mantissas)))]
    label = "betas " + " ".join(f"{b:.2g}" for b in betas)
    return Candidate("betas", label, {"sampler": sampler, "steps": len(betas), "betas": betas},
                     betas_to_sigmas(betas))


def grid_candidates(model, steps: int, sampler: str) -> tuple[list[Candidate], list[str]]:
    """Every ``core.grids.GRIDS`` spacing at ``steps`` for the model's schedule; those that do not apply to it
    (time spacings of a continuous schedule) are left out and named."""
    found, skipped = [], []
    for spacing in GRIDS:
        try:
            sigmas = sampling_sigmas(model.schedule, steps, spacing)
        except ValueError as err:
            skipped.append(f"{spacing} ({err})")
            continue
        sampling = {"sampler": sampler, "steps": steps, "spacing": spacing, "betas": []}
        found.append(Candidate("spacing", f"{spacing} x {steps}", sampling, sigmas))
    return found, skipped


def default_candidate(model, sampler: str) -> Candidate:
    """The model's current sampling default, with ``sampler``."""
    from ...pipeline.build import build_sigmas

    s = model.sampling
    what = ("betas " + " ".join(f"{b:.2g}" for b in s.betas)) if s.betas else f"{s.spacing} x {s.steps}"
    sampling = {"sampler": sampler, "steps": s.steps, "spacing": s.spacing, "betas": list(s.betas)}
    return Candidate("default", f"current default: {what}", sampling,
                     build_sigmas(model.config, model.schedule, None, None, s))


def coordinate_search(score: Callable[[tuple[int, ...]], float], steps: int, budget: int) -> None:
    """Spend at most ``budget`` distinct calls of ``score`` on mantissa tuples (``MANTISSAS`` per position): the
    uniform tuples (evenly spaced among them when the budget is smaller), then coordinate descent from the best,
    the last (noisiest) position first, in passes until one improves nothing. ``score`` caches; results are its."""
    seen: dict[tuple[int, ...], float] = {}

    def tried(m: tuple[int, ...]) -> float | None:
        if m not in seen:
            if len(seen) >= budget:
                return None
            seen[m] = score(m)
        return seen[m]

    picks = sorted({round(i) for i in np.linspace(0, len(MANTISSAS) - 1, min(budget, len(MANTISSAS)))})
    for i in picks:
        tried((MANTISSAS[i],) * steps)
    if not seen:
        return
    best = min(seen, key=seen.get)
    improved = True
    while improved and len(seen) < budget:
        improved = False
        for position in reversed(range(steps)):
            for m in MANTISSAS:
                trial = best[:position] + (m,) + best[position + 1:]
                value = tried(trial)
                if value is None:
                    return
                if value < seen[best]:
                    best, improved = trial, True


def score_candidate(model, clips: list[Clip], candidate: Candidate, sampler: str | None = None, seed: int = 0
                    ) -> Scored:
    """Vocode every clip's mel over ``candidate``'s grid (clip i with seed + i, each in one chunk, all in one batch)
    and score it: the mean over clips of the mean log-mel L1 to the original (``log_mel_distance``)."""
    frames = max(c.mel.shape[-1] for c in clips)
    waves = vocode_mels(model, [c.mel for c in clips], sampler=sampler, sigmas=candidate.sigmas, seed=seed,
                        chunk=frames, overlap=0, batch=len(clips))
    waves = [torch.from_numpy(to_waves(w[None, None], model.config.data.range)[0]) for w in waves]  # -> [-1, 1]
    per_clip = log_mel_distance(waves, clips, mel_config_of(model))
    return Scored(candidate, float(per_clip.mean()), tuple(per_clip.tolist()))


def tune(model, clips: list[Clip], steps: int, *, sampler: str | None = None, candidates: int = 36, seed: int = 0,
         progress: bool = False) -> tuple[list[Scored], list[str]]:
    """Score the default (when it has ``steps`` steps), every grid and up to ``candidates`` beta schedules of
    ``steps`` steps on ``clips``; returns them ranked (best first; the first tried wins a tie) and what was left
    out, in words."""
    from tqdm import tqdm

    from ...core.samplers import SAMPLERS

    mel_config_of(model)  # a vocoder, or a UserError naming the folder
    sampler = sampler or model.sampling.sampler
    if sampler not in SAMPLERS:
        raise UserError(f"--sampler: unknown sampler {sampler!r}; known: {', '.join(sorted(SAMPLERS))}")
    default = default_candidate(model, sampler)
    grids, skipped = grid_candidates(model, steps, sampler)
    if len(default.sigmas) != steps + 1:
        skipped.append(f"the current default ({len(default.sigmas) - 1} steps, not {steps})")
        fixed = grids
    else:  # a grid that is the default is scored once, as the default
        same = [g for g in grids if torch.allclose(g.sigmas.float(), default.sigmas.float(), rtol=1e-6, atol=0)]
        skipped += [f"{g.sampling['spacing']} (the current default)" for g in same]
        fixed = [default, *(g for g in grids if not any(g is s for s in same))]
    results: list[Scored] = []

    with tqdm(total=len(fixed) + candidates, desc="tune-schedule", unit="schedule", disable=not progress) as bar:
        def run(candidate: Candidate) -> float:
            results.append(score_candidate(model, clips, candidate, sampler, seed))
            bar.update(1)
            bar.set_postfix(best=f"{min(r.score for r in results):.3f}")
            return results[-1].score

        for candidate in fixed:
            run(candidate)
        coordinate_search(lambda m: run(beta_candidate(m, sampler)), steps, candidates)
    return sorted(results, key=lambda r: r.score), skipped  # sorted() is stable: ties keep the order tried


# ---------------------------------------------------------------------------------------------------- storing

def describe(sampling: dict) -> str:
    """A sampling section's schedule in words."""
    if sampling.get("betas"):
        return f"{sampling['sampler']}, betas [{', '.join(f'{b:.3g}' for b in sampling['betas'])}]"
    return f"{sampling['sampler']}, {sampling['steps']} steps of {sampling['spacing']}"


def store_winner(model_dir: str | Path, winner: Candidate, record: dict) -> dict:
    """Make ``winner`` the model folder's sampling default and write ``record`` (plus the previous record under
    "history") as tuned_schedule.json, both in one atomic replacement of the folder; returns the new sampling
    section. The weights are carried over byte for byte (read and written as safetensors), so are other files."""
    from ...pipeline.model_folder import CONFIG_FILE, WEIGHTS_FILE, read_model_folder, write_model_folder
    from ...recipes.config import config_from_dict, config_to_dict
    from ...recipes.schema import RecipeConfig, SampleConfig
    from ...storage.atomic import clean_leftovers, write_dir_atomically
    from ...storage.files import read_json, write_json

    path = Path(model_dir)
    files = read_model_folder(path)
    recipe_sample = config_to_dict(config_from_dict(RecipeConfig, files.config).sample)
    sampling = {**recipe_sample, **files.sampling, **winner.sampling}
    config_from_dict(SampleConfig, sampling, source=f"the tuned sampling section of {path / CONFIG_FILE}")
    record = dict(record)
    previous = path / RECORD_FILE
    if previous.is_file():
        old = read_json(previous)
        if isinstance(old, dict):
            record["history"] = [*old.pop("history", []), old]
    clean_leftovers(path.parent, lambda n: n == path.name)
    own = (CONFIG_FILE, WEIGHTS_FILE, RECORD_FILE)
    carried = [entry for entry in path.iterdir() if entry.name not in own]

    def write_files(staging: Path) -> None:
        write_model_folder(staging, files.state, files.config, files.example_shape, sampling)  # config + weights
        write_json(staging / RECORD_FILE, record)
        for entry in carried:
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, staging / entry.name)

    write_dir_atomically(path, write_files)
    return sampling


# ---------------------------------------------------------------------------------------------------- command

def table(ranked: list[Scored], top: int) -> str:
    lines = [f"{'rank':>4}  {'log-mel L1':>10}  {'sigma_max':>9}  {'kind':<8} schedule"]
    for i, r in enumerate(ranked[:top], 1):
        c = r.candidate
        lines.append(f"{i:>4}  {r.score:>10.4f}  {float(c.sigmas[0]):>9.3g}  {c.kind:<8} {c.label}")
    return "\n".join(lines)


def _arguments(p) -> None:
    p.add_argument("model_dir", help="a vocoder's model folder (e.g. runs/wavegrad_tiny/model)")
    p.add_argument("--data", required=True, help="held-out audio: a folder of .wav / .flac files (searched "
                                                 "recursively) or an LJSpeech folder (metadata.csv, wavs/)")
    p.add_argument("--steps", type=positive_int, default=None, help="sampling steps N (default: the model's)")
    p.add_argument("--sampler", type=name, default=None, help="a sampler of core.samplers (default: the model's)")
    p.add_argument("--candidates", type=positive_int, default=36, help="beta schedules to score at most (the "
                                                                       "grids and the default come on top)")
    p.add_argument("--clips", type=positive_int, default=8, help="held-out segments to score on")
    p.add_argument("--frames", type=positive_int, default=64, help="mel frames per segment")
    p.add_argument("--seed", type=seed, default=0, help="chooses the segments; clip i is vocoded with seed + i")
    p.add_argument("--top", type=positive_int, default=10, help="rows of the ranked table")
    p.add_argument("--dry-run", action="store_true", help="only print the ranking; leave the model folder alone")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda when available)")


@register_command("tune-schedule", help="search a vocoder's few-step noise schedule on held-out clips and make the "
                                        "best its sampling default", arguments=_arguments)
def tune_command(args) -> int:
    from ...pipeline import DiffusionModel
    from ...pipeline.model_folder import CONFIG_FILE
    from ...recipes.config import config_to_dict

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available here; use --device cpu")
    model = DiffusionModel.from_pretrained(args.model_dir, device)
    config = mel_config_of(model)
    if args.frames * config.hop_length < config.n_fft:
        raise UserError(f"--frames {args.frames}: segments of {args.frames * config.hop_length} samples are shorter "
                        f"than the model's n_fft {config.n_fft}; use --frames {-(-config.n_fft // config.hop_length)} "
                        f"or more")
    clips = read_clips(args.data, config, args.clips, args.frames, args.seed)
    steps = args.steps or model.sampling.steps
    ranked, skipped = tune(model, clips, steps, sampler=args.sampler, candidates=args.candidates, seed=args.seed,
                           progress=sys.stderr.isatty())
    seconds = sum(c.wave.numel() for c in clips) / config.sample_rate
    print(f"scored {len(ranked)} schedules on {len(clips)} clip(s) ({seconds:.1f} s) from {args.data} "
          f"(mean log-mel L1, lower is better)")
    if skipped:
        print(f"left out: {'; '.join(skipped)}")
    print(table(ranked, args.top))
    winner, previous = ranked[0], config_to_dict(model.sampling)
    print(f"winner: {winner.candidate.label} ({describe(winner.candidate.sampling)}), log-mel L1 {winner.score:.4f}")
    if args.dry_run:
        print(f"--dry-run: {args.model_dir} left as it was")
        return 0
    record = {
        "polydiff_version": __version__, "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "metric": "mean over clips of mean |log-mel(vocoded) - log-mel(original)| (the model's mel config)",
        "data": str(args.data), "clips": [c.source for c in clips], "frames": args.frames, "seed": args.seed,
        "steps": steps, "sampler": winner.candidate.sampling["sampler"], "candidates": args.candidates,
        "previous": previous, "winner": {"label": winner.candidate.label, "score": winner.score,
                                         "sampling": winner.candidate.sampling},
        "scores": [{"rank": i, "kind": r.candidate.kind, "label": r.candidate.label, "score": r.score,
                    "per_clip": list(r.per_clip), "sampling": r.candidate.sampling} for i, r in enumerate(ranked, 1)],
    }
    store_winner(args.model_dir, winner.candidate, record)
    print(f"stored in {Path(args.model_dir) / CONFIG_FILE} as the sampling default (was: {describe(previous)}); "
          f"scores and the previous default in {Path(args.model_dir) / RECORD_FILE}")
    return 0
