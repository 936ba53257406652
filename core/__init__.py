"""polydiff.core: the modality-agnostic diffusion core.

Everything here speaks to networks through the denoiser contract
``D(x, sigma, cond) -> x0_hat`` (see ``polydiff.core.denoiser``) and works on any
shape ``(B, *S)``: vectors ``(B, D)``, audio ``(B, 1, T)`` (channels first, like every layout), images ``(B, C, H, W)``, video ``(B, C, F, H, W)``.
Imports torch and the standard library only.
"""
