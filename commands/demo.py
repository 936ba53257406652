"""``polydiff demo``: every modality's demo part in order (``polydiff.registry.register_demo``)."""

from __future__ import annotations

import time

from ..errors import UserError
from ..registry import components, register_command
from ..storage.output import check_output_dir


def _arguments(p) -> None:
    p.add_argument("--out", default="out/demo", help="folder for the demo's runs and pictures")
    p.add_argument("--only", action="append", default=None, metavar="PART", help="run only this part (repeatable)")
    p.add_argument("--quick", action="store_true", help="a seconds-long version of each part (a smoke test)")


@register_command("demo", help="train and sample every modality's demo (see README for the time it takes)",
                  arguments=_arguments)
def demo_command(args) -> int:
    parts = sorted(components("demo"), key=lambda c: c.info["order"])
    known = [c.name for c in parts]
    unknown = [name for name in args.only or () if name not in known]
    if unknown:
        raise UserError(f"--only: unknown demo part {unknown[0]!r}; known: {', '.join(known)}")
    out, start = check_output_dir(args.out, "--out"), time.perf_counter()
    for part in parts:
        if args.only and part.name not in args.only:
            continue
        print(f"demo: {part.name}: {part.info['about']}")
        files = part.target(out, args.quick)
        print(f"demo: {part.name} wrote {', '.join(str(f) for f in files)}")
    print(f"demo: done in {time.perf_counter() - start:.0f} s")
    return 0
