"""Exact, VBench-like scores for toy videos: quality, semantic and total, per video and averaged.

VBench needs learned judges; the toy domain's ground truth is known, so each of its
dimensions gets an exact counterpart here (named in brackets in each function). Every score
is in [0, 1], higher is better, and the domain's own videos score 1.0 on each; `fd` (lower
is better, `asd_core.toy.fd`) and the diagnostic `empty_frames` (lower is better: a student
that collapsed to blank frames shows it here first) complete the picture.

    quality  = (sharpness + subject_consistency + motion_smoothness + flicker + 0.5 dynamic_degree) / 4.5
    semantic = mean(colour, object_class, multiple_objects)
    total    = 0.8 quality + 0.2 semantic        (VBench's (4 Quality + Semantic) / 5)

The quality scores read no caption and follow the tracked shapes (`measures.tracked`); a video
with none gets 0 for subject_consistency, motion_smoothness and dynamic_degree. The numbers
they tolerate are `thresholds.Thresholds`.
"""

from __future__ import annotations

import numpy as np

from .fd import ReferenceStats, features, reference_stats, video_features
from .measures import NO_SHAPE, Analysis, analyse, caption_pairs, check_videos, frame_checks, tracked
from .thresholds import THRESHOLDS, default_min_area

QUALITY_WEIGHTS = {  # VBench also weights dynamic degree by 0.5
    "sharpness": 1.0,
    "subject_consistency": 1.0,
    "motion_smoothness": 1.0,
    "flicker": 1.0,
    "dynamic_degree": 0.5,
}
SEMANTIC_KEYS = ("colour", "object_class", "multiple_objects")
TOTAL_WEIGHTS = {"quality": 0.8, "semantic": 0.2}


def smooth_triples(p: np.ndarray, lo: float, hi: float, tol: float) -> np.ndarray:
    """Whether each triple (p[t-1], p[t], p[t+1]) is straight, or straight after one bounce; (T-2,).

    A bounce at wall w between t and t+1 makes (a, b, 2w - c) straight, so w = (c + 2b - a) / 2;
    between t-1 and t, (a, 2w - b, 2w - c) is straight, so w = (2b + a - c) / 2. The implied
    wall must lie within `wall_margin` of lo or hi (estimated from the blob's box, which can
    differ from the true box by a pixel: rasterised apex rows, blurred edges).
    """
    margin = THRESHOLDS.wall_margin
    a, b, c = p[:-2], p[1:-1], p[2:]
    ok = np.abs(c - 2 * b + a) <= tol
    for wall in ((c + 2 * b - a) / 2, (2 * b + a - c) / 2):
        ok |= (np.abs(wall - lo) <= margin) | (np.abs(wall - hi) <= margin)
    return ok  # NaN (missing shape) compares False


def quality_scores(video: np.ndarray, an: Analysis, tol: float) -> dict[str, float]:
    """The five quality sub-scores of one video [VBench dimension]:

    sharpness [imaging quality]: assigned non-background pixels / (those + unassigned) over the
      video; blur makes in-between colours at every edge, noise leaves pixels unassigned.
    subject_consistency [subject consistency]: per tracked shape and frame, 1 if present, its
      area within `area_tolerance` of its median and its kind its most frequent one.
    motion_smoothness [motion smoothness]: per tracked shape and frame triple, 1 if both centroid
      coordinates move at constant velocity within `tol` px, a wall bounce allowed
      (`smooth_triples`); a missing shape fails, a frozen one is smooth (motion is dynamic_degree's).
    dynamic_degree [dynamic degree]: share of tracked shapes whose mean speed is >= `min_speed`.
    flicker [temporal flickering + background consistency]: `flicker_score`.
    """
    t = THRESHOLDS
    T, H, W = an.classes.shape
    fg, fuzzy = (an.classes > 0).sum(), (an.classes < 0).sum()
    consistent, smooth, moving = [], [], []
    for col in tracked(an):
        here = an.count[:, col] > 0
        med = np.median(an.area[here, col])
        mode = np.bincount(an.kind[here, col] - NO_SHAPE).argmax() + NO_SHAPE
        consistent.append(here & (np.abs(an.area[:, col] - med) <= t.area_tolerance * med) & (an.kind[:, col] == mode))
        ok = np.ones(T - 2, dtype=bool)
        for p, e0, e1, size in ((an.cx, an.x0, an.x1, W), (an.cy, an.y0, an.y1, H)):
            lo = np.median(p[here, col] - e0[here, col])  # centroid when the box touches the low wall
            hi = size - np.median(e1[here, col] - p[here, col])  # ... the high wall
            ok &= smooth_triples(p[:, col], lo, hi, tol)
        smooth.append(ok)
        step = np.hypot(np.diff(an.cx[:, col]), np.diff(an.cy[:, col]))
        step = step[~np.isnan(step)]
        moving.append(float(len(step) > 0 and step.mean() >= t.min_speed))
    return {
        "sharpness": float(fg / (fg + fuzzy)) if fg + fuzzy else 1.0,
        "subject_consistency": float(np.mean(consistent)) if consistent else 0.0,
        "motion_smoothness": float(np.mean(smooth)) if smooth else 0.0,
        "flicker": flicker_score(video, an.classes),
        "dynamic_degree": float(np.mean(moving)) if moving else 0.0,
    }


