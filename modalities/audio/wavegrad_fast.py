"""WaveGrad for inference: the function of ``wavegrad.WaveGrad`` (``encode_mel`` then ``decode``), computed faster.

    fast = FastWaveGrad(net, dtype)
    cached = fast.encode(mel)                 once per utterance / chunk: everything that ignores x_in and c_noise
    fast.decode(x_in, c_noise, cached)        once per sampling step

What changes (never the math; only rounding, and bf16 when asked):

- layout: activations are (B, C, 1, L) tensors in ``torch.channels_last`` (physically (B, L, C)), run through 2-D
  convolutions with (1, k) kernels: oneDNN's direct convolutions need no reorder to and from its blocked format then,
  2-3x faster than NCW for the 128-channel full-rate layers on an AVX-512 CPU;
- precision: weights held in ``dtype`` once (bf16: half the bytes, oneDNN's AVX-512-BF16 kernels); the noise encoding
  is computed in fp32 and cast, as ``WaveGrad`` under autocast; the output is returned in fp32;
- cached conditioning: the mel convolution and the first UBlock's noise-free half (its 1x1 residual path and the
  dilated 3x1 convolution of up(act(mel features)), both before its first FiLM) are computed once in ``encode``;
- exact rewrites: a 1x1 convolution commutes with nearest-neighbour upsampling, so each UBlock's residual path runs
  at the input rate and is upsampled by a broadcast add (f times fewer MACs); FiLM's ``scale * h + shift`` is one
  ``addcmul``; activations and residual adds are in place (fewer fresh pages per step).
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import functional as F

from .wavegrad import DBlock, FiLM, UBlock, WaveGrad

PRECISIONS = ("auto", "fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CL = torch.channels_last
SLOPE = 0.2  # WaveGrad's leaky ReLU


def has_avx512() -> bool:
    """Whether torch's CPU kernels run AVX-512 here (bf16 on an AVX2-only CPU is emulated, 40-100x slower)."""
    return "AVX512" in torch.backends.cpu.get_cpu_capability()


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """"fp32" or "bf16" for ``precision`` on ``device``; "auto" is bf16 only on an AVX-512 CPU (fp32 elsewhere, CUDA
    included: the model's own precision)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if torch.device(device).type == "cpu" and has_avx512() else "fp32"


def physical_cores() -> int:
    """Physical CPU cores (hyper-threads share a core's vector units: more threads than cores only contend)."""
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unable to tell
        cores = None
    return cores or os.cpu_count() or 1


def set_cpu_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (default: ``OMP_NUM_THREADS`` if set, else the physical cores);
    returns the number set."""
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(env) if env.isdigit() and int(env) > 0 else physical_cores()
    torch.set_num_threads(threads)
    return threads


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(B, C, 1, L) channels-last -> its memory as (B, L, C), a view."""
    return x.permute(0, 2, 3, 1).flatten(1, 2)


def _from_rows(r: torch.Tensor) -> torch.Tensor:
    """(B, L, C) contiguous -> (B, C, 1, L) channels-last, a view."""
    return r.unsqueeze(1).permute(0, 3, 1, 2)


def _up(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour upsampling along L by ``factor`` (``nn.functional.interpolate``'s 'nearest' for an integer
    factor: sample n of the output is sample n // factor of the input), channels-last in and out."""
    if factor == 1:
        return x
    r = _rows(x)  # (B, L, C)
    b, length, c = r.shape
    return _from_rows(r[:, :, None, :].expand(b, length, factor, c).reshape(b, length * factor, c))


def _add_up_(y: torch.Tensor, s: torch.Tensor, factor: int) -> torch.Tensor:
    """y += up(s) in place: y (B, C, 1, L f), s (B, C, 1, L), both channels-last."""
    b, c, _, length = s.shape
    _rows(y).view(b, length, factor, c).add_(_rows(s)[:, :, None, :])  # (B, L, f, C) += (B, L, 1, C)
    return y


class _Conv(nn.Module):
    """A ``nn.Conv1d`` of WaveGrad as a (1, k) 2-D convolution on channels-last (B, C, 1, L), weights in ``dtype``."""

    def __init__(self, conv: nn.Conv1d, dtype: torch.dtype):
        super().__init__()
        weight = conv.weight.detach().to(dtype)[:, :, None]  # (O, I, k) -> (O, I, 1, k)
        self.register_buffer("weight", weight.contiguous(memory_format=CL), persistent=False)
        self.register_buffer("bias", conv.bias.detach().to(dtype), persistent=False)
        self.padding, self.dilation = (0, conv.padding[0]), (1, conv.dilation[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, 1, self.padding, self.dilation)


class _FiLM(nn.Module):
    def __init__(self, film: FiLM, dtype: torch.dtype):
        super().__init__()
        self.conv_in, self.conv_out = _Conv(film.conv_in, dtype), _Conv(film.conv_out, dtype)
        self.encoding = film.encoding

    def forward(self, h: torch.Tensor, noise_level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = F.leaky_relu_(self.conv_in(h), SLOPE)
        a.add_(self.encoding(noise_level).to(h.dtype)[:, :, None, None])  # (B, C) -> (B, C, 1, 1)
        shift, scale = self.conv_out(a).chunk(2, dim=1)
        return shift, scale


class _UBlock(nn.Module):
    def __init__(self, block: UBlock, dtype: torch.dtype):
        super().__init__()
        self.factor = block.up.factor[0] if hasattr(block.up, "factor") else 1
        self.skip = _Conv(block.skip, dtype)
        self.convs = nn.ModuleList(_Conv(c, dtype) for c in block.convs)

    def noise_free(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(conv_0(up(act(x))), skip(x)): the part before the first FiLM; skip(x) is upsampled when added."""
        return self.convs[0](_up(F.leaky_relu(x, SLOPE), self.factor)), self.skip(x)

    def forward(self, x, shift, scale, pre: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        h, s = self.noise_free(x) if pre is None else pre
        g = F.leaky_relu_(torch.addcmul(shift, scale, h), SLOPE)
        y = _add_up_(self.convs[1](g), s, self.factor)  # skip(up(x)) + conv_1(act(film(h)))
        g = F.leaky_relu_(torch.addcmul(shift, scale, y, out=g), SLOPE)
        h = self.convs[2](g)
        g = F.leaky_relu_(torch.addcmul(shift, scale, h, out=g), SLOPE)
        return self.convs[3](g).add_(y)


class _DBlock(nn.Module):
    def __init__(self, block: DBlock, dtype: torch.dtype):
        super().__init__()
        self.factor = block.factor
        self.skip = _Conv(block.skip, dtype)
        self.convs = nn.ModuleList(_Conv(c, dtype) for c in block.convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[..., :: self.factor].contiguous(memory_format=CL)  # (B, C, 1, L) -> (B, C, 1, L / factor)
        h = self.convs[0](F.leaky_relu(x, SLOPE))
        for conv in self.convs[1:]:
            h = conv(F.leaky_relu_(h, SLOPE))
        return h.add_(self.skip(x))


class FastWaveGrad(nn.Module):
    """Inference-only WaveGrad equal to ``net`` (up to rounding; bf16 if ``dtype`` is): ``encode(mel)`` holds what
    depends on the mel alone, ``decode(x_in, c_noise, cached)`` equals ``net.decode(x_in, c_noise,
    net.encode_mel(mel))``. Weights are copied (in ``dtype``) when built: rebuild after changing ``net``."""

    def __init__(self, net: WaveGrad, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.dtype, self.noise_scale, self.n_mels = dtype, net.options.noise_scale, net.options.n_mels
        self.mel_conv, self.wave_conv, self.out = (_Conv(c, dtype) for c in (net.mel_conv, net.wave_conv, net.out))
        self.up = nn.ModuleList(nn.ModuleList(_UBlock(b, dtype) for b in level) for level in net.up)
        self.down = nn.ModuleList(_DBlock(b, dtype) for b in net.down)
        self.films = nn.ModuleList(_FiLM(f, dtype) for f in net.films)
        self.to(next(net.parameters()).device)

    def encode(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mel (B, n_mels, F) -> the first UBlock's noise-free half, (conv_0(up(act(u))), skip(u)) for the mel features
        u = mel_conv(mel) (B, mel_channels, F); channels-last (B, C, 1, L)."""
        u = self.mel_conv(mel.to(self.dtype)[:, :, None].contiguous(memory_format=CL))  # (B, n_mels, 1, F)
        return self.up[0][0].noise_free(u)

    def decode(self, x_in: torch.Tensor, c_noise: torch.Tensor, cached: tuple[torch.Tensor, torch.Tensor]
               ) -> torch.Tensor:
        """x_in (B, 1, T), c_noise (B,) -> (B, out_factor, T) in fp32, as ``WaveGrad.decode``."""
        noise_level = self.noise_scale * c_noise
        h = self.wave_conv(x_in.to(self.dtype)[:, :, None].contiguous(memory_format=CL))  # (B, 1, 1, T)
        films = [self.films[0](h, noise_level)]
        for block, film in zip(self.down, self.films[1:]):
            h = block(h)
            films.append(film(h, noise_level))
        u, pre = None, cached
        for level, (shift, scale) in zip(self.up, reversed(films)):  # coarsest level first
            for block in level:
                u, pre = block(u, shift, scale, pre), None
        out = self.out(u)  # (B, out_factor, 1, T)
        return out[:, :, 0].to(torch.float32).contiguous()
