"""Extension quality on moving digits, measured without pretrained networks: does a clip model, extended window by
window, keep the digit it started with, and are the seams between windows smooth?

    python -m polydiff.benchmarks.video_extension [--seconds 300 --videos 20 --weights 1 2 5] [--quick] [--out FILE.md]

Two models of ``recipes/video/moving_digits.toml`` train from scratch for the same CPU time, interleaved
(``image_quality.interleave``; one thread): the recipe as it is (explicitly frame-conditioned: random known frames
as input) and the same network without frame conditioning (``frame_conditioning = false``, no frame masks), which
can only be extended through its known frames' noisy versions: replacement (Song et al. 2021) or reconstruction
guidance (Ho et al. 2022, "Video Diffusion Models", sec. 3.1) at several w_r. Each method extends ``--videos``
unconditional videos (no class label: the digit must come from the frames) to 4x the clip length in windows knowing
the last half clip (``generate_video``, the model's sampler and steps, seeds 0..).

The judge is the image benchmark's digit classifier (``image_quality.train_judge`` on its train split of the 8x8
digits): each frame is cropped to the 8x8 window around its brightness centroid and read. Identity consistency:
the share of frames after the first window whose digit is the one read most often in the first window. Boundary
continuity: the mean absolute frame difference across window boundaries over the mean inside windows (1: seams as
smooth as the motion). Real clips of the data set give the judge's own consistency (its ceiling) and their ratio.
The default run takes about 20 minutes on 2 cores; ``--quick`` about a minute.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..data.transforms import apply_transforms, example_generators
from ..modalities.video.extend import WindowSampler, extension_windows
from ..modalities.video.generate import discard_run, finished_frames, generate_video
from ..modalities.video.moving_digits import MovingDigits
from ..recipes.files import load_recipe
from ..train.build import build_transforms
from .image_quality import PolydiffRun, interleave, split_digits, train_judge
from .image_training import command_line
from .report import benchmark_parser, machine, publish

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "video" / "moving_digits.toml"


class ClipRun(PolydiffRun):
    """A recipe's model trained on batches of its moving-digits clips (with its batch transforms)."""

    def __init__(self, cfg, seconds: float, seed: int):
        self.data, self.transforms = MovingDigits(cfg.data.options, seed), build_transforms(cfg)
        super().__init__(None, None, seconds, seed, cfg, self.data.example_shape)

    def draw(self):
        idx = torch.randint(len(self.data), (self.batch,), generator=self.order).tolist()
        items = [self.data[i] for i in idx]
        batch = {"x": torch.stack([it["x"] for it in items]),
                 "cond": {"class_labels": torch.stack([it["cond"]["class_labels"] for it in items])}}
        batch = apply_transforms(batch, self.transforms, example_generators((self.cfg.train.seed, self.steps),
                                                                            range(self.batch)))
        return batch["x"], batch["cond"]


def read_digits(judge, frames: np.ndarray) -> np.ndarray:
    """The judge's digit (F,) for uint8 frames (F, H, W, 1): the 8x8 crop around each frame's brightness centroid."""
    x = torch.from_numpy(frames[..., 0]).float() / 127.5 - 1  # (F, H, W) in [-1, 1]
    weight = (x + 1).clamp(min=0)
    total = weight.sum((1, 2)).clamp(min=1e-6)
    rows, cols = torch.arange(x.shape[1]).float(), torch.arange(x.shape[2]).float()
    cy, cx = (weight.sum(2) @ rows) / total, (weight.sum(1) @ cols) / total  # (F,) centroids
    top = (cy - 3.5).round().long().clamp(0, x.shape[1] - 8)
    left = (cx - 3.5).round().long().clamp(0, x.shape[2] - 8)
    crops = torch.stack([x[f, t:t + 8, c:c + 8] for f, (t, c) in enumerate(zip(top.tolist(), left.tolist()))])
    with torch.no_grad():
        return judge(crops[:, None]).argmax(1).numpy()  # (F, 8, 8) -> (F, 1, 8, 8)


