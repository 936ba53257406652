"""Stateless samplers in a registry (k-diffusion style); see ``registry`` for the shared signature.

Importing this package registers every sampler module below.
"""

from . import ddim, ddpm, dpm_solver, euler, langevin, multistep, sde, unipc  # noqa: F401  (register)
from .registry import SAMPLERS, STOCHASTIC, get_sampler, register

__all__ = ["SAMPLERS", "STOCHASTIC", "get_sampler", "register"]