def flicker_score(video: np.ndarray, classes: np.ndarray) -> float:
    """Mean over frame pairs of 0.5 colour stability + 0.5 background-mass stability.

    Colour: the mean RGB change of pixels of the same class in both frames, 0 at `flicker_colour`;
    mass: the change of the background's share of the frame, 0 at `flicker_mass`. Both are
    exactly 0 for the domain (colours never change, shapes keep their area and never overlap).
    """
    if len(video) < 2:
        return 1.0
    same = (classes[1:] == classes[:-1]) & (classes[1:] >= 0)  # (T-1, H, W)
    change = np.abs(video[1:].astype(np.int16) - video[:-1].astype(np.int16)).mean(-1)  # (T-1, H, W)
    n_same = same.sum(axis=(1, 2))
    # a pair with no pixel of the same class in both frames changed completely: 255
    d_colour = np.where(n_same > 0, (change * same).sum(axis=(1, 2)) / np.maximum(n_same, 1), 255.0)
    bg = (classes == 0).mean(axis=(1, 2))  # (T,)
    d_mass = np.abs(np.diff(bg))
    colour = np.clip(1 - d_colour / THRESHOLDS.flicker_colour, 0, 1)
    mass = np.clip(1 - d_mass / THRESHOLDS.flicker_mass, 0, 1)
    return float((0.5 * colour + 0.5 * mass).mean())


def _score(videos, captions, motion_tolerance, min_area) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-video scores and FD features: one segmentation per video serves both."""
    videos = check_videos(videos)
    pairs = caption_pairs(videos, captions)
    area = default_min_area(*videos.shape[2:4]) if min_area is None else int(min_area)
    rows, feats = [], []
    for video, pair in zip(videos, pairs):
        an = analyse(video, area)
        rows.append(video_row(video, an, pair, motion_tolerance))
        feats.append(features(video, an))
    return combine_rows(rows), np.stack(feats)


def video_row(video: np.ndarray, an: Analysis, pair: list[tuple[str, str]], tol: float) -> dict[str, float]:
    """Every sub-score of one video: the quality five, the semantic checks and empty_frames."""
    return quality_scores(video, an, tol) | {k: float(v.mean()) for k, v in frame_checks(an, pair).items()}


def combine_rows(rows: list[dict[str, float]]) -> dict[str, np.ndarray]:
    """Per-video rows -> (N,) arrays per sub-score, plus quality, semantic and total by their weights."""
    scores = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    scores["quality"] = sum(w * scores[k] for k, w in QUALITY_WEIGHTS.items()) / sum(QUALITY_WEIGHTS.values())
    scores["semantic"] = sum(scores[k] for k in SEMANTIC_KEYS) / len(SEMANTIC_KEYS)
    scores["total"] = sum(w * scores[k] for k, w in TOTAL_WEIGHTS.items())
    return scores


def score_videos(
    videos: np.ndarray,
    captions: list[str],
    *,
    motion_tolerance: float = THRESHOLDS.motion_tolerance,
    min_area: int | None = None,
) -> dict[str, np.ndarray]:
    """Per-video scores (each an (N,) array): sub-scores, quality, semantic and total.

    The semantic sub-scores are per frame, averaged [VBench dimension]: colour [color], the
    share of captioned shapes whose colour has a significant blob; object_class [object class],
    the share whose tracked blob has the captioned kind; multiple_objects [multiple objects], 1
    if every colour has exactly as many significant blobs as the caption names (1 or 0).
    empty_frames: the share of frames with no significant blob of any colour.
    """
    return _score(videos, captions, motion_tolerance, min_area)[0]


def evaluate_videos(
    videos: np.ndarray,
    captions: list[str],
    reference: ReferenceStats | np.ndarray | None = None,
    *,
    motion_tolerance: float = THRESHOLDS.motion_tolerance,
    min_area: int | None = None,
) -> dict[str, float]:
    """Mean scores of generated videos (N, T, H, W, 3) uint8 with their captions, plus `fd`.

    reference: None -> the domain's real videos at the same size (REFERENCE_SEED, cached);
    a uint8 array of real videos; or precomputed `ReferenceStats`. Returns a flat dict of
    floats: quality, semantic, total, fd, every sub-score and std_total (the spread of the
    per-video total).
    """
    scores, feats = _score(videos, captions, motion_tolerance, min_area)
    if reference is None:
        reference = reference_stats(*videos.shape[1:4])
    elif isinstance(reference, np.ndarray):
        reference = ReferenceStats.from_features(video_features(reference, min_area))
    elif not isinstance(reference, ReferenceStats):
        raise ValueError(
            f"reference must be None, a uint8 video array or ReferenceStats, got {type(reference).__name__}"
        )
    if len(reference.mean) != feats.shape[1]:
        raise ValueError(f"reference has {len(reference.mean)} features, expected {feats.shape[1]}")
    out = {"quality": 0.0, "semantic": 0.0, "total": 0.0, "fd": reference.distance(feats)}
    out |= {k: float(v.mean()) for k, v in scores.items()}
    out["std_total"] = float(scores["total"].std())
    return out
