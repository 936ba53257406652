"""polydiff: diffusion models for images, video and audio on one modality-agnostic core."""

__version__ = "0.1.0"
