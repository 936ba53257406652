"""Video U-Net training throughput and peak memory: polydiff's video U-Net against diffusers' UNet3DConditionModel.

    python -m polydiff.benchmarks.video_training [--rounds 3 --steps 1 --threads 1] [--quick] [--out FILE.md]

Two factorized space-time U-Nets, 2-D layers run per frame (frames folded into the batch) with layers over time in
between: polydiff's ``video_unet``, the U-Net of Video Diffusion Models (Ho et al. 2022, sec. 3: temporal attention
after each block; here with its 3-tap temporal convolution too), and diffusers' ``UNet3DConditionModel``,
ModelScope's text-to-video U-Net (Wang et al. 2023, "ModelScope Text-to-Video Technical Report": temporal
convolutions after each residual block, spatial transformers with cross-attention to text, temporal transformers).
Same widths, levels and attention heads; parameters within 1%, forward FLOPs within 6% (polydiff has one more
residual block at the lowest level, for ModelScope's transformer feed-forwards); the section says what differs.

Measured in one run, the variants' rounds interleaved: clips/s of training steps (forward, MSE to the random clip,
backward, AdamW) in fp32, in bf16 autocast (AVX-512 CPUs and CUDA) and with gradient checkpointing (polydiff only:
diffusers' model does not support it); each variant's peak memory of a step, in a process of its own; polydiff at
2x and 4x the frames (time and FLOPs per frame). Timing, rounds and memory are image_training's helpers.
A full CPU run takes about 5 minutes on 2 cores (1 thread: one step of every variant is ~50 s, 4x frames alone
~20 s); ``--quick`` about 25 s.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace

import torch

from .image_training import Trainer, bf16_ok, command_line, cpu_peaks, timed_rounds
from .report import benchmark_parser, machine, publish, quiet_diffusers

LIBRARIES = ("polydiff", "diffusers")
CONTEXT = 32  # width of the one text token diffusers' forward requires (cross_attention_dim)
HEAD_CHANNELS = 8  # every attention head of both: 4 heads at width 32, 8 at 64


@dataclass(frozen=True)
class Clips:
    """Both networks: ``channels`` times ``mult`` per level, attention on all levels but the lowest, ``batch`` clips
    of ``frames`` RGB frames of ``size`` x ``size``. ``blocks``: polydiff's residual blocks per level (diffusers':
    one, ``layers_per_block``; the decoder one more in both)."""

    channels: int = 32
    mult: tuple[int, ...] = (1, 2, 2)
    blocks: tuple[int, ...] = (2, 2, 3)
    size: int = 32
    frames: int = 8
    batch: int = 2


QUICK = Clips(32, (1, 2), (3, 2), 16, 4, 1)  # parameters and FLOPs within 1% and 4%


def polydiff_video_unet(s: Clips, **options) -> torch.nn.Module:
    """polydiff's ``video_unet`` backbone at size ``s``, with the temporal convolution, and VideoUNetOptions
    ``options``."""
    from ..modalities.video.unet import VideoUNet, VideoUNetOptions
    from ..registry import BackboneSpec

    opts = VideoUNetOptions(channels=s.channels, channel_mult=s.mult, num_res_blocks=s.blocks, dropout=0.0,
                            attention_resolutions=tuple(s.size >> i for i in range(len(s.mult) - 1)),
                            head_channels=HEAD_CHANNELS, temporal_head_channels=HEAD_CHANNELS, temporal_conv=True,
                            **options)
    return VideoUNet(opts, BackboneSpec((3, s.frames, s.size, s.size)))


def diffusers_video_unet(s: Clips) -> torch.nn.Module:
    """diffusers' ``UNet3DConditionModel`` with ModelScope's block layout (cross-attention blocks on all levels but
    the lowest) at size ``s``, dropout off."""
    from diffusers import UNet3DConditionModel

    levels = len(s.mult)
    model = UNet3DConditionModel(
        sample_size=s.size, in_channels=3, out_channels=3, block_out_channels=tuple(s.channels * m for m in s.mult),
        layers_per_block=1, down_block_types=("CrossAttnDownBlock3D",) * (levels - 1) + ("DownBlock3D",),
        up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * (levels - 1), cross_attention_dim=CONTEXT,
        attention_head_dim=HEAD_CHANNELS)  # the blocks' head width (whatever its docs say); transformer_in: 8 heads
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0  # TemporalConvLayer hard-codes 0.1; polydiff's dropout is 0 too
    return model


def scaled(option: str, s: Clips) -> Clips:
    """The clips of ``option``: "2x frames" has twice ``s.frames``."""
    return replace(s, frames=s.frames * int(option[0])) if option.endswith("x frames") else s


class VideoTrainer(Trainer):
    """image_training's ``Trainer`` on clips (B, 3, F, H, W); options "default", "checkpointing", "Nx frames"."""

    preload = ("polydiff.benchmarks.video_training", "diffusers.models.unets.unet_3d_condition")

    def build(self, library: str, option: str, s: Clips, device: str):
        s = scaled(option, s)
        if library == "polydiff":
            model = polydiff_video_unet(s, gradient_checkpointing=option == "checkpointing")
            return model, lambda x, t: model(x, t / 250 - 2, {})  # c_noise: EDM's log(sigma) / 4 range
        model = diffusers_video_unet(s)
        if option == "checkpointing":
            model.enable_gradient_checkpointing()
        context = torch.randn(1, 1, CONTEXT, device=device)  # (1, L=1, D): the same token for every clip
        return model, lambda x, t: model(x, t, context.expand(len(x), -1, -1)).sample

    def batch(self, option: str, s: Clips, device: str) -> torch.Tensor:
        s = scaled(option, s)
        return torch.randn(s.batch, 3, s.frames, s.size, s.size, device=device)


