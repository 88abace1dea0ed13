"""Per-chunk profile of toy videos: where in a video the scores are lost.

The video-level scores hide where in a video things go wrong; per chunk of the causal
sampler, a drift over the chunks of a long video or a VAE that decodes some frames worse
shows up here (`asd-eval --per-chunk`, `asd-eval --frames 141 --window 6`).
`chunk_scores` gives each chunk every video score, as if its frames were a video of their
own; `frame_profile` averages the per-frame measures over ranges of frames.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .measures import Analysis, analyse, caption_pairs, check_videos, frame_checks
from .scores import combine_rows, video_row
from .thresholds import THRESHOLDS, default_min_area

MIN_CHUNK_FRAMES = 3  # the temporal scores need frame triples


def chunk_scores(
    videos: np.ndarray,
    captions: list[str],
    frame_ranges: list[tuple[int, int]],
    *,
    motion_tolerance: float = THRESHOLDS.motion_tolerance,
    min_area: int | None = None,
) -> dict[str, list[float]]:
    """Every sub-score, quality, semantic and total of each (first, last) range of frames, mean over videos.

    Each range is scored as a video of its own (its shapes tracked within it), so a chunk's
    numbers are comparable along the video and to the trained-length scores; what happens at
    the seams between chunks is the whole-video scores' to see. Each video is segmented once
    and its analysis sliced per range. Keys: those of `scores.score_videos`; one value per range.
    """
    videos = check_videos(videos)
    pairs = caption_pairs(videos, captions)
    _check_ranges(frame_ranges, videos.shape[1], MIN_CHUNK_FRAMES)
    area = default_min_area(*videos.shape[2:4]) if min_area is None else int(min_area)
    rows = [[] for _ in frame_ranges]  # per range: one row of sub-scores per video
    for video, pair in zip(videos, pairs):
        an = analyse(video, area)
        for out, (first, last) in zip(rows, frame_ranges):
            out.append(video_row(video[first : last + 1], slice_analysis(an, first, last), pair, motion_tolerance))
    per_range = [combine_rows(r) for r in rows]
    return {key: [float(scores[key].mean()) for scores in per_range] for key in per_range[0]}


def slice_analysis(an: Analysis, first: int, last: int) -> Analysis:
    """The analysis of frames first..last alone: every per-frame table cut, blobs renumbered from `first`.

    Exact, because segmentation and blobs never look across frames (`measures.label_blobs`).
    """
    frames = slice(first, last + 1)
    keep = (an.blobs["frame"] >= first) & (an.blobs["frame"] <= last)
    blobs = {k: v[keep] for k, v in an.blobs.items()}
    blobs["frame"] = blobs["frame"] - first
    tables = {name: getattr(an, name)[frames] for name in ("classes", "count", "area", "cx", "cy", "x0", "x1", "y0",
                                                           "y1", "kind")}
    return replace(an, blobs=blobs, **tables)


def _check_ranges(frame_ranges: list[tuple[int, int]], frames: int, min_length: int = 1) -> None:
    if not frame_ranges:
        raise ValueError("give at least one (first, last) range of frames")
    for first, last in frame_ranges:
        if not 0 <= first <= last < frames:
            raise ValueError(f"frame range ({first}, {last}) is outside the videos' {frames} frames")
        if last - first + 1 < min_length:
            raise ValueError(f"frame range ({first}, {last}) has {last - first + 1} frames; scoring it needs "
                             f">= {min_length} (the temporal scores read frame triples): use longer chunks")


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
    _check_ranges(frame_ranges, videos.shape[1])
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
