"""Typed media to files and TensorBoard: PNG, MP4 (H.264, yuv420p, odd sizes padded) and WAV read back."""

from __future__ import annotations

import av
import numpy as np
import soundfile
import torch
from PIL import Image as PILImage

from polydiff.media import Audio, Image, Mp4Writer, Video, image_grid, log_media, save_media, to_uint8


def test_png_round_trip(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = save_media(Image(pixels), tmp_path / "a")
    assert path.name == "a.png" and np.array_equal(np.asarray(PILImage.open(path)), pixels)
    grey = save_media(Image(pixels[:, :, :1]), tmp_path / "g")
    assert np.array_equal(np.asarray(PILImage.open(grey)), pixels[:, :, 0])


def test_mp4_is_h264_yuv420p_with_every_frame_and_odd_sizes_padded(tmp_path):
    frames = np.zeros((12, 9, 11, 3), dtype=np.uint8)
    for i in range(12):
        frames[i, :, : i % 11] = 255  # a bar that grows, so frames differ
    path = save_media(Video(frames, fps=6), tmp_path / "v")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.codec_context.width, stream.codec_context.height) == (12, 10)
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 12 and float(stream.average_rate) == 6.0
    assert abs(decoded[5][:9, :11].astype(float) - frames[5]).mean() < 8  # lossy, but the picture survives


def test_mp4_writer_streams_frames(tmp_path):
    with Mp4Writer(tmp_path / "s.mp4", fps=24) as writer:
        for i in range(30):
            writer.write(np.full((16, 16, 1), 8 * i, dtype=np.uint8))
    assert writer.frames_written == 30
    with av.open(str(tmp_path / "s.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 30


def test_wav_round_trip(tmp_path):
    wave = (0.5 * np.sin(np.linspace(0, 200, 4000))).astype(np.float32)[:, None]
    path = save_media(Audio(wave, 16000), tmp_path / "w")
    read, rate = soundfile.read(path, dtype="float32")
    assert rate == 16000 and np.abs(read - wave[:, 0]).max() < 1e-4


def test_tensorboard_gets_each_kind(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    log_media(writer, "image", 1, Image(np.zeros((4, 4, 3), dtype=np.uint8)))
    log_media(writer, "video", 1, Video(np.zeros((3, 4, 4, 3), dtype=np.uint8)))
    log_media(writer, "audio", 1, Audio(np.zeros((100, 2), dtype=np.float32), 8000))
    writer.close()
    events = EventAccumulator(str(tmp_path)).Reload()
    assert set(events.Tags()["images"]) == {"image", "video"} and events.Tags()["audio"] == ["audio"]


def test_samples_map_to_pixels_through_the_data_range_and_tile_into_a_grid():
    samples = torch.tensor([-1.0, 0.0, 1.0, 3.0])
    assert to_uint8(samples, (-1.0, 1.0)).tolist() == [0, 128, 255, 255]
    assert to_uint8(samples, (0.0, 2.0)).tolist() == [0, 0, 128, 255]
    grid = image_grid(np.full((5, 2, 3, 1), 9, dtype=np.uint8), columns=2, pad=1, fill=0)
    assert grid.shape == (3 * 3 + 1, 2 * 4 + 1, 1) and int((grid == 9).sum()) == 5 * 6
