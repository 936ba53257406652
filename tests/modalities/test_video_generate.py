"""Long videos: the window plans, what each window is told, streaming to MP4 with memory that does not grow with
the length, and a resumed run that equals an uninterrupted one."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from polydiff.cli import main
from polydiff.modalities.video.extend import extension, extension_windows, interpolation, known_per_window
from polydiff.modalities.video.generate import generate_video

H, W = 6, 5


class Recorder:
    """A window sampler that records what it was given and makes frames whose value names (stage, index, slot)."""

    method, weight, seed, steps, sampler, guidance, cond = "explicit", 0.0, 0, None, None, None, None

    def __init__(self, fail_after: int | None = None):
        self.calls, self.fail_after = [], fail_after

    def __call__(self, known, positions, length, stage, index):
        if self.fail_after is not None and len(self.calls) == self.fail_after:
            raise KeyboardInterrupt
        self.calls.append((None if known is None else known.copy(), list(positions), length, stage, index))
        frames = np.zeros((length, H, W, 1), dtype=np.uint8)
        frames[:] = (np.arange(length) + 10 * index + 100 * (stage - 1)).astype(np.uint8)[:, None, None, None]
        if positions:
            frames[positions] = known
        return frames


def test_extension_windows_cover_the_video_once_with_the_context_before_each():
    assert list(extension_windows(20, 8, 4)) == [(0, 0, 8), (1, 8, 12), (2, 12, 16), (3, 16, 20)]
    assert list(extension_windows(5, 8, 4)) == [(0, 0, 5)]
    with pytest.raises(ValueError, match="context"):
        list(extension_windows(20, 8, 8))


def test_each_extension_window_knows_the_last_frames_made():
    record = Recorder()
    frames = [f for block in extension(record, 14, 6, 2) for f in block]
    assert len(frames) == 14 and [c[4] for c in record.calls] == [0, 1, 2]  # new frames 0-5, 6-9, 10-13
    assert record.calls[0][1] == [] and all(c[1] == [0, 1] for c in record.calls[1:])
    for (known, _, _, _, _), end in zip(record.calls[1:], (6, 10)):
        np.testing.assert_array_equal(known, np.stack(frames[end - 2:end]))


def test_interpolation_keeps_every_kth_frame_and_fills_between():
    base = [np.full((H, W, 1), 200 + i, dtype=np.uint8) for i in range(7)]
    record = Recorder()
    out = [f for block in interpolation(record, iter(base), 3, 8, 0) for f in block]
    assert len(out) == (7 - 1) * 3 + 1 and known_per_window(3, 8) == 3
    for i, frame in enumerate(base):
        np.testing.assert_array_equal(out[3 * i], frame)
    assert [c[1] for c in record.calls] == [[0, 3, 6]] * 3 and [c[2] for c in record.calls] == [7] * 3


def _model_folder(tmp_path, frame_conditioning=True, frames=4, name=None, text="none"):
    from polydiff.commands.train import RECIPES_DIR
    from polydiff.pipeline import DiffusionModel
    from polydiff.recipes.files import load_recipe

    cfg = load_recipe(RECIPES_DIR / "video/moving_digits.toml", [
        "model.options={channels = 8, channel_mult = [1, 2], num_res_blocks = [1], attention_resolutions = [8], "
        f"head_channels = 8, temporal_head_channels = 8, num_classes = 10, frame_conditioning = "
        f"{str(frame_conditioning).lower()}, text = \"{text}\", text_dim = 16, text_length = 24}}",
        "data.options.size=8", f"data.options.frames={frames}", f"data.options.captions={str(text != 'none').lower()}"])
    torch.manual_seed(0)
    model = DiffusionModel.build(cfg, (1, frames, 8, 8))
    with torch.no_grad():
        for p in model.denoiser.parameters():
            p.normal_(0, 0.1)
    return model.save_pretrained(tmp_path / (name or ("model" if frame_conditioning else "plain") + text))


@pytest.mark.parametrize("method, interpolate", [("explicit", 1), ("guidance", 2)])
def test_an_interrupted_generation_resumes_to_the_same_video(tmp_path, monkeypatch, method, interpolate):
    folder = _model_folder(tmp_path)
    args = [str(folder), "--frames", "10", "--steps", "2", "--method", method, "--interpolate", str(interpolate),
            "--label", "3", "--npz"]
    assert main(["generate-video", *args, "--out", str(tmp_path / "whole.mp4")]) == 0
    from polydiff.modalities.video import extend

    calls = {"n": 0}
    original = extend.WindowSampler.__call__

    def interrupted(self, *a):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *a)

    monkeypatch.setattr(extend.WindowSampler, "__call__", interrupted)
    part = tmp_path / "part.mp4"
    assert main(["generate-video", *args, "--out", str(part)]) == 130
    assert (tmp_path / "part.mp4.partial").is_dir() and not part.exists()
    monkeypatch.setattr(extend.WindowSampler, "__call__", original)
    assert main(["generate-video", *args, "--out", str(part)]) == 0
    whole, resumed = np.load(tmp_path / "whole.npz")["arr_0"], np.load(tmp_path / "part.npz")["arr_0"]
    assert whole.shape == ((10 - 1) * interpolate + 1, 8, 8, 1)
    np.testing.assert_array_equal(resumed, whole)
    assert not (tmp_path / "part.mp4.partial").exists()
    import av

    with av.open(str(part)) as container:
        assert sum(1 for _ in container.decode(video=0)) == len(whole)


def test_streaming_keeps_memory_flat_whatever_the_length(tmp_path):
    """Python-side peak memory (numpy arrays included) after a warm-up run, for 300 and 2400 frames of 64x64 (the
    frames alone: 1.2 and 9.8 MB): both under 1 MB, and 8x the frames not even 1.5x the peak (the peaks move by
    ~20% with allocation patterns alone; the benchmark measures resident memory with a real model)."""
    from polydiff.modalities.video.writer import DEFAULT_FPS

    class Model:
        example_shape, source = (1, 8, 64, 64), "fake"

    peaks = []
    for total in (40, 300, 2400):
        tracemalloc.start()
        generate_video(Model(), tmp_path / f"v{total}.mp4", total, _Big(), window=8, context=4, fps=DEFAULT_FPS,
                       progress=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[2] < 1.5 * peaks[1] and peaks[2] < 1_000_000, peaks


class _Big(Recorder):
    def __call__(self, known, positions, length, stage, index):
        frames = np.random.default_rng(index).integers(0, 255, (length, 64, 64, 1), dtype=np.uint8)
        if positions:
            frames[positions] = known
        return frames


def test_generate_video_says_what_is_wrong_in_one_line(tmp_path, capsys):
    plain = _model_folder(tmp_path, frame_conditioning=False)
    assert main(["generate-video", str(plain), "--frames", "4", "--method", "explicit", "--out",
                 str(tmp_path / "a.mp4")]) == 2
    assert "frame conditioning" in capsys.readouterr().err
    assert main(["generate-video", str(plain), "--frames", "4", "--out", str(tmp_path / "a.gif")]) == 2
    assert main(["generate-video", str(plain), "--frames", "4", "--context", "4", "--out",
                 str(tmp_path / "a.mp4")]) == 2
    labelled = _model_folder(tmp_path)
    assert main(["generate-video", str(labelled), "--frames", "4", "--label", "50", "--out",
                 str(tmp_path / "a.mp4")]) == 2
    assert "class labels must be in 0..9" in capsys.readouterr().err
    for bad in (["--fps", "0"], ["--guidance-weight", "-1"]):
        with pytest.raises(SystemExit) as done:
            main(["generate-video", str(labelled), "--frames", "4", *bad, "--out", str(tmp_path / "a.mp4")])
        assert done.value.code == 2
    (tmp_path / "file").write_text("")
    assert main(["generate-video", str(labelled), "--frames", "4", "--out", str(tmp_path / "file" / "a.mp4")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_another_model_can_make_the_frames_between(tmp_path):
    """--interpolator: a temporal super-resolution stage with its own clip length fills in between the base
    model's frames, which it keeps."""
    base, between = _model_folder(tmp_path), _model_folder(tmp_path, frames=5, name="between")
    common = ["--frames", "6", "--steps", "2", "--label", "1", "--npz"]
    assert main(["generate-video", str(base), *common, "--out", str(tmp_path / "base.mp4")]) == 0
    assert main(["generate-video", str(base), *common, "--interpolate", "2", "--interpolator", str(between),
                 "--out", str(tmp_path / "fine.mp4")]) == 0
    coarse, fine = np.load(tmp_path / "base.npz")["arr_0"], np.load(tmp_path / "fine.npz")["arr_0"]
    assert fine.shape[0] == 11
    np.testing.assert_array_equal(fine[::2], coarse)


def test_a_caption_conditional_model_takes_a_prompt_and_a_labels_only_one_says_it_does_not(tmp_path, capsys):
    texted = _model_folder(tmp_path, text="bytes")
    common = ["--frames", "6", "--steps", "2", "--seed", "1", "--npz"]
    for name, prompt in (("a", "digit 3 moving left"), ("b", "digit 3 moving left"), ("c", "digit 7 moving up")):
        assert main(["generate-video", str(texted), *common, "--prompt", prompt, "--out", str(tmp_path / f"{name}.mp4")]) == 0
    a, b, c = (np.load(tmp_path / f"{n}.npz")["arr_0"] for n in "abc")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)  # the caption reaches the frames
    assert main(["generate-video", str(_model_folder(tmp_path)), *common, "--prompt", "digit 3", "--out",
                 str(tmp_path / "d.mp4")]) == 2
    assert "not text-conditional" in capsys.readouterr().err
