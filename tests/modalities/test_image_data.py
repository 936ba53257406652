"""Image data on disk and generated: folders of images with classes and captions (corrupt files skipped and
counted), CIFAR-10 in both of its formats (and a pickle that tries to run code, refused), digits, glyphs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polydiff.data.examples import SKIPPED
from polydiff.errors import UserError
from polydiff.modalities.image.cifar import Cifar10Options, cifar10
from polydiff.modalities.image.digits import DigitsOptions, digits
from polydiff.modalities.image.folder import ImageFolderOptions, image_folder
from polydiff.modalities.image.glyphs import GlyphsOptions, caption, glyphs
from polydiff.modalities.nn.text import decode_bytes


def write_images(root: Path, classes=("cat", "dog"), per_class: int = 3, size=(12, 10)) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
            pixels[..., 0] = 40 * c  # the class shows in the red channel
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_image_folder_reads_classes_and_captions(tmp_path):
    root = write_images(tmp_path / "d")
    (root / "captions.tsv").write_text("cat/0.png\ta grey cat\ndog/2.png\ta dog, running\n", encoding="utf-8")
    data = image_folder(ImageFolderOptions(root=str(root), size=8, class_folders=True, captions="captions.tsv",
                                           caption_length=32), 0)
    assert len(data) == 6 and data.num_classes == 2 and data.example_shape == (3, 8, 8)
    item = data[5]
    assert item["x"].shape == (3, 8, 8) and -1 <= float(item["x"].min()) and float(item["x"].max()) <= 1
    assert int(item["cond"]["class_labels"]) == 1
    captions = [decode_bytes(data[i]["cond"]["caption_ids"][None])[0] for i in range(6)]
    assert captions == ["a grey cat", "", "", "", "", "a dog, running"]
    grey = image_folder(ImageFolderOptions(root=str(root), size=4, color="grey"), 0)
    assert grey[0]["x"].shape == (1, 4, 4)


@pytest.mark.parametrize("damage", ["truncated", "not an image", "empty"])
def test_a_corrupt_image_is_skipped_and_counted(tmp_path, damage):
    root = write_images(tmp_path / "d", classes=("a",))
    bad = root / "a" / "1.png"
    data = bad.read_bytes()
    bad.write_bytes({"truncated": data[: len(data) // 2], "not an image": b"hello", "empty": b""}[damage])
    dataset = image_folder(ImageFolderOptions(root=str(root), size=8), 0)
    item = dataset[1]
    assert SKIPPED in item and "1.png" in item[SKIPPED][0]
    torch.testing.assert_close(item["x"], dataset[2]["x"])  # replaced by the next readable image


def test_a_folder_with_no_readable_image_is_one_error(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"none of the 1 files under .*d could be read"):
        image_folder(ImageFolderOptions(root=str(tmp_path / "d")), 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no \.png/\.jpg/.* files in"):
        image_folder(ImageFolderOptions(root=str(tmp_path / "empty")), 0)


def write_cifar(root: Path, python: bool = True, per_batch: int = 4) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch)
        if python:
            with open(root / name, "wb") as f:
                pickle.dump({b"batch_label": b"x", b"labels": labels.tolist(), b"data": data}, f, protocol=2)
        else:
            (root / f"{name}.bin").write_bytes(np.concatenate([labels[:, None].astype(np.uint8), data], 1).tobytes())
    return root


@pytest.mark.parametrize("python", [True, False])
def test_cifar10_in_both_formats(tmp_path, python):
    root = write_cifar(tmp_path / "c", python)
    data = cifar10(Cifar10Options(root=str(root)), 0)
    assert len(data) == 20 and data[0]["x"].shape == (3, 32, 32) and int(data[0]["cond"]["class_labels"]) < 10
    assert len(cifar10(Cifar10Options(root=str(root), split="test"), 0)) == 4
    assert cifar10(Cifar10Options(root=str(root), size=16), 0)[0]["x"].shape == (3, 16, 16)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/polydiff-pwned",))


def test_a_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    root = write_cifar(tmp_path / "c")
    with open(root / "data_batch_3", "wb") as f:
        pickle.dump({b"labels": [1], b"data": RunsCode()}, f, protocol=2)
    with pytest.raises(UserError, match=r"data_batch_3: not a CIFAR-10 python batch .*refusing to load .*system"):
        cifar10(Cifar10Options(root=str(root)), 0)
    assert not Path("/tmp/polydiff-pwned").exists()
    with pytest.raises(UserError, match="holds no CIFAR-10 train batches"):
        cifar10(Cifar10Options(root=str(tmp_path)), 0)


def test_digits_are_scikit_learns_in_the_data_range():
    data = digits(DigitsOptions(), 0)
    assert len(data) == 1797 and data.num_classes == 10 and data[0]["x"].shape == (1, 8, 8)
    assert float(data.x.min()) == -1.0 and float(data.x.max()) == 1.0
    assert digits(DigitsOptions(size=32), 0)[0]["x"].shape == (1, 32, 32)


def test_glyphs_are_fixed_by_the_seed_and_captioned():
    data = glyphs(GlyphsOptions(size=16, num_samples=50, characters="AbC7"), seed=3)
    again = glyphs(GlyphsOptions(size=16, num_samples=50, characters="AbC7"), seed=3)
    torch.testing.assert_close(data[7]["x"], again[7]["x"], rtol=0, atol=0)
    assert not torch.equal(data[7]["x"], glyphs(GlyphsOptions(size=16, num_samples=50, characters="AbC7"), 4)[7]["x"])
    item = data[0]
    character = "AbC7"[int(item["cond"]["class_labels"])]
    assert decode_bytes(item["cond"]["caption_ids"][None])[0].endswith(character)
    assert caption("A", "DejaVuSans-Bold") == "bold capital letter A"
    assert caption("b", "DejaVuSerif") == "serif small letter b" and caption("7", "DejaVuSansMono") == "monospace digit 7"
    with pytest.raises(UserError, match="no font 'Comic' ships with matplotlib"):
        glyphs(GlyphsOptions(fonts=("Comic",)), 0)
