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
    p.add_argument("--prompt", nargs="+", default=None, metavar="TEXT",
                   help="captions for a text-conditional model; --num is spread evenly over them, in order")
    p.add_argument("--classifier", default=None, metavar="DIR",
                   help="a noise-aware classifier's model folder: classifier guidance towards --label / --labels "
                        "(Dhariwal & Nichol 2021)")
    p.add_argument("--classifier-scale", type=non_negative_float, default=1.0, metavar="S",
                   help="the classifier guidance scale s (default 1; 0: unguided)")
    p.add_argument("--seed", type=seed, default=0, help="sample i uses seed + i")
    p.add_argument("--batch", type=positive_int, default=256, help="samples drawn at a time (the result is the same)")
    p.add_argument("--aug-level", type=non_negative_float, nargs="+", default=None, metavar="A",
                   help="a cascade: the super-resolution stages' augmentation level; several levels are swept and "
                        "written side by side (samples_aug<A>.*, samples.png holds all)")
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
    classifier = None
    if args.classifier is not None:
        from ..pipeline import DiffusionModel
        from ..pipeline.classifier import with_classifier

        classifier = DiffusionModel.from_pretrained(args.classifier)
        pipeline = with_classifier(pipeline, classifier, args.classifier_scale)
    cond = {**(class_labels(args, classifier or pipeline.first) or {}), **prompts(args, pipeline.first)} or None
    options = dict(seed=args.seed, batch_size=args.batch, sampler=args.sampler, steps=args.steps,
                   guidance=args.guidance)
    model = pipeline.last
    writer = registry.get("writer", model.config.modality)
    labels = cond["class_labels"].tolist() if cond and "class_labels" in cond else None
    context = registry.WriteContext(model.config.data.range, model.config, labels=labels)
    runs = _aug_levels(args, pipeline)
    folder, written, media = None, [], []
    for suffix, run in runs:
        samples = run.sample(args.num, cond=cond, **options)
        with writing("writing samples", out):
            folder = make_output_dir(out, "--out")
            media.append(writer.target(samples, context))
            if len(runs) > 1:
                written.append(save_media(media[-1], folder / f"samples{suffix}"))
            if writer.info.get("export") is not None:
                written += writer.info["export"](samples, context, folder / suffix.strip("_") if suffix else folder)
    with writing("writing samples", out):
        written.insert(0, save_media(side_by_side(media), folder / "samples"))
    print(f"wrote {args.num} samples to {', '.join(str(p) for p in written)}")
    return 0


def _aug_levels(args, pipeline) -> list:
    """[(file suffix, pipeline)] for each --aug-level of a cascade, or [("", pipeline)]."""
    from ..errors import UserError
    from ..pipeline.cascade import with_aug_level

    if args.aug_level is None:
        return [("", pipeline)]
    if len(pipeline.stages) < 2:
        raise UserError("--aug-level: this is not a cascade (a folder with cascade.json)")
    if any(a >= 1 for a in args.aug_level):
        raise UserError(f"--aug-level must be below 1, got {max(args.aug_level)}")
    if len(args.aug_level) == 1:
        return [("", with_aug_level(pipeline, args.aug_level[0]))]
    return [(f"_aug{a:g}", with_aug_level(pipeline, a)) for a in args.aug_level]


def side_by_side(media: list):
    """Images next to each other with a white gap (a sweep), or the one medium."""
    import numpy as np

    from ..media import Image

    if len(media) == 1 or not all(isinstance(m, Image) for m in media):
        return media[0]
    height = max(m.pixels.shape[0] for m in media)
    pad = [np.pad(m.pixels, ((0, height - m.pixels.shape[0]), (0, 8), (0, 0)), constant_values=255) for m in media]
    return Image(np.concatenate(pad, axis=1))


def prompts(args, model) -> dict:
    """``--prompt A B ...``: sample i gets prompt i * len(prompts) // num (in order)."""
    if not args.prompt:
        return {}
    from ..pipeline.prompts import prompt_conditions

    return prompt_conditions(model, [args.prompt[i * len(args.prompt) // args.num] for i in range(args.num)])


def class_labels(args, model) -> dict | None:
    """``--label K`` for every sample, or ``--labels all``: sample i gets class i * classes // num (in order), the
    classes of ``model`` (the guiding classifier, or the first stage)."""
    import torch

    from ..errors import UserError

    if args.label is not None:
        return {"class_labels": torch.full((args.num,), args.label, dtype=torch.long)}
    if args.labels == "all":
        backbone = model.denoiser.backbone
        classes = getattr(backbone, "null_cond", {}).get("class_labels", getattr(backbone, "num_classes", None))
        if classes is None:
            raise UserError("--labels all: this model is not class-conditional (and no --classifier is given)")
        return {"class_labels": torch.arange(args.num) * classes // args.num}
    return None
