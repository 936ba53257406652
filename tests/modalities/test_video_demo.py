"""The video part of ``polydiff demo`` in its quick version: a video 8x the clip length by extension and one at
twice the frame rate, as MP4s of the right lengths with PNGs of their frames."""

from __future__ import annotations

import av

from polydiff.modalities.video.demo import moving_digits_demo


def test_the_quick_video_demo_writes_an_extended_and_an_interpolated_video(tmp_path, capsys):
    written = moving_digits_demo(tmp_path, quick=True)
    names = sorted(p.name for p in written)
    assert names == ["video_extended.mp4", "video_extended_frames.png", "video_interpolated.mp4",
                     "video_interpolated_frames.png"]
    lengths = {}
    for name in ("video_extended", "video_interpolated"):
        with av.open(str(tmp_path / f"{name}.mp4")) as container:
            lengths[name] = sum(1 for _ in container.decode(video=0))
    assert lengths == {"video_extended": 8 * 4, "video_interpolated": (4 * 4 - 1) * 2 + 1}  # quick clips: 4 frames
    assert not list(tmp_path.glob("*.partial")) and "video part done" in capsys.readouterr().out
