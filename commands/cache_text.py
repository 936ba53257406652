"""``polydiff cache-text RECIPE``: encode every caption of a recipe's data set once with its frozen text
encoder (the ``text_embeddings`` transform) and store the encodings where the transform reads them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..registry import register_command
from .arguments import positive_int


def _arguments(p) -> None:
    p.add_argument("recipe", help="a recipe whose data.transforms has text_embeddings")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    p.add_argument("--batch", type=positive_int, default=64, help="captions encoded at a time")
    p.add_argument("--out", default=None, help="the cache file (default: the transform's 'cache' option)")


@register_command("cache-text", help="precompute a data set's caption encodings into a safetensors cache",
                  arguments=_arguments)
def cache_text_command(args) -> int:
    from tqdm import tqdm

    from ..data.text import TextEmbeddings, write_cache
    from ..errors import UserError
    from ..modalities.nn.text import decode_bytes
    from ..recipes.files import load_recipe
    from ..storage.output import make_output_dir, writing
    from ..train.build import build_dataset
    from .train import resolve_recipe

    cfg = load_recipe(resolve_recipe(args.recipe), args.set)
    options = next((t.options for t in cfg.data.transforms if t.name == "text_embeddings"), None)
    if options is None:
        raise UserError(f"recipe {cfg.name!r} has no text_embeddings transform in data.transforms")
    out = Path(args.out or options.cache)
    if str(out) == "none":
        raise UserError("give --out, or set the transform's cache option")
    dataset = build_dataset(cfg)
    if not hasattr(dataset, "__len__"):
        raise UserError("cache-text reads map-style data sets (a stream has no end to read to)")
    captions = sorted({c for i in tqdm(range(len(dataset)), desc="captions", unit="example")
                       for c in decode_bytes(dataset[i]["cond"]["caption_ids"][None]) if c})
    transform = TextEmbeddings(dataclasses.replace(options, cache="none"))
    for first in tqdm(range(0, len(captions), args.batch), desc="encode", unit="batch"):
        transform.encode(captions[first : first + args.batch])
    with writing("writing the text cache", out.parent):
        make_output_dir(out.parent, "--out")
        write_cache(out, transform.cache)
    print(f"encoded {len(captions)} distinct captions with {options.encoder} into {out}")
    return 0
