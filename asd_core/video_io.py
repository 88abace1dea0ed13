"""Write and read short videos; every write is atomic (temp file + rename), never half a file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import atomic_path

VIDEO_EXTENSIONS = (".mp4", ".webp", ".gif")


def as_uint8_frames(frames) -> np.ndarray:
    """(T, H, W, 3) uint8, from uint8 or float frames in [0, 1] (numpy or torch)."""
    array = frames.detach().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.round(np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    return array


def write_video(path: str | os.PathLike, frames, fps: float = 8.0) -> Path:
    """Write frames to .mp4 (H.264), .webp or .gif (animated, lossless/palette); atomic."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_EXTENSIONS:
        raise ValueError(f"cannot write {path.name!r}: accepted extensions are {', '.join(VIDEO_EXTENSIONS)}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    array = as_uint8_frames(frames)
    with atomic_path(path) as temp:
        if suffix == ".mp4":
            _write_mp4(temp, array, fps)
        else:
            _write_pillow(temp, array, fps, suffix)
    return path


def _write_mp4(path: str, array: np.ndarray, fps: float) -> None:
    import imageio.v2 as imageio

    # H.264 with yuv420p needs even sizes: pad by edge replication rather than refuse.
    pad_h, pad_w = array.shape[1] % 2, array.shape[2] % 2
    if pad_h or pad_w:
        array = np.pad(array, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                            macro_block_size=1, quality=9) as writer:
        for frame in array:
            writer.append_data(frame)


def _write_pillow(path: str, array: np.ndarray, fps: float, suffix: str) -> None:
    images = [Image.fromarray(frame) for frame in array]
    duration = max(1, round(1000.0 / fps))
    extra = {"lossless": True} if suffix == ".webp" else {"disposal": 2}
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0, **extra)


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames of a video or animated image as (T, H, W, 3) uint8."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no video at {path}")
    if path.suffix.lower() in (".gif", ".webp", ".png"):
        with Image.open(path) as image:
            frames = []
            for index in range(getattr(image, "n_frames", 1)):
                image.seek(index)
                frames.append(np.asarray(image.convert("RGB")))
        return np.stack(frames)
    import imageio.v2 as imageio

    return np.stack([np.asarray(frame)[..., :3] for frame in imageio.get_reader(str(path), format="FFMPEG")])
