"""``image_folder``: a folder of images read lazily, with an optional class per sub-folder (torchvision's
ImageFolder convention) and optional captions. A corrupt, truncated or unreadable image is replaced by the
next readable one and reported when the run ends (``data.folder.FileDataset``).

Captions: a tab-separated file in the folder (``captions``), one ``relative/path.png<TAB>the caption`` per
line; they travel as UTF-8 byte ids (``caption_ids``) for the byte encoder or a frozen text encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ...data.folder import FileDataset, FolderOptions, read_folder
from ...errors import UserError
from ...recipes.config import setting
from ...registry import register_dataset
from ..nn.text import encode_bytes

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageFolderOptions(FolderOptions):
    """Options of ``image_folder``."""

    root: str = setting("data", doc="folder of images (png, jpg, bmp, gif, webp, tiff), searched recursively")
    size: int = setting(64, ge=4, le=4096, doc="side of the square examples: shorter side resized, centre cropped")
    color: Literal["rgb", "grey"] = setting("rgb", doc="3 channels or 1")
    class_folders: bool = setting(False, doc="each sub-folder of root is a class (labels in sorted order)")
    captions: str = setting("none", doc='a tab-separated file in root: "relative/path<TAB>caption" per line')
    caption_length: int = setting(64, gt=0, le=4096, doc="caption bytes kept")


def load_image(path: Path, size: int, color: str) -> torch.Tensor:
    """An image file as (C, size, size) in [-1, 1]: decoded whole (a truncated file fails here), shorter side
    resized with antialiasing (bicubic), centre cropped."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        image = image.convert("RGB" if color == "rgb" else "L")
    scale = size / min(image.size)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=None)
    left, top = (w - size) // 2, (h - size) // 2
    array = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32)
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1  # (H, W, C) -> (C, H, W) in [-1, 1]


def read_captions(root: Path, name: str, files: list[Path]) -> list[str]:
    """The caption of each file from ``root/name``; a file without one gets the empty caption."""
    path = root / name
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"data.options.captions: cannot read {path} as UTF-8 text ({err})") from None
    table = {}
    for number, line in enumerate(lines, 1):
        if line.strip():
            key, sep, caption = line.partition("\t")
            if not sep:
                raise UserError(f"{path}:{number}: expected 'relative/path<TAB>caption', got {line[:60]!r}")
            table[Path(key.strip()).as_posix()] = caption.strip()
    return [table.get(f.relative_to(root).as_posix(), "") for f in files]


class ImageFolder(FileDataset):
    def __init__(self, files, labels, root, num_classes, options: ImageFolderOptions, captions=None):
        super().__init__(files, labels, root, num_classes)
        self.size, self.color, self.captions = options.size, options.color, captions
        self.caption_length = options.caption_length
        self.example_shape = (3 if options.color == "rgb" else 1, options.size, options.size)

    def read(self, path: Path) -> torch.Tensor:
        return load_image(path, self.size, self.color)

    def _example(self, i: int) -> dict:
        item = super()._example(i)
        if self.captions is not None:
            item["cond"]["caption_ids"] = encode_bytes([self.captions[i]], self.caption_length)[0]
        return item


@register_dataset("image_folder", ImageFolderOptions)
def image_folder(options: ImageFolderOptions, seed: int) -> ImageFolder:
    def make(files, labels, root, num_classes):
        captions = read_captions(root, options.captions, files) if options.captions != "none" else None
        return ImageFolder(files, labels, root, num_classes, options, captions)

    return read_folder(options, SUFFIXES, make)