def gflops(trainer: Trainer) -> float:
    """Forward GFLOPs per clip by torch's FLOP counter (the CPU's fused attention counted as the GPU kernels are)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    cpu_attention = {flash: lambda q, k, v, *_, **__: sdpa_flop_count(q, k, v)}  # shapes (B, heads, N, d)
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:
        trainer.forward(trainer.x[:1], trainer.t[:1])
    return counter.get_total_flops() / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "a check that it runs: two levels, 16x16, 4 frames, one clip, one step")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1, help="timed steps per variant per round")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2, help="clips per step")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the same sizes)")
    args = parser.parse_args(argv)
    diffusers = quiet_diffusers(args.threads)
    start = time.perf_counter()
    if args.quick:
        args.rounds, args.steps, args.warmup = 1, 1, 1
    s, device = QUICK if args.quick else Clips(frames=args.frames, batch=args.batch), args.device
    diffusers_checkpoints = diffusers.UNet3DConditionModel._supports_gradient_checkpointing  # False in 0.42
    pairs = [("fp32", "default"), *([("bf16", "default")] if bf16_ok(device) else []), ("fp32", "checkpointing")]
    keys = [(lib, *p) for p in pairs for lib in LIBRARIES
            if p[1] == "default" or lib == "polydiff" or diffusers_checkpoints]
    longer = [("polydiff", "fp32", f"{k}x frames") for k in (2, 4)]
    trainers = {k: VideoTrainer(*k, s, device) for k in keys + longer}
    base = {lib: (lib, "fp32", "default") for lib in LIBRARIES}
    params = {lib: trainers[base[lib]].params for lib in LIBRARIES}
    flops = {k: gflops(trainers[k]) for k in [*base.values(), *longer]}
    rates, peaks = timed_rounds(trainers, s.batch, device, args.rounds, args.steps, args.warmup)
    del trainers
    peaks = peaks or cpu_peaks(keys + longer, s, torch.get_num_threads(), VideoTrainer)

    def cells(values: list[float]) -> str:
        return f"**{statistics.median(values):.2f}** | {', '.join(f'{x:.2f}' for x in values)}"

    rows = []
    for precision, option in pairs:
        p, d = (rates.get((lib, precision, option)) for lib in LIBRARIES)
        mem = [peaks.get((lib, precision, option), float("nan")) for lib in LIBRARIES]
        if d is None:
            rows.append(f"| {precision} | {option} | {statistics.median(p):.2f} | not supported | | | {mem[0]:.0f} | |")
        else:
            rows.append(f"| {precision} | {option} | {statistics.median(p):.2f} | {statistics.median(d):.2f} | "
                        f"{cells([a / b for a, b in zip(p, d)])} | {mem[0]:.0f} | {mem[1]:.0f} |")
    if not bf16_ok(device):
        rows.append("| bf16 | default | skipped: no AVX-512 | | | | | |")
    frame_rows, first = [], base["polydiff"]
    for k, key in zip((1, 2, 4), [first, *longer]):
        r = rates[key]  # time per frame over the first step's, per round: rate_1 / (k rate_k)
        frame_rows.append(f"| {s.frames * k} | {statistics.median(r):.2f} | {s.frames * k * statistics.median(r):.1f} "
                          f"| {cells([a / (k * b) for a, b in zip(rates[first], r)])} | {flops[key]:.2f} "
                          f"({flops[key] / (k * flops[first]):.3f}) | {peaks[key]:.0f} |")
    checkpointing = ("diffusers' `enable_gradient_checkpointing()`" if diffusers_checkpoints else
                     "diffusers' `UNet3DConditionModel` does not support it (`enable_gradient_checkpointing()` raises)")
    mem_how = ("`torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`" if device == "cuda" else
               "the peak RSS of the step over the RSS before it, each variant in a process of its own (as in the "
               "image-training section)")
    md = f"""## Video U-Net training: polydiff vs diffusers

