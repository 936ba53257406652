"""Image U-Net training throughput and peak memory: polydiff's U-Net against diffusers' ``UNet2DModel``.

    python -m polydiff.benchmarks.image_training [--rounds 6 --steps 4 --threads 1] [--quick] [--out FILE.md]

Both are Ho et al. 2020's DDPM U-Net (polydiff's preset "cifar10"; ``UNet2DModel`` as google/ddpm-cifar10-32: 35,746,307
parameters each), scaled to width 32 and three levels on the CPU (1,624,323 each). Forward, MSE, backward, AdamW;
fp32 and bf16 autocast, channels-last, gradient checkpointing; the section text says how it is measured. One torch
thread by default: on a shared 2-core machine two threads made steps 10-30x slower whenever another job ran.
A full CPU run takes about 3 minutes on 2 cores; ``--quick`` under a minute.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch

from .report import benchmark_parser, machine, publish, quiet_diffusers

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
PAIRS = [("fp32", "default"), ("bf16", "default"), ("fp32", "channels_last"), ("fp32", "checkpointing")]


@dataclass(frozen=True)
class Size:
    """A DDPM-style U-Net: ``channels`` times ``mult`` per level, two residual blocks, one-head attention on the
    second level (16x16 at 32x32), ``batch`` images of ``size`` x ``size`` RGB."""

    channels: int = 32
    mult: tuple[int, ...] = (1, 2, 2)
    size: int = 32
    batch: int = 16


FULL = Size(128, (1, 2, 2, 2), 32, 128)  # polydiff's preset "cifar10" = google/ddpm-cifar10-32


def polydiff_unet(s: Size, **options) -> torch.nn.Module:
    """polydiff's image backbone at size ``s`` (DDPM's settings: the "cifar10" preset), with UNetOptions ``options``."""
    from ..modalities.image.unet import ImageUNet, UNetOptions
    from ..registry import BackboneSpec

    opts = UNetOptions(preset="cifar10", channels=s.channels, channel_mult=s.mult, attention_resolutions=(s.size // 2,),
                       dropout=0.0, **options)
    return ImageUNet(opts, BackboneSpec((3, s.size, s.size)))


def diffusers_unet(s: Size) -> torch.nn.Module:
    """diffusers' ``UNet2DModel`` as google/ddpm-cifar10-32 is configured, at size ``s``."""
    from diffusers import UNet2DModel

    levels = len(s.mult)
    return UNet2DModel(sample_size=s.size, block_out_channels=tuple(s.channels * m for m in s.mult), layers_per_block=2,
                       down_block_types=tuple("AttnDownBlock2D" if i == 1 else "DownBlock2D" for i in range(levels)),
                       up_block_types=tuple("AttnUpBlock2D" if i == levels - 2 else "UpBlock2D" for i in range(levels)),
                       attention_head_dim=None, norm_eps=1e-6, dropout=0.0)


class Trainer:
    """One variant: a model, its AdamW and a fixed batch; ``step()`` is one training step. Subclasses for other
    networks override ``build`` and ``batch``, and ``preload`` (the modules a memory-measuring process imports)."""

    preload = ("polydiff.benchmarks.image_training", "diffusers.models.unets.unet_2d")

    def __init__(self, library: str, precision: str, option: str, s, device: str):
        torch.manual_seed(0)
        model, self.forward = self.build(library, option, s, device)
        self.model, self.device = model.to(device).train(), device
        self.params = sum(p.numel() for p in model.parameters())
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.x = self.batch(option, s, device)
        self.t = torch.rand(len(self.x), device=device) * 999
        dtype = PRECISIONS[precision]
        self.autocast = (lambda: torch.autocast(device, dtype)) if dtype else nullcontext

    def build(self, library: str, option: str, s: Size, device: str) -> tuple[torch.nn.Module, Callable]:
        """The network of ``library`` with ``option``, and forward(x, t) -> its output like x."""
        if library == "polydiff":
            model = polydiff_unet(s, channels_last=option == "channels_last",
                                  gradient_checkpointing=option == "checkpointing")
            return model, lambda x, t: model(x, t / 250 - 2, {})  # c_noise: EDM's log(sigma) / 4 range
        model = diffusers_unet(s)
        if option == "checkpointing":
            model.enable_gradient_checkpointing()
        if option == "channels_last":
            model.to(memory_format=torch.channels_last)
        return model, lambda x, t: model(x, t).sample

    def batch(self, option: str, s: Size, device: str) -> torch.Tensor:
        """The fixed batch (also the regression target)."""
        x = torch.randn(s.batch, 3, s.size, s.size, device=device)
        return x.contiguous(memory_format=torch.channels_last) if option == "channels_last" else x

    def step(self) -> None:
        with self.autocast():
            loss = (self.forward(self.x, self.t).float() - self.x).square().mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def run(self, steps: int) -> float:
        """Seconds for ``steps`` steps."""
        sync = torch.cuda.synchronize if self.device == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync()
        return time.perf_counter() - start


