"""The image modality from the command line: samples in the formats evaluation suites read, class-by-class
grids, and the editing commands, with one-line errors for bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polydiff.cli import main

TINY = ["train.steps=3", "data.batch_size=16", "train.sample_every=3", "train.val_every=0", "sample.num=10",
        "sample.steps=3", 'model.options={channels = 8, channel_mult = [1, 2], num_res_blocks = [1], '
        'attention_resolutions = [4], head_channels = 8, num_classes = 10}']


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    sets = [*TINY, f'train.out_dir="{out.as_posix()}"']
    assert main(["train", "image/digits", *[a for s in sets for a in ("--set", s)]]) == 0
    assert (out / "digits" / "samples" / "step_000003.png").is_file()
    return out / "digits" / "model"


def run(capsys, *argv) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def test_samples_npz_in_guided_diffusions_layout(digits_model, tmp_path):
    assert main(["sample", str(digits_model), "--num", "20", "--labels", "all", "--steps", "2",
                 "--out", str(tmp_path)]) == 0
    arrays = np.load(tmp_path / "samples.npz")
    assert arrays["arr_0"].shape == (20, 8, 8, 1) and arrays["arr_0"].dtype == np.uint8
    assert arrays["arr_1"].tolist() == [i // 2 for i in range(20)]  # two per class, in order
    assert len(list((tmp_path / "images").glob("*.png"))) == 20
    grid = np.asarray(Image.open(tmp_path / "samples.png"))
    assert grid.shape[1] < grid.shape[0]  # ten rows (one per class) of two


def test_editing_commands_write_their_images(digits_model, tmp_path):
    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((8, 8)) * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
    inputs = [str(tmp_path / "0.png"), str(tmp_path / "1.png")]
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:, 4:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    common = ["--steps", "3", "--label", "3"]
    assert main(["edit", str(digits_model), "--input", *inputs, "--strength", "0.5", *common,
                 "--out", str(tmp_path / "e")]) == 0
    assert np.load(tmp_path / "e" / "samples.npz")["arr_0"].shape == (4, 8, 8, 1)  # inputs, then edits
    for method in ("replacement", "repaint"):
        assert main(["inpaint", str(digits_model), "--input", *inputs, "--mask", str(tmp_path / "mask.png"),
                     "--method", method, "--resample", "2", *common, "--out", str(tmp_path / method)]) == 0
        arrays = np.load(tmp_path / method / "samples.npz")["arr_0"]
        np.testing.assert_array_equal(arrays[2:, :, :4], arrays[:2, :, :4])  # the kept half is the input
    assert main(["interpolate", str(digits_model), "--seed", "1", "--to-seed", "2", "--num", "5", *common,
                 "--out", str(tmp_path / "i")]) == 0
    assert np.load(tmp_path / "i" / "samples.npz")["arr_0"].shape == (5, 8, 8, 1)


def test_editing_errors_are_one_line(digits_model, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    for argv, phrase in [
        (["edit", str(digits_model), "--input", str(tmp_path / "bad.png")], "bad.png: cannot read it as an image"),
        (["edit", str(digits_model), "--input", str(tmp_path / "none.png")], "none.png: cannot read it as an image"),
        (["edit", str(digits_model), "--input", str(tmp_path / "bad.png"), "--strength", "1.5"],
         "--strength must lie in (0, 1]"),
        (["inpaint", str(digits_model), "--input", str(tmp_path / "bad.png"), "--mask", "m.png"],
         "bad.png: cannot read it as an image"),
        (["interpolate", str(digits_model), "--num", "1"], "--num must be at least 2"),
        (["sample", str(digits_model), "--prompt", "a cat"], "this model is not text-conditional"),
    ]:
        code, err = run(capsys, *argv)
        assert code == 2 and phrase in err and len(err.strip().splitlines()) == 1, (argv, err)
