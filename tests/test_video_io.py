"""Video files: every format reads back, writes are atomic."""

import os

import numpy as np
import pytest

from asd_core import video_io
from asd_core.video_io import read_video, write_video


def frames(count=6, height=32, width=48):
    rng = np.random.default_rng(0)
    video = np.zeros((count, height, width, 3), dtype=np.uint8)
    for t in range(count):  # a moving bright square on grey: easy for every codec
        video[t] = 60
        video[t, 8:20, 4 + 4 * t : 16 + 4 * t] = (230, 40, 40)
    return video + rng.integers(0, 2, video.shape, dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".mp4", ".webp", ".gif"])
def test_each_format_reads_back(tmp_path, suffix):
    video = frames()
    path = write_video(tmp_path / f"clip{suffix}", video, fps=8)
    back = read_video(path)
    assert back.shape == video.shape
    tolerance = {".mp4": 12, ".webp": 0, ".gif": 8}[suffix]
    assert np.abs(back.astype(int) - video.astype(int)).mean() <= tolerance
    assert os.stat(path).st_mode & 0o044  # readable by others, not mkstemp's 0600


def test_float_frames_and_odd_sizes(tmp_path):
    video = frames(height=33, width=47).astype(np.float32) / 255.0
    path = write_video(tmp_path / "odd.mp4", video)
    assert read_video(path).shape[1:3] == (34, 48)  # H.264 needs even sizes: padded, not refused


def test_bad_extension_and_shape(tmp_path):
    with pytest.raises(ValueError, match=".mp4, .webp, .gif"):
        write_video(tmp_path / "clip.avi", frames())
    with pytest.raises(ValueError, match="\\(T, H, W, 3\\)"):
        write_video(tmp_path / "clip.gif", np.zeros((4, 8, 8)))


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = write_video(tmp_path / "clip.gif", frames())
    before = path.read_bytes()

    def crash(temp, array, fps, suffix):
        with open(temp, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(video_io, "_write_pillow", crash)
    with pytest.raises(OSError, match="disk full"):
        write_video(path, frames(count=3))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["clip.gif"]
