"""Video files: every format reads back frame for frame, writes are atomic."""

import os

import numpy as np
import pytest
import torch

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
    assert back.shape == video.shape and back.dtype == np.uint8
    tolerance = {".mp4": 12, ".webp": 0, ".gif": 8}[suffix]  # H.264 is lossy, GIF has a 256-colour palette
    assert np.abs(back.astype(int) - video.astype(int)).mean() <= tolerance
    assert os.stat(path).st_mode & 0o044  # readable by others, not mkstemp's 0600


@pytest.mark.parametrize("suffix", [".mp4", ".webp", ".gif"])
@pytest.mark.parametrize("fps", [8, 16, 3])
def test_repeated_frames_are_not_lost(tmp_path, suffix, fps):
    """GIF / WebP writers merge identical neighbours; the reader must give every frame back."""
    video = frames(count=9)
    video[2:5] = video[2]  # a pause of 3 frames
    video[6:] = video[6]  # and a still ending
    back = read_video(write_video(tmp_path / f"pause{suffix}", video, fps=fps))
    assert back.shape == video.shape
    if suffix == ".webp":  # lossless: exact
        assert np.array_equal(back, video)
    still = np.full((5, 16, 16, 3), 90, dtype=np.uint8)  # every frame the same
    assert read_video(write_video(tmp_path / f"still{suffix}", still, fps=fps)).shape == still.shape


def test_float_torch_and_odd_sizes(tmp_path):
    video = torch.from_numpy(frames(height=33, width=47).astype(np.float32) / 255.0)
    path = write_video(tmp_path / "sub" / "odd.mp4", video.to(torch.bfloat16))  # parent folder created
    assert read_video(path).shape[1:3] == (34, 48)  # H.264 needs even sizes: padded, not refused
    gif = read_video(write_video(tmp_path / "odd.gif", video))
    assert gif.shape == (6, 33, 47, 3)
    assert np.abs(gif.astype(int) - np.round(video.numpy() * 255).astype(int)).mean() <= 8


def test_bad_extension_shape_and_fps(tmp_path):
    with pytest.raises(ValueError, match=".mp4, .webp, .gif"):
        write_video(tmp_path / "clip.avi", frames())
    with pytest.raises(ValueError, match="\\(T, H, W, 3\\)"):
        write_video(tmp_path / "clip.gif", np.zeros((4, 8, 8)))
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "clip.gif", frames(), fps=0)
    with pytest.raises(ValueError, match="accepted extensions"):
        (tmp_path / "notes.txt").write_text("x")
        read_video(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("suffix, writer", [(".gif", "_write_pillow"), (".mp4", "_write_mp4")])
def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, suffix, writer):
    path = write_video(tmp_path / f"clip{suffix}", frames())
    before = path.read_bytes()
    real_writer = getattr(video_io, writer)

    def crash(temp, array, fps, *rest):
        real_writer(temp, array[:2], fps, *rest)  # half a video on disk, under the temp name
        raise OSError("disk full")

    monkeypatch.setattr(video_io, writer, crash)
    with pytest.raises(OSError, match="disk full"):
        write_video(path, frames(count=3))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [f"clip{suffix}"]
    with pytest.raises(OSError, match="disk full"):
        write_video(tmp_path / f"new{suffix}", frames(count=3))
    assert [p.name for p in tmp_path.iterdir()] == [f"clip{suffix}"]  # no partial new file either
