"""Long-video generation: peak resident memory and seconds per frame against the video's length.

    python -m polydiff.benchmarks.video_length [--lengths 32 128 512 --threads 1] [--model DIR] [--quick] [--out FILE.md]

``polydiff generate-video``'s loop (``modalities.video.generate.generate_video``: autoregressive extension in
windows of the model's clip length knowing half of it, streamed to an MP4 and to the resumable frame store) for
each length, each in a fresh process forked from a server that has already imported torch and polydiff: the model
is built (``recipes/video/moving_digits.toml``, untrained unless ``--model``; speed and memory do not depend on the
weights), one window is generated to warm up, then the video. Peak RSS is the process's high-water mark (VmHWM)
over the whole generation; "growth" is that peak over the resident memory after the warm-up. Seconds per frame
exclude the warm-up. The targets: peak memory within 10% from the shortest to the longest video, time linear in
length (constant seconds per frame). The default run takes about 3 minutes on 2 cores; ``--quick`` seconds.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from .image_training import command_line, status_mib
from .report import benchmark_parser, machine, publish

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "video" / "moving_digits.toml"


def load_model(model_dir: str | None):
    """The model folder's model, or the moving-digits recipe's model, untrained (seed 0)."""
    from ..pipeline import DiffusionModel
    from ..recipes.files import load_recipe

    if model_dir:
        return DiffusionModel.from_pretrained(model_dir)
    cfg = load_recipe(RECIPE)
    o = cfg.data.options
    torch.manual_seed(0)
    model = DiffusionModel.build(cfg, (1, o.frames, o.size, o.size))
    model.denoiser.eval().requires_grad_(False)
    return model


def length_child(spec: dict) -> dict:
    """(In a fresh process) Generate ``spec["frames"]`` frames; its timings and memory."""
    from ..modalities.video.extend import WindowSampler
    from ..modalities.video.generate import discard_run, frame_conditioned, generate_video

    torch.set_num_threads(spec["threads"])
    model = load_model(spec["model"])
    clip = model.example_shape[1]
    method = "explicit" if frame_conditioned(model) else "guidance"
    sample = WindowSampler(model, method, cond={"class_labels": torch.tensor([3])} if spec["labels"] else None,
                           guidance=1.0, steps=spec["steps"])
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm.mp4"
        generate_video(model, warm, clip, sample, window=clip, context=clip // 2, progress=False)
        discard_run(warm)
        before = status_mib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
        start = time.perf_counter()
        out = Path(tmp) / "video.mp4"
        generate_video(model, out, spec["frames"], sample, window=clip, context=clip // 2, progress=False)
        seconds = time.perf_counter() - start
        discard_run(out)
    return {"frames": spec["frames"], "seconds": seconds, "peak": status_mib("VmHWM"), "growth":
            status_mib("VmHWM") - before, "window": clip, "method": method}


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "a check that it runs: 8 and 16 frames, 2 sampling steps")
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 128, 512], help="frames per video")
    parser.add_argument("--model", default=None, help="a video model folder (default: the recipe's, untrained)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps per window (default: the model's)")
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths, args.steps = [8, 16], 2
    start = time.perf_counter()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["polydiff.benchmarks.video_length", "polydiff.modalities.video.generate"])
    model = load_model(args.model)
    labels = "class_labels" in getattr(model.denoiser.backbone, "null_cond", {})
    specs = [dict(frames=n, threads=args.threads, model=args.model, steps=args.steps, labels=labels)
             for n in args.lengths]
    with ProcessPoolExecutor(1, mp_context=ctx, max_tasks_per_child=1) as pool:
        results = list(pool.map(length_child, specs))
    first = results[0]
    rows = [f"| {r['frames']} | {r['seconds']:.1f} | {r['seconds'] / r['frames']:.3f} | "
            f"{r['seconds'] / r['frames'] / (first['seconds'] / first['frames']):.2f} | {r['peak']:.0f} | "
            f"{r['growth']:.1f} | {100 * (r['peak'] / first['peak'] - 1):+.1f}% |" for r in results]
    quick = " - QUICK SMOKE RUN, numbers meaningless" if args.quick else ""
    steps = args.steps or model.sampling.steps
    md = f"""## Long video generation: memory and time against length{quick}

Command: `{command_line("video_length", argv)}` ({time.perf_counter() - start:.0f} s). Machine: {machine()}.

`generate_video` (what `polydiff generate-video` runs) with {"the model in " + args.model if args.model else
"the untrained `recipes/video/moving_digits.toml` model"} ({sum(p.numel() for p in model.denoiser.parameters()):,}
parameters, clips of {first['window']} frames of {model.example_shape[2]}x{model.example_shape[3]}): autoregressive
extension in windows of {first['window']} frames knowing the last {first['window'] // 2} ({first['method']} frame
conditioning), {model.sampling.sampler} with {steps} steps per window, one label, streamed to an MP4 and the
resumable frame store. Each length runs in a fresh process (forked from a server that imported torch and polydiff)
after a one-window warm-up; peak RSS is the process's high-water mark during the generation, growth its rise over
the resident memory after the warm-up; {args.threads} thread(s). Targets: peak within 10% from the shortest to the
longest, seconds per frame constant.

| frames | seconds | seconds per frame | vs shortest | peak RSS (MiB) | growth (MiB) | peak vs shortest |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    return publish("video-length", md, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
