"""Typed media: what sample writers return and what run logs, TensorBoard and ``polydiff sample`` write.

A modality's writer turns a batch of samples into one ``Image`` (a grid, a plot), ``Video`` or ``Audio``;
everything downstream dispatches on the type: PNG / MP4 (H.264, yuv420p) / WAV files, and TensorBoard
image / frames / audio. Samples become pixels and waveforms the same way everywhere, through the recipe's
``data.range`` (``to_unit_range``).
"""

from .files import log_media, save_media, save_npz
from .types import Audio, Image, Media, Video, image_grid, to_uint8, to_unit_range
from .video import Mp4Writer

__all__ = ["Audio", "Image", "Media", "Mp4Writer", "Video", "image_grid", "log_media", "save_media", "save_npz",
           "to_uint8", "to_unit_range"]
