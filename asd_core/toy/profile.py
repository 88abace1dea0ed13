"""Per-chunk profile of toy videos: where in a video the scores are lost.

The video-level scores hide where in a video things go wrong; per chunk of the causal
sampler, a drift over the chunks or a VAE that decodes some frames worse shows up here
(`asd-eval --per-chunk`; git show 4e5d4fd:docs/results.md, "The VAE's later frames").
"""

from __future__ import annotations

import numpy as np

from .measures import analyse, caption_pairs, check_videos, frame_checks
from .thresholds import default_min_area


def frame_profile(
    videos: np.ndarray,
    captions: list[str],
    frame_ranges: list[tuple[int, int]],
    *,
    min_area: int | None = None,
) -> dict[str, list[float]]:
    """Per-frame measures averaged over videos and over each (first, last) range of frames.

    Keys: colour and multiple_objects (as in the semantic score, per frame), empty_frames and
    sharpness (per frame: assigned non-background pixels / (those + unassigned), 1 for a frame
    of pure background); each one value per range.
    """
    videos = check_videos(videos)
    pairs = caption_pairs(videos, captions)
    frames = videos.shape[1]
    for first, last in frame_ranges:
        if not 0 <= first <= last < frames:
            raise ValueError(f"frame range ({first}, {last}) is outside the videos' {frames} frames")
    area = default_min_area(*videos.shape[2:4]) if min_area is None else int(min_area)
    per_frame = {"colour": [], "multiple_objects": [], "empty_frames": [], "sharpness": []}
    for video, pair in zip(videos, pairs):
        an = analyse(video, area)
        checks = frame_checks(an, pair)
        fg, fuzzy = (an.classes > 0).sum(axis=(1, 2)), (an.classes < 0).sum(axis=(1, 2))
        per_frame["colour"].append(checks["colour"].mean(axis=1))
        per_frame["multiple_objects"].append(checks["multiple_objects"])
        per_frame["empty_frames"].append(checks["empty_frames"])
        per_frame["sharpness"].append(np.where(fg + fuzzy > 0, fg / np.maximum(fg + fuzzy, 1), 1.0))
    out = {}
    for key, rows in per_frame.items():
        table = np.stack(rows).astype(np.float64)  # (N, T)
        out[key] = [float(table[:, first : last + 1].mean()) for first, last in frame_ranges]
    return out
