"""BENCHMARKS.md is assembled from sections, one per benchmark, each replaced in place when its
benchmark runs again (between ``<!-- section: NAME -->`` and ``<!-- end: NAME -->``)."""

from __future__ import annotations

import argparse
import platform
import re
from pathlib import Path

import torch

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nEach section is written by the benchmark it names (`make bench` runs them all).\n"


def cpu_name() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line naming the machine a benchmark ran on: CPU model and vector capability (AVX2 machines run
    bf16 40-100x slower than AVX-512 ones), cores, torch, threads, GPU."""
    import os

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{cpu_name()} ({torch.backends.cpu.get_cpu_capability()}), {os.cpu_count()} cores, torch "
            f"{torch.__version__}, {torch.get_num_threads()} threads, GPU {gpu}")


def write_section(name: str, markdown: str, path: Path = BENCHMARKS_MD) -> Path:
    """Put ``markdown`` into the file as section ``name`` (replacing an older one, else appending)."""
    text = path.read_text() if path.exists() else HEADER
    block = f"<!-- section: {name} -->\n{markdown.strip()}\n<!-- end: {name} -->"
    pattern = re.compile(rf"<!-- section: {re.escape(name)} -->.*?<!-- end: {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text.rstrip()}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def publish(name: str, markdown: str, path: Path | str = BENCHMARKS_MD) -> int:
    """Print a benchmark's section, write it into ``path`` (``write_section``) and say where: a benchmark's last
    step, returning its exit status."""
    print(markdown)
    print(f"wrote section {name!r} of {write_section(name, markdown, Path(path))}")
    return 0


def benchmark_parser(doc: str, quick: str) -> argparse.ArgumentParser:
    """An argument parser described by the first line of ``doc``, with the options every image / audio benchmark
    shares: ``--threads`` (torch threads on the CPU), ``--quick`` (helped by ``quick``) and ``--out`` (the
    Markdown file)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--out", default=str(BENCHMARKS_MD), help="the Markdown file to write the section into")
    return parser


def quiet_diffusers(threads: int):
    """diffusers, imported with its warnings off, and torch on ``threads`` threads: the set-up of every benchmark
    that runs diffusers beside polydiff."""
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    torch.set_num_threads(threads)
    return diffusers
