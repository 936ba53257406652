"""The video modality (Video Diffusion Models, Ho et al. 2022): clips (B, C, F, H, W), moving digits, and
reconstruction-guided extension built on ``core.guidance.reconstruction_guidance``."""
