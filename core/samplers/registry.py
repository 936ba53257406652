"""The sampler registry: name -> stateless sampling function.

Every sampler has the signature

    sampler(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, **options) -> x

``x`` is the starting point at ``sigmas[0]`` (for pure noise: ``sigmas[0] * randn``), ``sigmas`` a
descending 1-D tensor ending at 0, ``generator`` one ``torch.Generator``, one per sample or a noise function
``noise(like) -> n`` called once per draw (``polydiff.core.utils.randn_like``), and ``callback`` receives a dict
with ``i``, ``x``, ``sigma``, ``sigma_next`` and ``denoised`` after each step. Samplers keep no state and show no
progress bars.
"""

from __future__ import annotations

from collections.abc import Callable

from ..utils import lookup

Sampler = Callable[..., "torch.Tensor"]  # noqa: F821 - documented signature above

SAMPLERS: dict[str, Sampler] = {}
STOCHASTIC: set[str] = set()


def register(name: str, *, stochastic: bool = False) -> Callable[[Sampler], Sampler]:
    """Add a sampler to ``SAMPLERS`` under ``name``; ``stochastic`` marks samplers that draw noise."""

    def add(fn: Sampler) -> Sampler:
        if name in SAMPLERS:
            raise ValueError(f"sampler {name!r} registered twice")
        SAMPLERS[name] = fn
        if stochastic:
            STOCHASTIC.add(name)
        return fn

    return add


def get_sampler(name: str) -> Sampler:
    """Look a sampler up by name, with the known names in the error."""
    return lookup(SAMPLERS, name, "sampler")