Command: `{command_line("video_training", argv)}` ({time.perf_counter() - start:.0f} s). Machine: {machine()}.
diffusers {diffusers.__version__}; device {device}.

Two factorized space-time U-Nets, every 2-D layer per frame: polydiff's `video_unet` (Ho et al. 2022's
factorized U-Net) and diffusers' `UNet3DConditionModel` (ModelScope text-to-video, Wang et al. 2023), on
{s.batch} clip(s) of {s.frames} RGB frames of {s.size}x{s.size}. Both: widths {s.channels} x {list(s.mult)}, spatial
attention on all levels but the lowest and in the middle, attention heads of {HEAD_CHANNELS} channels (diffusers'
`attention_head_dim={HEAD_CHANNELS}`), group norm of 32 groups, dropout off. Parameters: polydiff
{params['polydiff']:,}, diffusers {params['diffusers']:,} (ratio {params['polydiff'] / params['diffusers']:.3f}).
Forward GFLOPs per clip (torch's FLOP counter, attention included): polydiff {flops[first]:.2f}, diffusers
{flops[base['diffusers']]:.2f} (ratio {flops[first] / flops[base['diffusers']]:.3f}).
- polydiff: ADM residual blocks (scale-shift norm), {list(s.blocks)} per encoder level (more than diffusers' one: they
  stand in for its transformer feed-forwards in the parameter count), each followed by its spatial self-attention
  where it has one, then a temporal attention (one multi-head layer over the frames at each position, learned
  relative-position bias, no feed-forward) and, with `temporal_conv=True` (the nearest to ModelScope's temporal
  convolutions), one 3-tap temporal convolution.
- diffusers: one ResnetBlock2D per encoder level (additive time embedding), each followed by a TemporalConvLayer
  (four GroupNorm-SiLU-Conv3d (3,1,1)), then a Transformer2D (self-attention, cross-attention to the text tokens,
  GEGLU feed-forward) and a temporal transformer (two self-attentions over the frames, GEGLU feed-forward, no
  position information); one more temporal transformer after the input convolution ({8 * HEAD_CHANNELS} wide). Its
  forward requires `encoder_hidden_states`: one fixed random token of width {CONTEXT} (polydiff's has no text
  conditioning). Its TemporalConvLayer's hard-coded dropout 0.1 is set to 0.

A step: forward, MSE to the clip, backward, AdamW (bare backbones). bf16 is `torch.autocast` (the loss in fp32);
checkpointing is polydiff's `gradient_checkpointing` option (per block);
{checkpointing}. After {args.warmup} warm-up step(s) per variant, {args.rounds} round(s) of {args.steps}
step(s) per variant in alternating order; clips/s are medians over rounds, the ratio is the median of the
per-round ratios. Peak MiB: activations and workspace of one steady-state step,
{mem_how}.

| precision | option | polydiff clips/s | diffusers clips/s | polydiff / diffusers | per round | polydiff peak MiB | diffusers peak MiB |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

polydiff fp32 at more frames (same batch). Time per frame relative to {s.frames} frames: the median of per-round
ratios; 1.00 = time linear in the frames. Forward GFLOPs per clip, in brackets per frame relative to {s.frames}
frames: temporal attention's score and mixing products grow as F^2 per position, everything else as F.

| frames | clips/s | frames/s | time per frame vs {s.frames} frames | per round | forward GFLOPs (per frame vs {s.frames}) | peak MiB |
|---|---|---|---|---|---|---|
{chr(10).join(frame_rows)}
"""
    return publish("video-training", md, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
