"""``polydiff generate-video``: a video of any length from a model of short clips, streamed into an MP4 as it is
made (``extend``: autoregressive extension, then optional temporal upsampling), resumable after an interruption
(``frame_store``), with a GIF, a frame-strip PNG and ``frames.npz`` on request.

    polydiff generate-video MODEL_DIR --frames 64 --out video.mp4 [--interpolate 2] [--label 3] [--prompt TEXT]
                            [--method guidance]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from itertools import chain
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ...commands.arguments import label, name, non_negative_float, positive_int, seed
from ...errors import UserError
from ...media import Image, save_media
from ...media.video import Mp4Writer
from ...registry import register_command
from .extend import WindowSampler, extension, interpolation, known_per_window
from .frame_store import FrameStore, Run
from .writer import DEFAULT_FPS, strip

METHODS = ("auto", "explicit", "guidance")


def frame_conditioned(model) -> bool:
    """Whether ``model`` takes known frames as input (a ``video_unet`` with frame_conditioning)."""
    return bool(getattr(getattr(model.denoiser.backbone, "options", None), "frame_conditioning", False))


def output_frames(frames: int, factor: int) -> int:
    """Frames of the video: ``frames`` made by extension, with factor - 1 between each pair."""
    return (frames - 1) * factor + 1


def generate_video(model, out: Path, frames: int, sample: WindowSampler, *, window: int, context: int,
                   factor: int = 1, fps: float = DEFAULT_FPS, progress: bool = True,
                   interpolator: WindowSampler | None = None) -> tuple[Path, int, bool]:
    """Make the video into ``out`` (MP4), resuming a ``<out>.partial`` run with the same settings; (the MP4, frames
    made by this call, whether it resumed). Memory holds one window and the MP4 encoder, whatever the length.
    ``interpolator``: another model's sampler for the frames between (a temporal super-resolution stage; its
    windows are as long as its clips); default ``sample``."""
    between = interpolator or sample
    channels, _, height, width = model.example_shape
    settings = {"model": str(model.source), "frames": frames, "factor": factor, "window": window, "context": context,
                "method": sample.method, "weight": sample.weight, "seed": sample.seed, "steps": sample.steps,
                "sampler": sample.sampler, "guidance": sample.guidance,
                "cond": {k: v.tolist() for k, v in (sample.cond or {}).items()},
                "interpolator": None if interpolator is None else str(interpolator.model.source)}
    run = Run(out, settings, (height, width, channels))
    resumed = run.open()
    total, interpolating = output_frames(frames, factor), factor > 1
    final = run.out if interpolating else run.base
    kept = run.done["out" if interpolating else "base"]
    bar = tqdm(total=total, initial=kept, unit="frame", desc=f"generate {out.name}", disable=not progress)
    made = 0
    with Mp4Writer(run.folder / "video.mp4", fps) as writer:
        for frame in final.frames(kept):  # what an earlier run kept, encoded again
            writer.write(frame)

        def new_base_windows():
            """The new frames of each extension window, kept on disk before they are used."""
            done = run.done["base"]
            for new in extension(sample, frames, window, context, list(run.base.read(done - context, done)), done):
                run.base.append(new)
                run.commit(base=run.done["base"] + len(new))
                yield new

        if kept >= total:
            windows = iter(())
        elif interpolating:
            stream = chain(run.base.frames(run.done["base"]), chain.from_iterable(new_base_windows()))
            span = between.model.example_shape[1] if interpolator else window
            windows = interpolation(between, stream, factor, span, kept // ((known_per_window(factor, span) - 1)
                                                                            * factor))
        else:
            windows = new_base_windows()
        for block in windows:
            if interpolating:
                run.out.append(block)
                run.commit(out=run.done["out"] + len(block))
            for frame in block:
                writer.write(frame)
            made += len(block)
            bar.update(len(block))
    bar.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    (run.folder / "video.mp4").replace(out)
    return out, made, resumed


def finished_frames(model, out: Path, factor: int, total: int) -> np.ndarray:
    """The frames of a finished ``generate_video`` into ``out``, uint8 (F, H, W, C), read from its run folder (the
    whole video in memory: for the extras and for looking)."""
    channels, _, height, width = model.example_shape
    folder = out.with_name(out.name + ".partial")
    return FrameStore(folder / ("out.u8" if factor > 1 else "base.u8"), (height, width, channels)).read(0, total)


def discard_run(out: Path) -> None:
    """Remove the run folder of a finished ``generate_video`` into ``out``."""
    shutil.rmtree(out.with_name(out.name + ".partial"), ignore_errors=True)


def write_extras(run_frames, out: Path, fps: float, gif: bool, strip_png: bool, npz: bool) -> list[Path]:
    """The GIF, strip PNG and frames.npz beside ``out`` from the finished frames (uint8 (F, H, W, C)); unlike the
    MP4 these hold the whole video in memory once."""
    written = []
    if npz:
        np.savez(out.with_suffix(".npz"), arr_0=run_frames)
        written.append(out.with_suffix(".npz"))
    if strip_png:
        written.append(save_media(Image(strip(run_frames)), out.with_name(out.stem + "_strip")))
    if gif:
        from PIL import Image as PILImage

        pictures = [PILImage.fromarray(f[:, :, 0] if f.shape[2] == 1 else f) for f in run_frames]
        path = out.with_suffix(".gif")
        pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=round(1000 / fps), loop=0)
        written.append(path)
    return written


def _positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number > 0, got 0")
    return value


def _arguments(p) -> None:
    p.add_argument("model_dir", help="a video model folder (e.g. runs/moving_digits/model)")
    p.add_argument("--frames", type=positive_int, required=True, help="frames made by extension (before "
                                                                      "--interpolate)")
    p.add_argument("--out", required=True, help="the .mp4 file to write")
    p.add_argument("--fps", type=_positive_float, default=None, help="frames per second of the MP4 (default: 8 x "
                                                                     "--interpolate)")
    p.add_argument("--chunk", type=positive_int, default=None, help="frames per window (default: the model's clip "
                                                                    "length)")
    p.add_argument("--context", type=positive_int, default=None, help="known frames at the start of each extension "
                                                                      "window (default: half of --chunk)")
    p.add_argument("--method", choices=METHODS, default="auto", help="explicit: the model's frame conditioning; "
                   "guidance: reconstruction guidance (any model); auto: explicit when the model has it")
    p.add_argument("--guidance-weight", type=non_negative_float, default=2.0, help="w_r of reconstruction guidance (0: the "
                                                                      "replacement method)")
    p.add_argument("--interpolate", type=positive_int, default=1, help="K: generate K - 1 frames between each pair")
    p.add_argument("--interpolator", default=None, help="a frame-conditioned model folder that makes the frames "
                                                        "between (a temporal super-resolution stage; default: the "
                                                        "model itself)")
    p.add_argument("--label", type=label, default=None, help="class label (a class-conditional model)")
    p.add_argument("--prompt", default=None, help="a caption (a text-conditional model, model.options.text)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance weight (default: the "
                                                                "model's, with --label or --prompt)")
    p.add_argument("--steps", type=positive_int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--sampler", type=name, default=None, help="a sampler of core.samplers (default: the model's)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--gif", action="store_true", help="also write <out>.gif")
    p.add_argument("--strip", action="store_true", help="also write <out>_strip.png (every frame in a row)")
    p.add_argument("--npz", action="store_true", help="also write <out>.npz (arr_0: uint8 F x H x W x C)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")


@register_command("generate-video", help="a long video by autoregressive extension (and temporal upsampling), "
                                          "streamed to MP4, resumable", arguments=_arguments)
def generate_video_command(args) -> int:
    from ...pipeline import DiffusionModel
    from ...core.conditioning import conditions_taken
    from ...pipeline.model import check_class_labels
    from ...pipeline.prompts import prompt_conditions
    from ...storage.output import check_output_dir, writing

    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise UserError(f"--out {args.out}: expected an .mp4 file")
    check_output_dir(out.parent, "--out")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: no CUDA device is available here; use --device cpu")
    model = DiffusionModel.from_pretrained(args.model_dir, args.device)
    if len(model.example_shape) != 4:
        raise UserError(f"{args.model_dir}: not a video model (its examples have shape {model.example_shape})")
    window = args.chunk or model.example_shape[1]
    context = args.context or max(1, window // 2)
    if not 0 < context < window:
        raise UserError(f"--context {context} must be fewer than the window's {window} frames (--chunk)")
    method = args.method
    if method == "auto":
        method = "explicit" if frame_conditioned(model) else "guidance"
    if method == "explicit" and not frame_conditioned(model):
        raise UserError(f"--method explicit: {args.model_dir} was not trained with frame conditioning; use "
                        f"--method guidance")
    cond = {} if args.label is None else {"class_labels": torch.tensor([args.label], device=model.device)}
    check_class_labels(cond, getattr(model.denoiser.backbone, "null_cond", {}), args.model_dir)
    captions = {} if args.prompt is None else prompt_conditions(model, [args.prompt])
    cond = {**cond, **{k: v.to(model.device) for k, v in captions.items()}} or None
    sample = WindowSampler(model, method, args.guidance_weight, cond, args.guidance, args.sampler, args.steps, args.seed)
    interpolator = None
    if args.interpolator:
        other = DiffusionModel.from_pretrained(args.interpolator, args.device)
        if other.example_shape[0] != model.example_shape[0] or other.example_shape[2:] != model.example_shape[2:]:
            raise UserError(f"--interpolator {args.interpolator}: its frames {other.example_shape[2:]} x "
                            f"{other.example_shape[0]} channels differ from the model's {model.example_shape[2:]} x "
                            f"{model.example_shape[0]}")
        taken = conditions_taken(other.denoiser.backbone, cond or {})  # the label or caption, if it takes them
        interpolator = WindowSampler(other, "explicit" if frame_conditioned(other) else "guidance",
                                     args.guidance_weight, taken or None, args.guidance,
                                     args.sampler, args.steps, args.seed)
    fps = args.fps or DEFAULT_FPS * args.interpolate
    try:
        with writing(f"writing {out.name}", out.parent):
            path, made, resumed = generate_video(model, out, args.frames, sample, window=window, context=context,
                                                 factor=args.interpolate, fps=fps, progress=sys.stderr.isatty(),
                                                 interpolator=interpolator)
    except KeyboardInterrupt:
        print(f"interrupted: the frames made so far are kept in {out.name}.partial; run the same command again "
              f"to continue", file=sys.stderr)
        return 130
    total = output_frames(args.frames, args.interpolate)
    extras = write_extras(finished_frames(model, out, args.interpolate, total), out, fps, args.gif, args.strip,
                          args.npz) if (args.gif or args.strip or args.npz) else []
    discard_run(out)
    print(f"wrote {path} ({total} frames at {fps:g} fps, {method}{' resumed' if resumed else ''}, {made} made now)"
          + "".join(f", {p}" for p in extras))
    return 0
