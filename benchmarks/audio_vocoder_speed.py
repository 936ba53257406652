"""WaveGrad Base vocoding speed on the CPU: polydiff's ``vocode`` path against lmnt-com/wavegrad (PyPI ``wavegrad``).

    python -m polydiff.benchmarks.audio_vocoder_speed [--seconds 1 --rounds 3 --threads N] [--quick] [--out FILE.md]

Both networks are WaveGrad Base at lmnt's size (128 mel bins, hop 300, upsampling 5 x 5 x 3 x 2 x 2: 15,920,993
parameters each), untrained (speed does not depend on the weights). The real-time factor (RTF) is seconds of compute
per second of audio for one utterance at 6 (the recipe's WG-6 betas), 25 and 50 iterations, fp32 and bf16 (bf16
only on an AVX-512 CPU). polydiff runs ``vocode_mels`` (chunking, noise by position, clipping included: what
``polydiff vocode`` runs); lmnt runs the loop of its ``wavegrad.inference.predict`` on its model, bf16 through
``torch.autocast``. A full run takes about 8 minutes on 2 cores; ``--quick`` well under a minute.
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext

import numpy as np
import torch

from .image_training import command_line
from .report import benchmark_parser, machine, publish

STEPS = (6, 25, 50)
RATE, HOP = 24000, 300


def polydiff_model():
    """polydiff's WaveGrad Base as recipes/audio/wavegrad_24k.toml builds it (128 mels, hop 300), untrained."""
    from ..commands.train import RECIPES_DIR
    from ..pipeline import DiffusionModel
    from ..recipes.files import load_recipe

    torch.manual_seed(0)
    return DiffusionModel.build(load_recipe(RECIPES_DIR / "audio/wavegrad_24k.toml"), (1, 24 * HOP))


def lmnt_model(seed: int = 0) -> torch.nn.Module:
    """lmnt-com/wavegrad's ``WaveGrad(params)`` with its default params (128 mels, hop 300), untrained (initialised
    under ``seed``)."""
    from wavegrad.model import WaveGrad
    from wavegrad.params import AttrDict, params

    torch.manual_seed(seed)
    return WaveGrad(AttrDict(params)).eval()


def grid(model, steps: int) -> torch.Tensor:
    """polydiff's sampling grid: the recipe's 6 betas (WG-6) at 6 steps, else ``steps`` levels of its spacing."""
    from ..pipeline.build import build_sigmas

    return build_sigmas(model.config, model.schedule, steps, None, model.sampling)


def lmnt_betas(sigmas: torch.Tensor) -> np.ndarray:
    """The betas (ascending) whose noise levels are polydiff's grid: abar_n = 1 / (1 + sigma_n^2), alpha_n =
    abar_n / abar_(n-1), beta = 1 - alpha, so both loops visit the same noise levels."""
    abar = 1 / (1 + sigmas[:-1].double().flip(0) ** 2)  # ascending sigma -> descending abar
    alpha = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    return (1 - alpha).numpy()


def lmnt_vocode(net: torch.nn.Module, mel: torch.Tensor, betas: np.ndarray, dtype: torch.dtype | None) -> torch.Tensor:
    """``wavegrad.inference.predict``'s loop (lmnt-com/wavegrad, inference.py) for one mel (128, frames)."""
    alpha = 1 - betas
    alpha_cum = np.cumprod(alpha)
    cast = torch.autocast("cpu", dtype) if dtype else nullcontext()
    with torch.no_grad(), cast:
        spectrogram = mel[None]
        audio = torch.randn(1, HOP * spectrogram.shape[-1])
        noise_scale = torch.from_numpy(alpha_cum**0.5).float().unsqueeze(1)
        for n in range(len(alpha) - 1, -1, -1):
            c1 = 1 / alpha[n] ** 0.5
            c2 = (1 - alpha[n]) / (1 - alpha_cum[n]) ** 0.5
            audio = c1 * (audio - c2 * net(audio, spectrogram, noise_scale[n]).squeeze(1).float())
            if n > 0:
                sigma = ((1.0 - alpha_cum[n - 1]) / (1.0 - alpha_cum[n]) * betas[n]) ** 0.5
                audio += sigma * torch.randn_like(audio)
            audio = torch.clamp(audio, -1.0, 1.0)
    return audio[0]


def bf16_ok() -> bool:
    from ..modalities.audio.wavegrad_fast import has_avx512

    return has_avx512()