def bf16_ok(device: str) -> bool:
    return device == "cuda" or "AVX512" in torch.backends.cpu.get_cpu_capability()


def status_mib(field: str) -> float:
    """A field of /proc/self/status (VmRSS: resident now, VmHWM: its peak) in MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def memory_child(spec: dict) -> float:
    """(In a fresh process) The peak RSS (MiB) of one steady-state step of one variant over its RSS before that step
    (a first step has allocated the gradients and AdamW moments and touched the code)."""
    ctypes.CDLL(None).mallopt(-3, 65536)  # M_MMAP_THRESHOLD (glibc): large blocks are unmapped when freed
    torch.set_num_threads(spec["threads"])
    trainer = spec["trainer"](spec["library"], spec["precision"], spec["option"], spec["size"], "cpu")
    trainer.run(1)
    before = status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
    trainer.run(1)
    return status_mib("VmHWM") - before


def cpu_peaks(keys: list[tuple], s, threads: int, trainer: type[Trainer] = Trainer) -> dict[tuple, float]:
    """Peak RSS increase (MiB) of each variant, each in a process of its own, forked two at a time from a server
    that has imported torch, diffusers and ``trainer.preload`` (so imports are not counted, nor paid for each
    variant)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(trainer.preload))
    specs = [dict(zip(("library", "precision", "option"), key), size=s, threads=threads, trainer=trainer)
             for key in keys]
    try:
        with ProcessPoolExecutor(2, mp_context=ctx, max_tasks_per_child=1) as pool:
            return dict(zip(keys, pool.map(memory_child, specs)))
    except Exception as err:  # not Linux / glibc: no peak-RSS reset or mmap threshold
        print(f"no CPU memory figures: {type(err).__name__}: {err}")
        return dict.fromkeys(keys, float("nan"))


def timed_rounds(trainers: dict[tuple, Trainer], batch: int, device: str, rounds: int, steps: int,
                 warmup: int) -> tuple[dict[tuple, list[float]], dict[tuple, float]]:
    """Examples/s of each variant in each round (``rounds`` rounds of ``steps`` steps after ``warmup`` steps, in
    alternating order), and on CUDA the peak MiB of a step over what is held between steps."""
    keys = list(trainers)
    gpu_peaks, warm = {}, {}
    for key, trainer in trainers.items():
        warm[key] = trainer.run(warmup) / warmup
        if device == "cuda":  # one more step: its peak over what is held between steps
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            trainer.run(1)
            gpu_peaks[key] = (torch.cuda.max_memory_allocated() - base) / 2**20
    left = rounds * steps * sum(warm.values()) + (0 if device == "cuda" else 10 + len(keys))
    print(f"{device}: warm-up done; about {left:.0f} s left for this device "
          f"({', '.join(f'{k[0]} {k[1]} {k[2]} {v:.2f} s/step' for k, v in warm.items())})", flush=True)
    rates: dict[tuple, list[float]] = {k: [] for k in keys}
    for r in range(rounds):
        for key in keys if r % 2 == 0 else keys[::-1]:  # alternate, so drift within a round cancels
            rates[key].append(batch * steps / trainers[key].run(steps))
        print(f"{device} round {r + 1}: " + ", ".join(f"{k[0]} {k[1]} {k[2]} {v[-1]:.1f}" for k, v in rates.items()),
              flush=True)
    return rates, gpu_peaks


