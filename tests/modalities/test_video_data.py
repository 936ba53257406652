"""The moving-digits clips: fixed by (seed, index), digits that stay in the frame and move at the asked speed,
labels that name every digit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polydiff.modalities.video.moving_digits import MovingDigits, MovingDigitsOptions, bounce, render
from polydiff.recipes.config import ConfigError


def test_bounce_reflects_inside_the_span_and_keeps_the_speed():
    path = bounce(np.array([1.0, 9.5]), np.array([3.0, -2.0]), 40, 10.0)  # (F, 2)
    assert path.min() >= 0 and path.max() <= 10.0
    steps = np.abs(np.diff(path, axis=0))
    assert np.all(steps <= np.array([3.0, 2.0]) + 1e-9)  # never faster than the velocity
    assert np.allclose(path[:3, 0], [1, 4, 7]) and np.allclose(path[3, 0], 10.0) and np.allclose(path[4, 0], 7.0)


def test_a_clip_is_a_function_of_seed_and_index_and_its_label_names_its_digits():
    options = MovingDigitsOptions(size=24, digit_size=8, frames=6, digits=2, num_samples=50)
    a, b, other = MovingDigits(options, 0), MovingDigits(options, 0), MovingDigits(options, 1)
    torch.testing.assert_close(a[7]["x"], b[7]["x"])
    assert not torch.equal(a[7]["x"], a[8]["x"]) and not torch.equal(a[7]["x"], other[7]["x"])
    assert a[7]["x"].shape == (1, 6, 24, 24) == a.example_shape and a.num_classes == 100
    frames, classes, velocity = a.draw(7)
    assert int(a[7]["cond"]["class_labels"]) == 10 * classes[0] + classes[1]
    assert a[7]["x"].min() >= -1 and a[7]["x"].max() <= 1


def test_render_places_each_digit_whole_at_its_position():
    digit = np.ones((2, 3, 3), dtype=np.float32) * np.array([0.5, 1.0], dtype=np.float32)[:, None, None]
    frames = render(digit, np.array([[[0, 0], [5, 4]], [[1, 1], [1, 2]]], dtype=float), 8)  # (F=2, n=2, 2)
    assert frames[0, :3, :3].min() == 0.5 and frames[0, 5:8, 4:7].min() == 1.0 and frames[0].sum() == 9 * 1.5
    assert frames[1, 1, 2] == 1.0  # overlap keeps the brighter digit
    assert frames[1].sum() == pytest.approx(0.5 * 9 + 1.0 * 9 - 0.5 * 6)



def test_subpixel_render_spreads_a_digit_bilinearly_and_agrees_at_whole_pixels():
    digit = np.random.default_rng(0).random((1, 4, 4)).astype(np.float32)
    whole = np.array([[[0.0, 0.0]], [[2.0, 4.0]], [[4.0, 4.0]]])  # the last at the far corner of an 8x8 frame
    np.testing.assert_array_equal(render(digit, whole, 8, subpixel=True), render(digit, whole, 8))
    half = render(digit, np.array([[[1.0, 2.5]]]), 8, subpixel=True)[0]
    expected = np.zeros((8, 8), dtype=np.float32)
    expected[1:5, 2:6] += 0.5 * digit[0]
    expected[1:5, 3:7] += 0.5 * digit[0]
    np.testing.assert_allclose(half, expected, rtol=1e-6)  # half a pixel right: the mean of the two neighbours
    quarter = render(digit, np.array([[[0.25, 3.75]]]), 8, subpixel=True)[0]
    assert quarter.sum() == pytest.approx(digit.sum(), rel=1e-6)  # nothing lost inside the frame
    rows, cols = np.indices((8, 8))
    assert (rows * quarter).sum() / quarter.sum() == pytest.approx(0.25 + (np.arange(4) @ digit[0].sum(1))
                                                                   / digit.sum(), rel=1e-6)  # centroid moved by 0.25

def test_options_refuse_a_digit_larger_than_the_frame():
    with pytest.raises(ConfigError, match="digit_size"):
        MovingDigitsOptions(size=16, digit_size=20).check()


def test_frame_masks_draw_each_kind_at_its_rate_per_example():
    from polydiff.data.transforms import example_generators
    from polydiff.modalities.video.masks import FrameMasks, FrameMasksOptions

    transform = FrameMasks(FrameMasksOptions(prefix=0.5, every_kth=0.25, none=0.25, strides=(2,)))
    x = torch.randn(400, 1, 8, 2, 2)
    out = transform({"x": x, "cond": {}}, example_generators((0, 1), range(400)))
    mask = out["cond"]["known_mask"]
    assert mask.shape == (400, 8) and out["cond"]["known"] is x
    prefix = [m.any() and not m[m.nonzero().max() + 1:].any() and m[: int(m.sum())].all() and m[0] for m in mask]
    strided = [(m == (torch.arange(8) % 2 == 0)).all() or (m == (torch.arange(8) % 2 == 1)).all() for m in mask]
    none = ~mask.any(1)
    assert 0.4 < sum(map(bool, prefix)) / 400 < 0.6 and 0.17 < sum(map(bool, strided)) / 400 < 0.33
    assert 0.17 < float(none.float().mean()) < 0.33
    assert not mask.all(1).any()  # never every frame: there is always something to generate
    part = transform({"x": x[10:20], "cond": {}}, example_generators((0, 1), range(10, 20)))
    torch.testing.assert_close(part["cond"]["known_mask"], mask[10:20], rtol=0, atol=0)


def test_image_examples_hold_independent_frames_and_say_so():
    options = MovingDigitsOptions(size=16, digit_size=8, frames=4, num_samples=200, image_fraction=0.5)
    data = MovingDigits(options, 0)
    flags = torch.stack([data[i]["cond"]["images"] for i in range(200)])
    assert 0.35 < float(flags.float().mean()) < 0.65
    step = torch.stack([(data[i]["x"][0, 1:] - data[i]["x"][0, :-1]).abs().mean() for i in range(200)])
    # independent frames change far more from one frame to the next than clips (<= 2 px a frame) do
    assert step[flags].mean() > 1.5 * step[~flags].mean()
    assert not bool(MovingDigits(MovingDigitsOptions(), 0)[0]["cond"]["images"])


def _write_mp4(path, frames: int, size=(20, 28), start=0):
    from polydiff.media.video import Mp4Writer

    path.parent.mkdir(parents=True, exist_ok=True)
    with Mp4Writer(path, 10) as writer:
        for f in range(frames):
            frame = np.zeros((*size, 3), dtype=np.uint8)
            frame[:, :, 0] = (start + 12 * f) % 256  # the frame index, readable back through H.264
            writer.write(frame)


def test_video_folder_reads_clips_with_stride_classes_and_skips_bad_files(tmp_path, capsys):
    from PIL import Image

    from polydiff.data.examples import SKIPPED
    from polydiff.modalities.video.folder import VideoFolderOptions, video_folder

    _write_mp4(tmp_path / "a_class" / "one.mp4", 20)
    _write_mp4(tmp_path / "a_class" / "short.mp4", 3)
    (tmp_path / "b_class").mkdir()
    (tmp_path / "b_class" / "broken.mp4").write_bytes(b"\x00not a video" * 50)
    pictures = [Image.fromarray(np.full((16, 16, 3), 30 * i, dtype=np.uint8)) for i in range(8)]
    pictures[0].save(tmp_path / "b_class" / "anim.gif", save_all=True, append_images=pictures[1:], duration=100)
    options = VideoFolderOptions(root=str(tmp_path), frames=4, stride=2, size=8, class_folders=True, clips_per_file=2)
    data = video_folder(options, 0)
    assert len(data) == 8 and data.num_classes == 2 and data.example_shape == (3, 4, 8, 8)
    first, second = data[0], data[1]  # one.mp4's two clips: frames 0, 2, 4, 6 and 13, 15, 17, 19
    red = lambda item: ((item["x"][0, :, 4, 4] + 1) * 127.5).numpy()  # noqa: E731
    np.testing.assert_allclose(red(first), [0, 24, 48, 72], atol=6)
    np.testing.assert_allclose(red(second), [156, 180, 204, 228], atol=6)
    assert int(first["cond"]["class_labels"]) == 0
    skipped = data[2]  # short.mp4 -> replaced by the next readable example, and named
    assert skipped[SKIPPED] and "short.mp4" in skipped[SKIPPED][0]
    labels = {int(data[i]["cond"]["class_labels"]) for i in range(len(data))}
    assert labels == {0, 1}  # the gif (class b) is read; the broken file is skipped
    assert any("broken.mp4" in s for i in range(len(data)) for s in data[i].get(SKIPPED, []))


def test_captions_name_each_digit_and_the_way_it_moves():
    from polydiff.modalities.nn.text import encode_bytes
    from polydiff.modalities.video.moving_digits import caption

    assert caption(np.array([3]), np.array([[-1.0, -1.0]])) == "digit 3 moving up-left"
    assert caption(np.array([3, 7]), np.array([[0.0, -2.0], [1.5, 0.1]])) == "digits 3 moving left and 7 moving down"
    assert caption(np.array([5]), None) == "digit 5"
    options = MovingDigitsOptions(size=16, digit_size=8, frames=4, captions=True, image_fraction=0.5, num_samples=40)
    data = MovingDigits(options, 0)
    kinds = set()
    for i in range(len(data)):
        item = data[i]
        frames, classes, velocity = data.draw(i)
        assert torch.equal(item["cond"]["caption_ids"], encode_bytes([caption(classes, velocity)], 48)[0])
        kinds.add(bool(item["cond"]["images"]))
        if velocity is not None:  # the named direction is the way the digit's centre goes before any bounce
            dy, dx = velocity[0]
            words = caption(classes, velocity).split()[-1]
            assert ("up" in words) == (dy < -abs(dx) * 0.414) and ("down" in words) == (dy > abs(dx) * 0.414)
    assert kinds == {True, False}
    assert "caption_ids" not in MovingDigits(MovingDigitsOptions(size=16, digit_size=8), 0)[0]["cond"]