def runners(model, net, mel: torch.Tensor, steps: int, precisions: list[str], plain: bool) -> dict:
    """(library, precision) -> a function vocoding ``mel`` once at ``steps`` iterations."""
    from ..modalities.audio.vocode import vocode_mels

    sigmas, dtypes = grid(model, steps), {"fp32": None, "bf16": torch.bfloat16}
    betas = lmnt_betas(sigmas)
    out = {}
    for p in precisions:
        out[("polydiff", p)] = lambda p=p: vocode_mels(model, [mel], sigmas=sigmas, precision=p)[0]
        if plain:  # the backbone as it trains (NCW, no noise-free cache beyond the mel conv), under autocast
            out[("polydiff plain", p)] = lambda p=p: vocode_mels(model, [mel], sigmas=sigmas, precision=p,
                                                                 fast=False)[0]
        out[("lmnt", p)] = lambda p=p: lmnt_vocode(net, mel, betas, dtypes[p])
    return out


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def log_mel_l1(a: torch.Tensor, b: torch.Tensor, config) -> float:
    from ..modalities.audio.mel import mel_spectrogram

    return float((mel_spectrogram(a, config) - mel_spectrogram(b, config)).abs().mean())


def quality(model, seconds: float, precisions: list[str]) -> tuple[list[str], float]:
    """Rows comparing each variant's output on a speech-like signal's mel (6 iterations, seed 0) with the plain fp32
    output of the same noise, and the fraction of plain fp32 samples at the clip (an untrained network saturates)."""
    from ..modalities.audio.mel import mel_spectrogram
    from ..modalities.audio.speech import synthetic_speech
    from ..modalities.audio.vocode import mel_config_of, vocode_mels

    config = mel_config_of(model)
    text = "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background."
    speech = torch.from_numpy(synthetic_speech(text, RATE, np.random.default_rng(0)))
    speech = speech[: int(seconds * RATE) // HOP * HOP]
    mel = mel_spectrogram(speech, config)
    sigmas = grid(model, 6)
    ref = vocode_mels(model, [mel], sigmas=sigmas, precision="fp32", fast=False)[0]
    d_ref = log_mel_l1(ref, speech, config)
    rows = [f"| polydiff plain | fp32 | {d_ref:.4f} | (reference) | 0 | 0 |"]
    for p in precisions:
        for name, fast in (("polydiff", True), ("polydiff plain", False)):
            if (name, p) == ("polydiff plain", "fp32"):
                continue
            out = vocode_mels(model, [mel], sigmas=sigmas, precision=p, fast=fast)[0]
            d = log_mel_l1(out, speech, config)
            rows.append(f"| {name} | {p} | {d:.4f} | {100 * abs(d - d_ref) / d_ref:.3f}% | "
                        f"{log_mel_l1(out, ref, config):.4f} | {float((out - ref).abs().max()):.2e} |")
    return rows, float((ref.abs() >= 1).float().mean())


def forward_flops(model, frames: int) -> int:
    """Floating-point operations (a multiply-add counts 2) of one Base forward on ``frames`` mel frames, counted by
    ``torch.utils.flop_counter`` over its convolutions (the fast path caches ~2% of them per chunk)."""
    from torch.utils.flop_counter import FlopCounterMode

    backbone = model.denoiser.backbone
    x = torch.zeros(1, 1, frames * HOP)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        backbone(x, torch.full((1,), 0.5), backbone.example_cond(x))
    return counter.get_total_flops()


def gemm_rate(dtype: torch.dtype, size: int = 2048, repeats: int = 8) -> float:
    """FLOP/s of a square ``size`` matrix product in ``dtype`` on this CPU at the current threads, median of
    ``repeats``: the rate oneDNN reaches on the most favourable shape, an upper bound for convolutions."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b  # warm-up
    return 2 * size**3 / statistics.median(timed(lambda: a @ b) for _ in range(repeats))


def floor_rows(model, precisions: list[str], measured: dict[str, float]) -> list[str]:
    """One row per precision: the GEMM rate, the FLOP of 6 iterations per second of audio, the RTF that rate gives
    (a floor for the exact computation) and the measured 6-iteration RTF of ``vocode_mels``."""
    from ..modalities.audio.wavegrad_fast import DTYPES

    per_second = 6 * forward_flops(model, RATE // HOP)  # 6 forwards on 1 s of audio
    rows = []
    for p in precisions:
        rate = gemm_rate(DTYPES[p])
        rows.append(f"| {p} | {rate / 1e9:.0f} | {per_second / 1e9:.0f} | {per_second / rate:.2f} | "
                    f"{measured.get(p, float('nan')):.2f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "a check that it runs: 0.25 s of audio, 6 iterations, one round")
    parser.set_defaults(threads=None)
    parser.add_argument("--seconds", type=float, default=1.0, help="audio per utterance")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", default=",".join(map(str, STEPS)), help="iterations, comma-separated")
    args = parser.parse_args(argv)
    import wavegrad  # noqa: F401  (the reference: pip install wavegrad; the `bench` extra)

    from ..modalities.audio.wavegrad_fast import set_cpu_threads

    threads = set_cpu_threads(args.threads)
    if args.quick:
        args.seconds, args.rounds, args.steps = 0.25, 1, "6"
    steps_list = [int(s) for s in args.steps.split(",")]
    start = time.perf_counter()
    precisions = ["fp32", "bf16"] if bf16_ok() else ["fp32"]
    model, net = polydiff_model(), lmnt_model()
    params = {"polydiff": sum(p.numel() for p in model.denoiser.parameters()),
              "lmnt": sum(p.numel() for p in net.parameters())}
    frames = max(1, int(args.seconds * RATE) // HOP)
    audio = frames * HOP / RATE
    mel = torch.randn(128, frames, generator=torch.Generator().manual_seed(1)) - 5.0  # a log-mel-like input
    rows, measured = [], {}
    for steps in steps_list:
        runs = runners(model, net, mel, steps, precisions, plain=steps == steps_list[0])
        if steps == steps_list[0]:
            for run in runs.values():
                run()  # warm-up (once: the same shapes follow): oneDNN primitives, first-touch pages
        times: dict[tuple, list[float]] = {k: [] for k in runs}
        for r in range(args.rounds):
            for key in runs if r % 2 == 0 else list(runs)[::-1]:  # alternate, so drift within a round cancels
                times[key].append(timed(runs[key]))
            print(f"{steps} iterations, round {r + 1}: " + ", ".join(f"{k[0]} {k[1]} RTF {v[-1] / audio:.2f}"
                                                                     for k, v in times.items()), flush=True)
        for p in precisions:
            for name in ("polydiff", "polydiff plain"):
                if (name, p) not in times:
                    continue
                mine, ref = times[(name, p)], times[("lmnt", p)]
                if (steps, name) == (6, "polydiff"):
                    measured[p] = statistics.median(mine) / audio
                ratios = [b / a for a, b in zip(mine, ref)]
                rows.append(f"| {steps} | {p} | {name} | {statistics.median(mine) / audio:.3f} | "
                            f"{statistics.median(ref) / audio:.3f} | **{statistics.median(ratios):.2f}x** | "
                            f"{', '.join(f'{x:.2f}' for x in ratios)} |")
        if not bf16_ok():
            rows.append(f"| {steps} | bf16 | skipped: no AVX-512 | | | | |")
    q_rows, clipped = quality(model, args.seconds, precisions)
    f_rows = floor_rows(model, precisions, measured)
    command = command_line("audio_vocoder_speed", argv)
    md = f"""## Audio vocoder speed: WaveGrad Base, polydiff vs lmnt-com/wavegrad

Command: `{command}` ({time.perf_counter() - start:.0f} s). Machine: {machine()}. Threads: {threads}.

WaveGrad Base both ways at lmnt's size (128 mel bins, hop 300): polydiff {params['polydiff']:,} parameters
(recipes/audio/wavegrad_24k.toml), lmnt {params['lmnt']:,} (`wavegrad.model.WaveGrad` with its default params),
both untrained. One utterance of {audio:.2f} s ({frames} frames, one chunk). RTF = seconds of compute per second of
audio (lower is better). "polydiff" is `vocode_mels` (what `polydiff vocode` runs: `FastWaveGrad`, channels-last,
noise-free first half cached per chunk, weights in the precision, `torch.inference_mode`); "polydiff plain" is
`vocode_mels(..., fast=False)`, the backbone as it trains (bf16 through `torch.autocast`); lmnt runs its
`inference.predict` loop, bf16 through `torch.autocast`. Both visit the same noise levels (6: the recipe's WG-6
betas; 25, 50: the recipe's spacing). After one warm-up call per variant (at the first iteration count),
{args.rounds} round(s) per variant in alternating order; RTFs are medians over rounds; the speed-up is the median
of the per-round lmnt / polydiff time ratios (target: RTF <= 0.5 at 6 iterations, and 2x lmnt).

| iterations | precision | polydiff path | polydiff RTF | lmnt RTF | speed-up vs lmnt | per round |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

How far the exact computation can go on this CPU: the FLOP of 6 Base forwards per second of 24 kHz audio
(`torch.utils.flop_counter`; a multiply-add is 2), this CPU's rate on a 2048 x 2048 matrix product at the same
threads (the most favourable shape for oneDNN, an upper bound for the network's convolutions), the RTF that rate
would give, and the measured 6-iteration RTF of `vocode_mels` from the table above.

| precision | GEMM GFLOP/s | GFLOP per audio-second, 6 iterations | RTF at the GEMM rate | measured RTF |
|---|---|---|---|---|
{chr(10).join(f_rows)}

Quality (6 iterations, seed 0, the mel of {audio:.2f} s of `speech.synthetic_speech` at 24 kHz): the log-mel L1
distance (natural-log mels of the recipe's mel config, mean over bins and frames) of each output to the speech, its
relative change from the plain fp32 output's distance (target: within 1%), the direct log-mel L1 to the plain fp32
output of the same noise, and the largest sample difference. The network is untrained: {100 * clipped:.0f}% of the
plain fp32 output's samples sit at the clip (+-1), which hides differences there.

| path | precision | log-mel L1 to speech | change vs plain fp32 | log-mel L1 to plain fp32 | max sample diff |
|---|---|---|---|---|---|
{chr(10).join(q_rows)}
"""
    return publish("audio-vocoder-speed", md, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
