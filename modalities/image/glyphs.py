"""``glyphs``: letters and digits rendered with the TrueType fonts that ship with matplotlib, at any size, with
a random affine jitter and a caption such as "bold capital letter A": the text-to-image and cascade data
set that needs no download. Example i is drawn from (seed, i) alone, so the set is fixed and read lazily.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ...data.transforms import example_seed
from ...errors import UserError
from ...recipes.config import Config, ConfigError, setting
from ...registry import register_dataset
from ..nn.text import encode_bytes

CHARACTERS = string.ascii_uppercase + string.ascii_lowercase + string.digits
FONTS = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSansMono")
_STYLE = {"Bold": "bold", "Oblique": "italic", "Italic": "italic", "Serif": "serif", "Mono": "monospace"}


@dataclass(frozen=True)
class GlyphsOptions(Config):
    """Options of ``glyphs``."""

    size: int = setting(32, ge=8, le=1024, doc="image side in pixels (grey, one channel)")
    characters: str = setting(CHARACTERS, doc="the characters drawn; each is a class (in this order)")
    fonts: tuple[str, ...] = setting(FONTS, doc="matplotlib's TrueType fonts (file names without .ttf)")
    num_samples: int = setting(20_000, gt=0, le=10**8, doc="examples in the data set")
    rotation: float = setting(10.0, ge=0, le=180, doc="largest rotation, degrees")
    scale: tuple[float, float] = setting((0.7, 1.0), gt=0, le=2, doc="range of the glyph's height over the image's")
    shift: float = setting(0.1, ge=0, le=0.5, doc="largest shift of the centre, a fraction of the side")
    caption_length: int = setting(64, gt=0, le=4096, doc="caption bytes kept")

    def check(self) -> None:
        if not self.characters or len(set(self.characters)) != len(self.characters):
            raise ConfigError(("characters",), "{key} must be distinct characters, at least one")
        if not self.fonts:
            raise ConfigError(("fonts",), "{key} must name at least one font")
        if self.scale[0] > self.scale[1]:
            raise ConfigError(("scale",), f"{{key}} must be [low, high], got {list(self.scale)}")


def font_path(name: str) -> Path:
    """The .ttf file of one of matplotlib's fonts."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{name}.ttf"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.ttf"))
        raise UserError(f"data.options.fonts: no font {name!r} ships with matplotlib; known: {', '.join(known)}")
    return path


@cache
def _font(name: str, pixels: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(font_path(name)), pixels)


def caption(character: str, font: str) -> str:
    """'bold capital letter A', 'small letter q', 'serif digit 7'."""
    styles = [word for key, word in _STYLE.items() if key in font]
    kind = ("digit" if character.isdigit() else "capital letter" if character.isupper() else "small letter"
            if character.islower() else "character")
    return " ".join([*dict.fromkeys(styles), kind, character])


def render(character: str, font: str, size: int, angle: float, scale: float, dx: float, dy: float) -> np.ndarray:
    """One glyph, white on black, float32 (size, size) in [0, 1]: drawn at 4x, rotated and scaled about the
    centre, shifted, then reduced with antialiasing."""
    from PIL import Image, ImageDraw

    big = 4 * size
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    face = _font(font, max(4, round(big * scale)))
    left, top, right, bottom = draw.textbbox((0, 0), character, font=face)
    draw.text(((big - (right - left)) / 2 - left, (big - (bottom - top)) / 2 - top), character, fill=255, font=face)
    canvas = canvas.rotate(angle, resample=Image.Resampling.BICUBIC, translate=(dx * big, dy * big))
    return np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255


class Glyphs(Dataset):
    def __init__(self, options: GlyphsOptions, seed: int):
        for name in options.fonts:
            font_path(name)  # an unknown font is one line now, not an error in a worker later
        self.options, self.seed = options, seed
        self.example_shape = (1, options.size, options.size)
        self.num_classes = len(options.characters)

    def __len__(self) -> int:
        return self.options.num_samples

    def draw(self, i: int) -> tuple[str, str, np.ndarray]:
        """(character, font, image) of example i, from (seed, i) alone."""
        o = self.options
        rng = np.random.default_rng(example_seed(self.seed, i))
        c, f = int(rng.integers(len(o.characters))), int(rng.integers(len(o.fonts)))
        angle = rng.uniform(-o.rotation, o.rotation)
        scale = rng.uniform(*o.scale)
        dx, dy = rng.uniform(-o.shift, o.shift, size=2)
        return o.characters[c], o.fonts[f], render(o.characters[c], o.fonts[f], o.size, angle, scale, dx, dy)

    def __getitem__(self, i: int) -> dict:
        character, font, image = self.draw(int(i))
        x = torch.from_numpy(image)[None] * 2 - 1  # (1, H, W) in [-1, 1]
        label = torch.tensor(self.options.characters.index(character), dtype=torch.long)
        ids = encode_bytes([caption(character, font)], self.options.caption_length)[0]
        return {"x": x, "cond": {"class_labels": label, "caption_ids": ids}}


@register_dataset("glyphs", GlyphsOptions)
def glyphs(options: GlyphsOptions, seed: int) -> Glyphs:
    return Glyphs(options, seed)


