"""Image editing from the command line: ``polydiff edit`` (SDEdit), ``polydiff inpaint`` (replacement or
RePaint) and ``polydiff interpolate`` (DDIM latent interpolation), each writing a PNG grid, one PNG per image
and samples.npz like ``polydiff sample``."""

from __future__ import annotations

from pathlib import Path

import torch

from ...commands.arguments import name, non_negative_float, positive_int, seed
from ...errors import UserError
from ...registry import WriteContext, register_command


def _common(p, inputs: bool = True) -> None:
    p.add_argument("model_dir")
    if inputs:
        p.add_argument("--input", nargs="+", required=True, help="image files (resized and centre-cropped to the "
                                                                    "model's size)")
    p.add_argument("--sampler", type=name, default=None)
    p.add_argument("--steps", type=positive_int, default=None)
    p.add_argument("--guidance", type=non_negative_float, default=None)
    p.add_argument("--label", type=int, default=None, help="class label for a class-conditional model")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--out", default="edited", help="output folder")


def _model(args):
    from ...pipeline import DiffusionModel

    model = DiffusionModel.from_pretrained(args.model_dir)
    if model.config.modality != "image":
        raise UserError(f"{args.model_dir} is a {model.config.modality!r} model; these commands edit images")
    return model


def read_images(paths: list[str], model) -> torch.Tensor:
    """Image files as the model's examples (N, C, H, W) in its data range; an unreadable file is one error."""
    from .folder import load_image

    channels, size = model.example_shape[0], model.example_shape[-1]
    lo, hi = model.config.data.range
    images = []
    for path in paths:
        try:
            image = load_image(Path(path), size, "rgb" if channels == 3 else "grey")
        except (OSError, ValueError) as err:
            raise UserError(f"{path}: cannot read it as an image ({type(err).__name__}: {err})") from None
        images.append((image + 1) / 2 * (hi - lo) + lo)  # [-1, 1] -> [lo, hi]
    return torch.stack(images)


def _cond(args, num: int) -> dict | None:
    return None if args.label is None else {"class_labels": torch.full((num,), args.label, dtype=torch.long)}


def _write(model, images: torch.Tensor, args, note: str) -> int:
    from ... import registry
    from ...media import save_media
    from ...storage.output import make_output_dir, writing

    writer = registry.get("writer", "image")
    context = WriteContext(model.config.data.range, model.config)
    with writing(f"writing the {note}", Path(args.out)):
        folder = make_output_dir(args.out, "--out")
        written = [save_media(writer.target(images.cpu(), context), folder / "samples")]
        written += writer.info["export"](images.cpu(), context, folder)
    print(f"wrote {len(images)} {note} to {', '.join(map(str, written))}")
    return 0


def _edit_arguments(p) -> None:
    _common(p)
    p.add_argument("--strength", type=float, default=0.6, help="0 < s <= 1: how much noise before solving back "
                                                                "(small keeps more of the input)")


@register_command("edit", help="image-to-image with SDEdit: noise the inputs part way and solve back",
                  arguments=_edit_arguments)
def edit_command(args) -> int:
    from ...pipeline.editing import edit

    if not 0 < args.strength <= 1:
        raise UserError(f"--strength must lie in (0, 1], got {args.strength}")
    model = _model(args)
    images = read_images(args.input, model)
    out = edit(model, images, args.strength, sampler=args.sampler, steps=args.steps, guidance=args.guidance,
               seed=args.seed, cond=_cond(args, len(images)))
    return _write(model, torch.cat([images.to(out.device), out]), args, "inputs and edits")


def _inpaint_arguments(p) -> None:
    _common(p)
    p.add_argument("--mask", required=True, help="an image: white where new content goes, black where the input "
                                                  "is kept (one mask for every input)")
    p.add_argument("--method", choices=["replacement", "repaint"], default="replacement")
    p.add_argument("--resample", type=positive_int, default=10, help="RePaint's repetitions per step")


@register_command("inpaint", help="fill in masked regions of images (replacement, or RePaint)",
                  arguments=_inpaint_arguments)
def inpaint_command(args) -> int:
    from ...pipeline.editing import inpaint
    from .folder import load_image

    model = _model(args)
    images = read_images(args.input, model)
    try:
        mask = load_image(Path(args.mask), model.example_shape[-1], "grey")  # (1, H, W) in [-1, 1]
    except (OSError, ValueError) as err:
        raise UserError(f"{args.mask}: cannot read it as a mask image ({type(err).__name__}: {err})") from None
    keep = (mask < 0)[None]  # black (below mid-grey) = keep: (1, 1, H, W)
    out = inpaint(model, images, keep, method=args.method, resample=args.resample, sampler=args.sampler,
                  steps=args.steps, guidance=args.guidance, seed=args.seed, cond=_cond(args, len(images)))
    return _write(model, torch.cat([images.to(out.device), out]), args, "inputs and inpaintings")


def _interpolate_arguments(p) -> None:
    _common(p, inputs=False)
    p.add_argument("--to-seed", type=seed, default=1, help="the other end of the path (--seed is the first)")
    p.add_argument("--num", type=positive_int, default=8, help="points on the path, both ends included")


@register_command("interpolate", help="DDIM latent interpolation between two seeds (slerp)",
                  arguments=_interpolate_arguments)
def interpolate_command(args) -> int:
    from ...pipeline.editing import interpolate

    model = _model(args)
    if args.num < 2:
        raise UserError(f"--num must be at least 2 for a path, got {args.num}")
    out = interpolate(model, args.seed, args.to_seed, args.num, steps=args.steps, guidance=args.guidance,
                      cond=_cond(args, 1))
    return _write(model, out, args, "interpolated images")
