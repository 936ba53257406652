"""``video_folder``: a folder of videos (mp4, webm, avi, mkv, mov, gif; decoded with PyAV) read lazily, with an
optional class per sub-folder (UCF-101's layout). Each file gives ``clips_per_file`` examples: clips of ``frames``
frames taken every ``stride``-th frame, spread evenly over the file, each frame resized (shorter side, bicubic with
antialiasing) and centre cropped. A file that cannot be decoded, is truncated or is shorter than one clip is replaced
by the next readable example and counted in the run's report (``data.folder.FileDataset``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ...data.folder import FileDataset, FolderOptions, read_folder
from ...recipes.config import setting
from ...registry import register_dataset

SUFFIXES = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".gif")


@dataclass(frozen=True)
class VideoFolderOptions(FolderOptions):
    """Options of ``video_folder``."""

    root: str = setting("data", doc="folder of videos (mp4, webm, avi, mkv, mov, gif), searched recursively")
    frames: int = setting(16, ge=1, le=4096, doc="frames per clip")
    stride: int = setting(1, ge=1, le=256, doc="take every stride-th frame of the file (a lower frame rate)")
    size: int = setting(64, ge=4, le=4096, doc="side of the square frames: shorter side resized, centre cropped")
    color: Literal["rgb", "grey"] = setting("rgb", doc="3 channels or 1")
    clips_per_file: int = setting(1, ge=1, le=10_000, doc="clips taken from each file, spread evenly over it")
    class_folders: bool = setting(False, doc="each sub-folder of root is a class (labels in sorted order)")
    fps: float = setting(8.0, gt=0, le=1000, doc="frame rate the samples are written at")


def frame_count(path: Path) -> int:
    """Frames in the file's first video stream, from its header (0 when the header does not say)."""
    import av

    with av.open(str(path)) as container:
        return int(container.streams.video[0].frames or 0)


def read_clip(path: Path, start: int, frames: int, stride: int, size: int, color: str) -> torch.Tensor:
    """Frames start, start + stride, ... (``frames`` of them) of a video file as (C, F, size, size) in [-1, 1]."""
    import av
    from PIL import Image

    wanted, picked = set(range(start, start + frames * stride, stride)), []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                image = frame.to_image().convert("RGB" if color == "rgb" else "L")
                scale = size / min(image.size)
                w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
                image = image.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=None)
                left, top = (w - size) // 2, (h - size) // 2
                array = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32)
                picked.append(array[:, :, None] if array.ndim == 2 else array)
            if len(picked) == frames:
                break
    if len(picked) < frames:
        raise ValueError(f"{len(picked)} of the {frames} frames a clip needs (from frame {start}, every {stride}); "
                         f"the video is shorter or truncated")
    clip = torch.from_numpy(np.stack(picked))  # (F, H, W, C)
    return clip.permute(3, 0, 1, 2) / 127.5 - 1  # -> (C, F, H, W) in [-1, 1]


class VideoFolder(FileDataset):
    """Example i: clip i % clips_per_file of file i // clips_per_file."""

    def __init__(self, files, labels, root, num_classes, options: VideoFolderOptions):
        per = options.clips_per_file
        super().__init__([f for f in files for _ in range(per)],
                         None if labels is None else [lab for lab in labels for _ in range(per)], root, num_classes)
        self.options = options
        self.example_shape = (3 if options.color == "rgb" else 1, options.frames, options.size, options.size)

    def read_example(self, i: int) -> torch.Tensor:
        o, path = self.options, self.files[i]
        span = (o.frames - 1) * o.stride + 1
        slack = max(0, frame_count(path) - span)
        k = i % o.clips_per_file
        start = round(k * slack / (o.clips_per_file - 1)) if o.clips_per_file > 1 else 0
        return read_clip(path, start, o.frames, o.stride, o.size, o.color)

    def _example(self, i: int) -> dict:
        cond = {} if self.labels is None else {"class_labels": torch.tensor(self.labels[i], dtype=torch.long)}
        return {"x": self.read_example(i), "cond": cond}


@register_dataset("video_folder", VideoFolderOptions)
def video_folder(options: VideoFolderOptions, seed: int) -> VideoFolder:
    return read_folder(options, SUFFIXES, lambda *found: VideoFolder(*found, options))
