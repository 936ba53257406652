"""``polydiff sample MODEL_DIR``: draw samples from a model folder and write them as the modality's media."""

from __future__ import annotations

from ..registry import register_command
from .arguments import label, name, non_negative_float, positive_int, seed


def _arguments(p) -> None:
    p.add_argument("model_dir")
    p.add_argument("--num", type=positive_int, default=16)
    p.add_argument("--sampler", type=name, default=None, help="a sampler name (default: the model's)")
    p.add_argument("--steps", type=positive_int, default=None)
    p.add_argument("--guidance", type=non_negative_float, default=None)
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--label", type=label, default=None, help="class label for a class-conditional model")
    labels.add_argument("--labels", choices=["all"], default=None,
                        help="'all': spread --num evenly over the classes, in order (a grid row per class)")
    p.add_argument("--seed", type=seed, default=0, help="sample i uses seed + i")
    p.add_argument("--batch", type=positive_int, default=256, help="samples drawn at a time (the result is the same)")
    p.add_argument("--out", default="samples", help="output folder (created; files in it are replaced)")


def check_room(num: int, example_shape: tuple[int, ...], free: int | None = None) -> None:
    """The samples (and the writer's copies of them) must fit in memory (``free`` bytes, by default what the
    machine has free): say so before sampling, not after."""
    import math

    from ..errors import UserError
    from ..pipeline.resources import available_bytes

    need = 3 * num * math.prod(example_shape) * 4
    if need > (available_bytes("cpu") if free is None else free):
        raise UserError(f"--num {num}: {num} samples of shape {example_shape} need about {need / 2**30:.1f} GiB, more "
                        f"than this machine has free; draw them in several runs (--seed picks up where one ended)")


@register_command("sample", help="sample a trained model folder", arguments=_arguments)
def sample_command(args) -> int:
    from .. import registry
    from ..media import save_media
    from ..pipeline import Pipeline
    from ..storage.output import check_output_dir, make_output_dir, writing

    out = check_output_dir(args.out, "--out")
    pipeline = Pipeline.from_pretrained(args.model_dir)
    check_room(args.num, pipeline.last.example_shape)
    cond = class_labels(args, pipeline.last)
    samples = pipeline.sample(args.num, cond=cond, seed=args.seed, batch_size=args.batch, sampler=args.sampler,
                              steps=args.steps, guidance=args.guidance)
    model = pipeline.last
    writer = registry.get("writer", model.config.modality)
    labels = cond["class_labels"].tolist() if cond else None
    context = registry.WriteContext(model.config.data.range, model.config, labels=labels)
    with writing("writing samples", out):
        folder = make_output_dir(out, "--out")
        written = [save_media(writer.target(samples, context), folder / "samples")]
        if writer.info.get("export") is not None:
            written += writer.info["export"](samples, context, folder)
    print(f"wrote {args.num} samples to {', '.join(str(p) for p in written)}")
    return 0


def class_labels(args, model) -> dict | None:
    """``--label K`` for every sample, or ``--labels all``: sample i gets class i * classes // num (in order)."""
    import torch

    from ..errors import UserError

    if args.label is not None:
        return {"class_labels": torch.full((args.num,), args.label, dtype=torch.long)}
    if args.labels == "all":
        classes = getattr(model.denoiser.backbone, "null_cond", {}).get("class_labels")
        if classes is None:
            raise UserError("--labels all: this model is not class-conditional")
        return {"class_labels": torch.arange(args.num) * classes // args.num}
    return None
