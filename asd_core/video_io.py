"""Write and read short videos; every write is atomic (temp file + rename), never half a file.

Animated GIF and WebP writers (Pillow, libwebp) merge identical consecutive frames into one
longer frame. Playback is the same, but a reader would see fewer frames, which breaks
"4k+1 frames in, 4k+1 frames out" for continuation inputs. So we store the frame count in
the file (GIF comment, WebP XMP) and `read_video` expands merged frames by their durations.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import atomic_path

VIDEO_EXTENSIONS = (".mp4", ".webp", ".gif")  # what write_video writes
PILLOW_READ_EXTENSIONS = (".gif", ".webp", ".png")
FFMPEG_READ_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".avi")
_FRAMES_TAG = re.compile(rb'(?:comfyui-asd |asd:)frames="(\d+)"')


def as_uint8_frames(frames) -> np.ndarray:
    """(T, H, W, 3) uint8, from uint8 or float frames in [0, 1] (numpy or torch)."""
    if hasattr(frames, "detach"):  # torch: numpy has no bfloat16
        frames = frames.detach().cpu()
        frames = (frames.float() if frames.dtype.is_floating_point else frames).numpy()
    array = np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3 or min(array.shape) < 1:
        raise ValueError(f"expected frames (T, H, W, 3) with T, H, W >= 1, got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.round(np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    return array


def write_video(path: str | os.PathLike, frames, fps: float = 8.0) -> Path:
    """Write frames (T, H, W, 3) to .mp4 (H.264 yuv420p), .webp (lossless) or .gif; atomic.

    Parent folders are created. H.264 needs even sizes: odd ones are padded by repeating the
    last row/column.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_EXTENSIONS:
        raise ValueError(f"cannot write {path.name!r}: accepted extensions are {', '.join(VIDEO_EXTENSIONS)}")
    if not fps > 0:
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

    pad_h, pad_w = array.shape[1] % 2, array.shape[2] % 2
    if pad_h or pad_w:
        array = np.pad(array, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                            macro_block_size=1, quality=9, ffmpeg_log_level="error") as writer:
        for frame in array:
            writer.append_data(frame)


def _write_pillow(path: str, array: np.ndarray, fps: float, suffix: str) -> None:
    images = [Image.fromarray(frame) for frame in array]
    duration = max(1, round(1000.0 / fps))
    count = f'frames="{len(images)}"'
    if suffix == ".webp":
        xmp = (
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description rdf:about="" xmlns:asd="https://github.com/comfyui-asd/comfyui-asd" asd:{count}/>'
            "</rdf:RDF></x:xmpmeta>"
        )
        extra = {"lossless": True, "xmp": xmp.encode()}
    else:
        extra = {"disposal": 2, "comment": f"comfyui-asd {count}".encode()}
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0, **extra)


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames of a video or animated image as (T, H, W, 3) uint8, as they play."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video at {path}")
    suffix = path.suffix.lower()
    if suffix in PILLOW_READ_EXTENSIONS:
        return _read_pillow(path)
    if suffix in FFMPEG_READ_EXTENSIONS:
        import imageio.v2 as imageio

        with imageio.get_reader(str(path), format="FFMPEG") as reader:
            return np.stack([np.asarray(frame)[..., :3] for frame in reader])
    accepted = ", ".join(PILLOW_READ_EXTENSIONS + FFMPEG_READ_EXTENSIONS)
    raise ValueError(f"cannot read {path.name!r}: accepted extensions are {accepted}")


def _read_pillow(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        frames, durations = [], []
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            image.load()  # WebP sets the frame's duration on load
            frames.append(np.asarray(image.convert("RGB")))
            durations.append(image.info.get("duration") or 0)
        tag = image.info.get("comment") or image.info.get("xmp") or b""
    match = _FRAMES_TAG.search(tag if isinstance(tag, bytes) else str(tag).encode())
    counts = _repeat_counts(durations, int(match.group(1)) if match else None)
    return np.repeat(np.stack(frames), counts, axis=0)


def _repeat_counts(durations: list[float], total_frames: int | None) -> list[int]:
    """How many played frames each stored frame stands for, from the durations.

    With the frame count we wrote, the unit is total duration / count (robust to GIF's
    centisecond rounding); without it (foreign files), the shortest duration.
    """
    ones = [1] * len(durations)
    if len(durations) == 1 and total_frames:  # every frame the same: a still image with no timing
        return [total_frames]
    if len(durations) < 2 or any(d <= 0 for d in durations):
        return ones
    unit = sum(durations) / total_frames if total_frames else min(durations)
    ends = np.round(np.cumsum(durations) / unit).astype(int)
    counts = np.diff(ends, prepend=0).tolist()
    if min(counts) < 1 or (total_frames is not None and sum(counts) != total_frames):
        return ones
    return counts
