"""Media to files (PNG, MP4, WAV) and to TensorBoard, dispatched on the media type."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .types import Audio, Image, Media, Video
from .video import Mp4Writer

SUFFIXES = {Image: ".png", Video: ".mp4", Audio: ".wav"}


def save_media(media: Media, stem: str | Path) -> Path:
    """Write ``media`` as ``stem`` + its suffix (.png, .mp4, .wav); the parent folder is created. Returns the path."""
    path = Path(stem)
    path = path.with_name(path.name + SUFFIXES[type(media)])
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(media, Image):
        from PIL import Image as PILImage

        pixels = media.pixels[:, :, 0] if media.pixels.shape[2] == 1 else media.pixels
        PILImage.fromarray(pixels).save(path)
    elif isinstance(media, Video):
        with Mp4Writer(path, media.fps) as writer:
            for frame in media.frames:
                writer.write(frame)
    else:
        import soundfile

        soundfile.write(str(path), media.samples, media.rate, subtype="PCM_16")
    return path


def save_npz(path: Path, pixels: np.ndarray, labels=None) -> Path:
    """uint8 samples as ``arr_0`` (and their class labels as ``arr_1`` when known) in an .npz at ``path``: the
    layout of guided-diffusion's evaluation suite, which most FID / FVD tools read."""
    arrays = {"arr_0": pixels}
    if labels is not None:
        arrays["arr_1"] = np.asarray(labels, dtype=np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def log_media(writer, tag: str, step: int, media: Media) -> None:
    """Add ``media`` to a TensorBoard ``SummaryWriter``: an image, a video's frames, or mono audio."""
    if isinstance(media, Image):
        writer.add_image(tag, media.pixels, step, dataformats="HWC")
    elif isinstance(media, Video):
        writer.add_images(tag, media.frames, step, dataformats="NHWC")
    else:
        mono = media.samples.mean(axis=1, dtype=np.float32)
        writer.add_audio(tag, mono[None], step, sample_rate=media.rate)
