"""Vocoder quality per unit of compute, without pretrained judges: WaveGrad trained here, polydiff vs lmnt-com/wavegrad.

    python -m polydiff.benchmarks.audio_vocoder_quality [--seconds 300 --turn 5 --threads 1] [--quick] [--out FILE.md]

WaveGrad (Chen et al. 2021) at the paper's features, the ``wavegrad_24k`` mel preset (24 kHz, 128 mel bins, hop 300):
lmnt's network (PyPI ``wavegrad`` 0.1.5) is hard-wired to hop 300 (upsampling 5, 5, 3, 2, 2), so the 16 kHz hop-200
tiny recipe cannot be compared as it is. Speech: ``speech.make_speech_corpus`` (espeak-ng, one voice, seed fixed)
speaks 48 training and 4 held-out sentences, all distinct. Three models train from scratch for the same time each
(``--seconds`` on one torch thread by default: CPU seconds on an idle core), interleaved in turns of a few seconds,
each on its own clock (``image_quality.interleave``; its first step, one-off set-up, untimed), so all meet the same
background load:

    tiny         recipes/audio/wavegrad_24k.toml with model.options.preset = "tiny" (0.36M parameters, hop 300), and
                 the diffusion, objective, optimiser (lr, warm-up, cosine stretched over the steps the budget allows),
                 EMA and sampling sections and the batch of recipes/audio/wavegrad_tiny.toml, read from that file;
                 its segment of 20 frames, at hop 300 (6000 samples);
    Base         recipes/audio/wavegrad_24k.toml as it is (15.9M parameters) but the batch: 8 segments of 7200;
    lmnt Base    ``wavegrad.model.WaveGrad`` with its params (15.9M) and its own training step
                 (``WaveGradLearner.train_step``: Adam 2e-4, L1 on the noise, noise level uniform between adjacent
                 sqrt(abar) of its betas, gradient norm clipped at 1) on the same batches as Base. It is given
                 our natural-log mels (it needs only 128 bins at hop 300), not its own dB mels scaled to [0, 1]:
                 both Base networks see the same input.

polydiff trains in ``image_quality.PolydiffRun``'s bare loop on random segments of the training clips with their mel
frames (``segments.cut``, as the ``random_segment`` transform cuts them). Each held-out sentence (its first ``--clip``
= 1.5 seconds, whole frames) is vocoded from its log-mel, in fp32 with fixed seeds: the tiny model at 6 iterations (the
recipe's WG-6 betas), 50 (the recipe's logSNR spacing) and 1000 (every training level: the paper's WG-1000), and with a
6-step schedule tuned by ``tune.tune`` (36 beta candidates and the grids, scored on 8 clips of the *training*
speech); both Base models at 6 and 50, lmnt by its inference loop over the same noise levels
(``audio_vocoder_speed.lmnt_vocode``, ``lmnt_betas``); Griffin-Lim (Griffin & Lim 1984; ``demo.griffin_lim``) at 32
and 100 iterations, the floor to beat; white noise at the original's RMS, the obviously bad reference. Distances to
the original: log-mel L1 (``demo.mel_l1``, the wavegrad_24k features) and the multi-resolution STFT distance of
Parallel WaveGAN (Yamamoto et al. 2020, eq. 4-6): spectral convergence plus log-magnitude L1, averaged over FFT
sizes 512 / 1024 / 2048 with hops 128 / 256 / 512 and Hann windows; means over the held-out sentences. Spectrograms
and WAVs of the first held-out sentence go to benchmarks/results/audio_quality_* (beside --out if it is moved). Seeds
are fixed, but a time budget is not a step count: the steps made, and the tiny model's learning-rate schedule
(stretched over them), follow the machine's speed, so repeated runs differ a little.

A full run takes about 30 minutes on 2 cores (one thread; estimated from the quick run's speeds): 15 of training,
~13 of vocoding (the Base models' 50 iterations and the tiny's 1000 dominate; each second of held-out speech costs ~2
minutes), ~1 of tuning. ``--quick`` takes about 75 s (8 s per model, 6 + 1 sentences, 0.5 s held out, 10 and 100
iterations instead of 50 and 1000, 4 tuning candidates on 2 clips).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from ..media import Audio, Image, save_media
from ..modalities.audio.demo import griffin_lim, mel_l1, spectrogram_picture
from ..modalities.audio.mel import mel_spectrogram
from ..modalities.audio.segments import cut, extend, last_start
from ..modalities.audio.speech import make_speech_corpus
from ..modalities.audio.tune import read_clips, tune
from ..modalities.audio.vocode import mel_config_of, vocode_mels
from ..modalities.audio.wavegrad_fast import set_cpu_threads
from ..modalities.audio.writer import to_waves
from ..pipeline.build import build_sigmas
from ..recipes.files import load_recipe
from .audio_vocoder_speed import lmnt_betas, lmnt_model, lmnt_vocode
from .image_quality import PolydiffRun, Run, interleave
from .image_training import command_line
from .report import BENCHMARKS_MD, benchmark_parser, machine, publish

ROOT = Path(__file__).resolve().parents[1]  # the polydiff package (and repository) root
BASE_RECIPE, TINY_RECIPE = ROOT / "recipes/audio/wavegrad_24k.toml", ROOT / "recipes/audio/wavegrad_tiny.toml"
RESULTS = Path(__file__).resolve().parent / "results"
STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (FFT size = Hann window, hop)


def recipes(seed: int):
    """(tiny, Base) recipes at 24 kHz, hop 300 (see the module docstring)."""
    base = load_recipe(BASE_RECIPE, ["data.batch_size=8", f"train.seed={seed}"])
    tiny = load_recipe(TINY_RECIPE, [f"train.seed={seed}"])
    frames = tiny.data.options.segment // tiny.data.options.mel_config.hop_length
    sized = load_recipe(BASE_RECIPE, ['model.options.preset="tiny"', f"data.batch_size={tiny.data.batch_size}",
                                      f"data.options.segment={frames * base.data.options.mel_config.hop_length}"])
    return dataclasses.replace(sized, name="wavegrad_24k_tiny", diffusion=tiny.diffusion, objective=tiny.objective,
                               optim=tiny.optim, train=tiny.train, sample=tiny.sample), base


def speak(folder: Path, train: int, held_out: int, rate: int, seed: int):
    """``train`` + ``held_out`` distinct sentences spoken into ``folder``, whose metadata.csv then lists only the
    first ``train`` (what ``tune.read_clips`` reads). (training waves, held-out (text, wave) pairs), waves (T,)."""
    import soundfile

    make_speech_corpus(folder, train + held_out, rate, seed=seed)
    lines = (folder / "metadata.csv").read_text(encoding="utf-8").splitlines()
    assert len({line.split("|")[1] for line in lines}) == len(lines), "sentences repeat: ask for fewer"
    (folder / "metadata.csv").write_text("\n".join(lines[:train]) + "\n", encoding="utf-8")
    key_text = [line.split("|")[:2] for line in lines]
    waves = [torch.from_numpy(soundfile.read(str(folder / "wavs" / f"{key}.wav"), dtype="float32")[0])
             for key, _ in key_text]
    return waves[:train], [(text, wave) for (_, text), wave in zip(key_text[train:], waves[train:])]


class Corpus:
    """Training clips as ``segments.cut`` takes them: each extended by reflection to the longest (whole frames), with
    its log-mel and its real length, like the audio data sets' windows."""

    def __init__(self, waves: list[torch.Tensor], config):
        hop = config.hop_length
        length = -(-max(w.numel() for w in waves) // hop) * hop
        self.windows = torch.stack([extend(w, length) for w in waves])[:, None]  # N x (W,) -> (N, 1, W)
        self.mels = mel_spectrogram(self.windows, config)  # (N, n_mels, W // hop)
        self.lengths, self.hop = torch.tensor([w.numel() for w in waves]), hop

    def draw(self, batch: int, segment: int, generator: torch.Generator):
        """(x (batch, 1, segment), mel (batch, n_mels, segment // hop)): random clips, each at a random frame."""
        idx = torch.randint(len(self.windows), (batch,), generator=generator)
        count = last_start(self.lengths[idx], segment, self.hop) + 1  # possible starts
        start = (torch.rand(batch, generator=generator, dtype=torch.float64) * count).long()
        return cut(self.windows[idx], self.mels[idx], start, segment)


class Segmented:
    """A run whose batches are ``segment``-sample segments of its ``Corpus`` (``self.x``) with their mel frames."""

    def draw(self):
        x, mel = self.x.draw(self.batch, self.segment, self.order)
        return x, {"mel": mel}


class PolydiffAudio(Segmented, PolydiffRun):
    def __init__(self, corpus: Corpus, cfg, seconds: float, seed: int):
        self.segment = cfg.data.options.segment
        super().__init__(corpus, None, seconds, seed, cfg, (1, self.segment))


class LmntRun(Segmented, Run):
    """lmnt's WaveGrad and its ``WaveGradLearner.train_step``, drawing from a torch random state of its own."""

    def __init__(self, corpus: Corpus, segment: int, batch: int, seed: int, folder: Path):
        from wavegrad.learner import WaveGradLearner
        from wavegrad.params import params

        super().__init__(corpus, None, batch, seed)
        self.segment, self.model = segment, lmnt_model(seed).train()
        opt = torch.optim.Adam(self.model.parameters(), lr=params.learning_rate)
        with warnings.catch_warnings():  # its (disabled) torch.cuda.amp autocast and GradScaler: deprecated names
            warnings.simplefilter("ignore")
            self.learner = WaveGradLearner(str(folder), self.model, None, opt, params)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.rng = torch.get_rng_state()

    def update(self, x0, cond) -> None:
        with torch.random.fork_rng(devices=[]):  # its draws come from torch's global generator: keep them apart
            torch.set_rng_state(self.rng)
            self.learner.train_step({"audio": x0[:, 0], "spectrogram": cond["mel"]})  # (B, 1, T) -> (B, T)
            self.rng = torch.get_rng_state()

    def finish(self) -> torch.nn.Module:
        return self.model.eval().requires_grad_(False)


def stft_magnitude(wave: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """|STFT| (n_fft // 2 + 1, frames) of ``wave`` (T,), Hann window of n_fft, power floored at 1e-7 (PWG's)."""
    spectrum = torch.stft(wave, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True)
    return spectrum.abs().square().clamp(min=1e-7).sqrt()


def mr_stft(wave: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(spectral convergence || |S| - |S^| ||_F / || |S| ||_F, log-magnitude L1 mean |log |S| - log |S^||) of
    ``wave`` against ``reference``, each the mean over STFT_RESOLUTIONS (Yamamoto et al. 2020, eq. 4-6)."""
    sc, mag = [], []
    for n_fft, hop in STFT_RESOLUTIONS:
        s, s_hat = stft_magnitude(reference, n_fft, hop), stft_magnitude(wave, n_fft, hop)
        sc.append(float(torch.linalg.norm(s - s_hat) / torch.linalg.norm(s)))
        mag.append(float((s.log() - s_hat.log()).abs().mean()))
    return float(np.mean(sc)), float(np.mean(mag))


def polydiff_vocoder(model, mels: list[torch.Tensor], sigmas: torch.Tensor, seed: int):
    """A function vocoding ``mels`` over ``sigmas`` with ``vocode_mels`` (fp32, seeds seed + i) into [-1, 1]."""
    def run():
        waves = vocode_mels(model, mels, sigmas=sigmas, seed=seed, precision="fp32")
        return [torch.from_numpy(to_waves(w[None, None], model.config.data.range)[0]) for w in waves]  # (T,)
    return run


def lmnt_vocoder(net, mels: list[torch.Tensor], sigmas: torch.Tensor, seed: int):
    """A function vocoding ``mels`` with lmnt's inference loop over the betas of ``sigmas`` (seeds seed + i)."""
    def run():
        waves = []
        with torch.random.fork_rng(devices=[]):  # its noise comes from torch's global generator
            for i, mel in enumerate(mels):
                torch.manual_seed(seed + i)
                waves.append(lmnt_vocode(net, mel, lmnt_betas(sigmas), None))
        return waves
    return run


def shown(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    return (path.relative_to(ROOT) if path.is_relative_to(ROOT) else path).as_posix()


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "a check that it runs: 8 s per model, 6 + 1 sentences, 0.5 s held out, "
                                       "10 and 100 iterations, 4 tuning candidates")
    parser.add_argument("--seconds", type=float, default=300, help="training seconds per model")
    parser.add_argument("--turn", type=float, default=5.0, help="seconds each model trains per turn")
    parser.add_argument("--sentences", type=int, default=48, help="training sentences")
    parser.add_argument("--held-out", type=int, default=4, help="held-out sentences")
    parser.add_argument("--clip", type=float, default=1.5, help="seconds of each held-out sentence vocoded")
    parser.add_argument("--candidates", type=int, default=36, help="beta schedules the tuning scores")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    steps = (6, 10, 100) if args.quick else (6, 50, 1000)  # few, many, every level
    tune_clips, tune_frames = (2, 16) if args.quick else (8, 64)
    if args.quick:
        args.seconds, args.sentences, args.held_out, args.clip, args.candidates = 8, 6, 1, 0.5, 4
    threads = set_cpu_threads(args.threads)
    results = RESULTS if Path(args.out).resolve() == BENCHMARKS_MD else Path(args.out).resolve().parent
    tiny_cfg, base_cfg = recipes(args.seed)
    config = base_cfg.data.options.mel_config
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "speech_24k"
        train_waves, held_out = speak(folder, args.sentences, args.held_out, config.sample_rate, args.seed)
        source = (folder / "SOURCE").read_text().strip()
        corpus = Corpus(train_waves, config)
        base_batch, base_segment = base_cfg.data.batch_size, base_cfg.data.options.segment
        runs = {"tiny": PolydiffAudio(corpus, tiny_cfg, args.seconds, args.seed),
                "Base": PolydiffAudio(corpus, base_cfg, args.seconds, args.seed),
                "lmnt Base": LmntRun(corpus, base_segment, base_batch, args.seed, Path(tmp) / "lmnt")}
        params = {name: sum(p.numel() for p in run.model.parameters()) for name, run in runs.items()}
        print(f"{len(train_waves)} training sentences ({source}); parameters {params}; {machine()}")
        interleave(list(runs.values()), args.seconds, args.turn)
        trained = {name: run.finish() for name, run in runs.items()}
        tiny, base, net = trained["tiny"], trained["Base"], trained["lmnt Base"]
        clips = read_clips(folder, config, tune_clips, tune_frames, args.seed)  # training speech only
        ranked, _ = tune(tiny, clips, steps[0], candidates=args.candidates, seed=args.seed)
    assert mel_config_of(tiny) == config
    originals = [w[: int(args.clip * config.sample_rate) // config.hop_length * config.hop_length] for _, w in held_out]
    mels = [mel_spectrogram(o, config) for o in originals]  # (n_mels, frames): what a TTS model would hand over
    audio = sum(o.numel() for o in originals) / config.sample_rate
    few, many, every = steps
    grid = {(name, n): build_sigmas(m.config, m.schedule, n, "linspace" if n == every else None, m.sampling)
            for name, m in (("tiny", tiny), ("Base", base)) for n in steps}
    sched = {few: f"{few}: WG-6 betas", many: f"{many}: logSNR spacing", every: f"{every}: linspace (all levels)"
             if every == tiny.schedule.num_steps else f"{every}: linspace (every {tiny.schedule.num_steps // every}th)"}
    noise = torch.Generator().manual_seed(args.seed)
    entries = [  # (vocoder, iterations, training run or None, file name if pictured, vocode)
        *[("polydiff tiny", sched[n], "tiny", n != many and f"tiny_{n}",
           polydiff_vocoder(tiny, mels, grid["tiny", n], args.seed)) for n in steps],
        ("polydiff tiny", f"{few}: tuned, {ranked[0].candidate.label}", "tiny", f"tiny_{few}_tuned",
         polydiff_vocoder(tiny, mels, ranked[0].candidate.sigmas, args.seed)),
        *[(name, sched[n], name, n == few and f"{name.replace(' ', '_')}_{n}",
           vocoder(model, mels, grid["Base", n], args.seed))
          for n in (few, many)
          for name, model, vocoder in (("Base", base, polydiff_vocoder), ("lmnt Base", net, lmnt_vocoder))],
        *[("Griffin-Lim", f"{k} iterations", None, k == 32 and f"griffinlim_{k}",
           lambda k=k: [griffin_lim(m, config, k, args.seed).clamp(-1, 1) for m in mels]) for k in (32, 100)],
        ("white noise", "at the original's RMS", None, None,
         lambda: [(torch.randn(o.shape, generator=noise) * o.square().mean().sqrt()).clamp(-1, 1) for o in originals]),
    ]
    rows, scores = [], {}
    pictured = {"original": (f"original (held out): {held_out[0][0]!r}", originals[0].numpy())}
    for vocoder, iterations, run, slug, vocode in entries:
        began = time.perf_counter()
        waves = vocode()
        seconds = time.perf_counter() - began
        d = np.mean([[mel_l1(w, o, config), *mr_stft(w, o)] for w, o in zip(waves, originals)], axis=0)
        scores[vocoder, iterations] = d[0]
        trained_for = f"{runs[run].steps} in {runs[run].used:.0f} s" if run else "-"
        rows.append(f"| {vocoder} | {iterations} | {f'{params[run]:,}' if run else '-'} | {trained_for} | "
                    f"{seconds / audio:.2f} | {d[0]:.3f} | {d[1] + d[2]:.3f} | {d[1]:.3f} | {d[2]:.3f} |")
        print(rows[-1], flush=True)
        if slug:
            title = f"{vocoder}, {iterations}: log-mel L1 {mel_l1(waves[0], originals[0], config):.3f}"
            pictured[slug] = (title, waves[0].numpy())
    picture = spectrogram_picture(dict(pictured.values()), config)
    written = [save_media(Image(picture), results / "audio_quality_spectrograms")]
    written += [save_media(Audio(np.ascontiguousarray(wave[:, None]), config.sample_rate),  # (T,) -> (T, 1)
                           results / f"audio_quality_{slug}") for slug, (_, wave) in pictured.items()]
    firsts = ", ".join(f"{name} {run.first:.1f} s" for name, run in runs.items())
    base_ratio = {n: scores["Base", sched[n]] / scores["lmnt Base", sched[n]] for n in (few, many)}
    floor = {k: scores["Griffin-Lim", f"{k} iterations"] for k in (32, 100)}
    best_tiny = min((v, iterations) for (name, iterations), v in scores.items() if name == "polydiff tiny")
    quick = " - QUICK SMOKE RUN, numbers meaningless" if args.quick else ""
    md = f"""## Audio vocoder quality per unit of compute (WaveGrad at 24 kHz: polydiff vs lmnt-com/wavegrad){quick}

Command: `{command_line("audio_vocoder_quality", argv)}` ({time.perf_counter() - start:.0f} s). Machine: {machine()}.

Three WaveGrad vocoders (Chen et al. 2021) train from scratch for {args.seconds:g} s each ({threads} thread(s)),
interleaved in {args.turn:g} s turns, on {len(train_waves)} sentences spoken by espeak-ng at 24 kHz ({source}; one
voice), at the paper's features (`wavegrad_24k` mel preset: 128 mel bins, hop 300, the only hop lmnt's network
takes). polydiff tiny: `recipes/audio/wavegrad_24k.toml` with `model.options.preset="tiny"` and the training,
diffusion and sampling sections and batch of `recipes/audio/wavegrad_tiny.toml` (batch {tiny_cfg.data.batch_size}
of {tiny_cfg.data.options.segment}-sample segments, lr {tiny_cfg.optim.lr:g} with warm-up and cosine over the steps
the budget allows, EMA). polydiff Base: `recipes/audio/wavegrad_24k.toml` as it is; lmnt Base:
`wavegrad.model.WaveGrad` ({version("wavegrad")}, its params, fed our natural-log mels) with its own training step
(Adam 2e-4, L1 on the noise, its noise-level sampling); both on the same batches of {base_batch} x {base_segment}
samples. Each model's first step (set-up: {firsts}) is not timed.

Then {len(originals)} held-out sentence(s) ({audio:.1f} s in all; each its first {args.clip:g} s) are vocoded from
their log-mels, fp32, fixed seeds. polydiff through `vocode_mels` over the grid named (WG-6: the recipe's 6 betas;
"tuned": the winner of `tune.tune` over {args.candidates} beta schedules and the grids, scored on {len(clips)}
clips of the training speech), lmnt through its inference loop over the same noise levels; Griffin-Lim (Griffin & Lim
1984) from the same mels is the floor to beat, white noise the obviously bad reference. Distances to the original,
means over the sentences (lower is better): log-mel L1 (the wavegrad_24k features) and the multi-resolution STFT
distance of Parallel WaveGAN (Yamamoto et al. 2020, eq. 4-6): spectral convergence (SC) + log-magnitude L1, averaged
over FFT sizes 512 / 1024 / 2048 (hops 128 / 256 / 512, Hann). RTF: seconds of vocoding per second of audio
({threads} thread(s); this is not the speed benchmark).

| vocoder | iterations | parameters | training steps | RTF | log-mel L1 | MR-STFT | SC | log-mag L1 |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Same size, same budget: polydiff Base's log-mel L1 is {base_ratio[few]:.2f}x lmnt's at {few} iterations and
{base_ratio[many]:.2f}x at {many}. The tiny model's best log-mel L1, {best_tiny[0]:.3f} ({best_tiny[1].split(",")[0]}),
against Griffin-Lim's {floor[32]:.3f} (32 iterations) and {floor[100]:.3f} (100), the floor to beat, and white
noise's {scores["white noise", "at the original's RMS"]:.3f}. Spectrograms and WAVs of the first held-out sentence:
{", ".join(f"`{shown(p)}`" for p in written)}.
"""
    return publish("audio-vocoder-quality", md, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
