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
    p.add_argument("--label", type=label, default=None, help="class label for a class-conditional model")
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
    import torch

    from .. import registry
    from ..media import save_media
    from ..pipeline import Pipeline
    from ..storage.output import check_output_dir, make_output_dir, writing

    out = check_output_dir(args.out, "--out")
    pipeline = Pipeline.from_pretrained(args.model_dir)
    check_room(args.num, pipeline.last.example_shape)
    cond = None
    if args.label is not None:
        cond = {"class_labels": torch.full((args.num,), args.label, dtype=torch.long)}
    samples = pipeline.sample(args.num, cond=cond, seed=args.seed, batch_size=args.batch, sampler=args.sampler,
                              steps=args.steps, guidance=args.guidance)
    model = pipeline.last
    writer = registry.get("writer", model.config.modality).target
    media = writer(samples.cpu(), registry.WriteContext(model.config.data.range, model.config))
    with writing("writing samples", out):
        path = save_media(media, make_output_dir(out, "--out") / "samples")
    print(f"wrote {args.num} samples to {path}")
    return 0