def scores(judge, videos: list[np.ndarray], window: int, context: int) -> tuple[float, float]:
    """(identity consistency, boundary continuity) of uint8 videos (F, H, W, 1) made in these windows."""
    same, counted, across, inside = 0, 0, [], []
    for video in videos:
        digits = read_digits(judge, video)
        first = Counter(digits[:window].tolist()).most_common(1)[0][0]
        same, counted = same + int((digits[window:] == first).sum()), counted + len(digits) - window
        steps = np.abs(np.diff(video.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))  # (F - 1,): t - 1 -> t
        starts = {begin for _, begin, _ in extension_windows(len(video), window, context)} - {0}
        across += [steps[b - 1] for b in starts]
        inside += [steps[t - 1] for t in range(1, len(video)) if t not in starts]
    return same / max(counted, 1), float(np.mean(across) / np.mean(inside)) if across else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "a check that it runs: 6 s per model, 2 videos, 2 steps")
    parser.add_argument("--seconds", type=float, default=300, help="training seconds per model")
    parser.add_argument("--turn", type=float, default=5.0, help="seconds each model trains per turn")
    parser.add_argument("--videos", type=int, default=20, help="videos per method")
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 2.0, 5.0], help="reconstruction w_r")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    steps = 2 if args.quick else None
    if args.quick:
        args.seconds, args.videos, args.weights = 6, 2, [2.0]
    torch.set_num_threads(args.threads)
    explicit = load_recipe(RECIPE, [f"train.seed={args.seed}"])
    plain = load_recipe(RECIPE, [f"train.seed={args.seed}", "model.options.frame_conditioning=false",
                                 "data.transforms=[]"])
    runs = {"explicit": ClipRun(explicit, args.seconds, args.seed), "plain": ClipRun(plain, args.seconds, args.seed)}
    interleave(list(runs.values()), args.seconds, args.turn)
    models = {name: run.finish() for name, run in runs.items()}
    x_train, y_train, x_test, y_test = split_digits(args.seed)
    judge = train_judge(x_train, y_train, 2 if args.quick else 20, args.seed)
    accuracy = float((judge(x_test).argmax(1) == y_test).float().mean())
    clip = explicit.data.options.frames
    window, context, total = clip, clip // 2, 4 * clip
    methods = [("explicit frame conditioning", models["explicit"], "explicit", 0.0),
               ("replacement (w_r = 0)", models["plain"], "guidance", 0.0),
               *[(f"reconstruction guidance, w_r = {w:g}", models["plain"], "guidance", w) for w in args.weights]]
    rows = []
    real = MovingDigits(load_recipe(RECIPE, [f"data.options.frames={total}"]).data.options, args.seed + 1)
    real_videos = [((real[i]["x"].permute(1, 2, 3, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
                   for i in range(args.videos)]  # (C, F, H, W) -> (F, H, W, C) uint8
    consistency, continuity = scores(judge, real_videos, window, context)
    rows.append(f"| real clips of {total} frames (the judge's ceiling) | - | {consistency:.3f} | {continuity:.2f} | - |")
    with tempfile.TemporaryDirectory() as tmp:
        for label, model, method, weight in methods:
            began, videos = time.perf_counter(), []
            for seed in range(args.videos):
                sample = WindowSampler(model, method, weight, None, 1.0, None, steps, seed)
                out = Path(tmp) / "video.mp4"
                generate_video(model, out, total, sample, window=window, context=context, progress=False)
                videos.append(finished_frames(model, out, 1, total))
                discard_run(out)
            consistency, continuity = scores(judge, videos, window, context)
            per_video = (time.perf_counter() - began) / args.videos
            rows.append(f"| {label} | {runs['explicit' if method == 'explicit' else 'plain'].steps} | "
                        f"{consistency:.3f} | {continuity:.2f} | {per_video:.1f} |")
            print(rows[-1], flush=True)
    quick = " - QUICK SMOKE RUN, numbers meaningless" if args.quick else ""
    md = f"""## Video extension quality on moving digits (replacement vs reconstruction guidance vs explicit){quick}

Command: `{command_line("video_extension", argv)}` ({time.perf_counter() - start:.0f} s). Machine: {machine()}.

Two `recipes/video/moving_digits.toml` models trained from scratch for {args.seconds:g} s each, interleaved
({args.threads} thread(s)): the recipe (frame-conditioned, random known-frame masks) and the same network without
frame conditioning. {args.videos} unconditional videos per method (no class label: the digit must come from the
known frames), {total} frames = 4x the {clip}-frame clips, in windows of {window} knowing the last {context}
(`generate_video`, {models['plain'].sampling.sampler}, {steps or models['plain'].sampling.steps} steps). The judge
is the image benchmark's digit classifier (test accuracy {accuracy:.3f} on 8x8 digits) reading the 8x8 crop around
each frame's brightness centroid. Identity consistency: share of frames after the first window showing the digit
read most often in the first window (higher is better). Boundary continuity: mean frame difference across window
boundaries over the mean inside windows (1 is seamless; higher means jumps at the seams).

| method | training steps | identity consistency | boundary continuity | seconds per video |
|---|---|---|---|---|
{chr(10).join(rows)}
"""
    return publish("video-extension", md, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
