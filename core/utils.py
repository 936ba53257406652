"""Small tensor helpers shared by the whole core (broadcasting, per-sample randomness)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")
Generator = torch.Generator | Sequence[torch.Generator] | None
NoiseFn = Callable[[torch.Tensor], torch.Tensor]  # like -> standard normal noise shaped like it (``randn_like``)
Noise = Generator | NoiseFn  # what a sampler draws its noise from


def append_dims(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dims so a per-sample ``(B,)`` tensor broadcasts against ``(B, *S)``.

    k-diffusion's ``append_dims``; the one way the core broadcasts per-sample scalars.
    """
    missing = ndim - t.ndim
    if missing < 0:
        raise ValueError(f"tensor has {t.ndim} dims, more than the target {ndim}")
    return t[(...,) + (None,) * missing]


def randn_like(x: torch.Tensor, generator: Noise = None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``.

    ``generator`` may be one ``torch.Generator`` for the batch or a sequence with one generator per
    sample (EDM's ``StackedRandomGenerator``): then row ``i`` depends only on ``generator[i]``, so
    sampling seeds [a, b] in one batch gives exactly what sampling a and b one at a time gives.
    Numbers are drawn on each generator's device and moved to ``x``'s (a CPU generator serves a CUDA batch).

    Or a noise function ``noise(x) -> n``: called once per draw, in the caller's order, like a generator advancing
    its state, so its k-th draw may depend on k and on what the caller knows of each element, e.g. its absolute
    position in a longer signal that is sampled in pieces (``modalities/audio/chunks.py``). Its result must have
    ``x``'s shape; it is cast to ``x``'s dtype and device.
    """
    if callable(generator):
        noise = generator(x)
        if noise.shape != x.shape:
            raise ValueError(f"the noise function gave shape {tuple(noise.shape)} for {tuple(x.shape)}")
        return noise.to(device=x.device, dtype=x.dtype)
    if generator is None or isinstance(generator, torch.Generator):
        return _draw(torch.randn, x.shape, x, generator)
    if len(generator) != x.shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
    return torch.stack([_draw(torch.randn, x.shape[1:], x, g) for g in generator])


def rand_like_batch(x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Uniform [0, 1) numbers, one per sample: shape ``(B,)``; per-sample generators as in ``randn_like``."""
    if generator is None or isinstance(generator, torch.Generator):
        return _draw(torch.rand, (x.shape[0],), x, generator)
    if len(generator) != x.shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
    return torch.cat([_draw(torch.rand, (1,), x, g) for g in generator])


def _draw(fn, shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``fn(shape)`` in ``like``'s dtype from ``generator`` on the generator's own device, then on ``like``'s."""
    device = like.device if generator is None else generator.device
    return fn(shape, dtype=like.dtype, device=device, generator=generator).to(like.device)


def seeded_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One ``torch.Generator`` per seed, for per-sample reproducible sampling."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


def batch_sigma(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """A noise level as a ``(B,)`` tensor on ``x``'s device and dtype."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma


def lookup(registry: Mapping[str, T], name: str, what: str) -> T:
    """``registry[name]``, or a KeyError that names ``what`` was asked for and the known names."""
    if name not in registry:
        raise KeyError(f"unknown {what} {name!r}; known: {', '.join(sorted(registry))}")
    return registry[name]