def bench_device(device: str, s: Size, rounds: int, steps: int, warmup: int) -> tuple[list[str], dict]:
    """Table rows (one per precision / option pair) for ``device``, and facts for the text."""
    pairs = [p for p in PAIRS if p[0] == "fp32" or bf16_ok(device)]
    keys = [(lib, *p) for p in pairs for lib in ("polydiff", "diffusers")]
    trainers = {k: Trainer(*k, s, device) for k in keys}
    rates, gpu_peaks = timed_rounds(trainers, s.batch, device, rounds, steps, warmup)
    params = {lib: trainers[(lib, "fp32", "default")].params for lib in ("polydiff", "diffusers")}
    del trainers
    peaks = gpu_peaks or cpu_peaks(keys, s, torch.get_num_threads())
    rows = []
    for precision, option in pairs:
        p, d = rates[("polydiff", precision, option)], rates[("diffusers", precision, option)]
        ratios = [a / b for a, b in zip(p, d)]
        mem = [peaks[(lib, precision, option)] for lib in ("polydiff", "diffusers")]
        rows.append(f"| {device} | {precision} | {option} | {statistics.median(p):.1f} | {statistics.median(d):.1f} | "
                    f"**{statistics.median(ratios):.2f}** | {', '.join(f'{x:.2f}' for x in ratios)} | "
                    f"{mem[0]:.0f} | {mem[1]:.0f} |")
    if device == "cpu" and not bf16_ok(device):
        rows.append("| cpu | bf16 | default | skipped: no AVX-512 | | | | | |")
    return rows, params


def command_line(module: str, argv: list[str] | None) -> str:
    """How ``polydiff.benchmarks.<module>`` was run, without ``--out`` (where the section went is not a result)."""
    flags = list(argv if argv is not None else sys.argv[1:])
    if "--out" in flags:
        i = flags.index("--out")
        del flags[i : i + 2]
    return " ".join([f"python -m polydiff.benchmarks.{module}", *[f for f in flags if not f.startswith("--out=")]])


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "a check that it runs: tiny model, 16x16, one step")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--channels", type=int, default=32, help="width of the CPU model (CUDA: the full 128)")
    parser.add_argument("--batch", type=int, default=16, help="CPU batch (CUDA: 128)")
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    diffusers = quiet_diffusers(args.threads)
    start = time.perf_counter()
    if args.quick:
        args.rounds, args.steps, args.warmup = 2, 1, 1
    sizes = {"cpu": Size(32, (1, 2), 16, 4) if args.quick else Size(args.channels, (1, 2, 2), 32, args.batch),
             "cuda": Size(32, (1, 2), 16, 4) if args.quick else FULL}
    rows, described = [], []
    for device in args.devices.split(","):
        s = sizes[device]
        device_rows, params = bench_device(device, s, args.rounds, args.steps, args.warmup)
        rows += device_rows
        described.append(f"{device}: channels {s.channels} x {list(s.mult)}, {s.size}x{s.size} RGB, batch {s.batch}; "
                         f"parameters polydiff {params['polydiff']:,}, diffusers {params['diffusers']:,}")
    command = command_line("image_training", argv)
    md = f"""## Image U-Net training: polydiff vs diffusers

Command: `{command}` ({time.perf_counter() - start:.0f} s). Machine: {machine()}. diffusers {diffusers.__version__}.

DDPM's CIFAR-10 U-Net (Ho et al. 2020) both ways: polydiff's image backbone with the "cifar10" preset's settings
and diffusers' `UNet2DModel` configured as google/ddpm-cifar10-32 (at full size both have 35,746,307 parameters),
dropout off in both, group-norm eps 1e-6 in both.
{chr(10).join(f"- {d}" for d in described)}

A step: forward, MSE loss, backward, AdamW (the bare backbones; no preconditioning, EMA or data loading). bf16 is
`torch.autocast` (the loss in fp32); channels_last converts both models and the batch; checkpointing is polydiff's
`gradient_checkpointing` option (per block) and diffusers' `enable_gradient_checkpointing()`. After {args.warmup}
warm-up step(s) per variant, {args.rounds} rounds of {args.steps} step(s) per variant in alternating order; images/s are
medians over rounds, the ratio is the median of the per-round polydiff / diffusers ratios (target: 1.5).
Peak memory (MiB) is that of one steady-state step over what is held between steps, i.e. activations and
workspace (weights, gradients and AdamW moments take 16 bytes a parameter in both): on CUDA
`torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`; on the CPU each variant runs in a process of its
own (forked from a server that has imported the libraries; glibc's mmap threshold fixed at 64 KiB, so freed
tensors leave the RSS), whose peak RSS (`VmHWM`, reset through `/proc/self/clear_refs` after a first step) is
taken over its RSS before the step.

| device | precision | layout / option | polydiff images/s | diffusers images/s | polydiff / diffusers | per round | polydiff peak MiB | diffusers peak MiB |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    return publish("image-training", md, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
