"""What a toy video shows, per frame: pixel classes, blobs, their kinds and the tracked shapes.

Every score reads the same segmentation, so a score can only disagree with another about
what it weighs, never about what is in the frame. A pixel takes the nearest of the
background and the 7 palette colours within `assign_radius` (else it is unassigned); pixels
of one colour form 4-connected blobs per frame; a blob of at least `default_min_area` pixels
is significant. Each domain shape has its own colour, so a shape is tracked as the largest
blob of its colour. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .domain import BACKGROUND_RGB, COLOUR_RGB, COLOURS, KINDS, parse_caption
from .thresholds import THRESHOLDS

UNASSIGNED = -1  # class of pixels near no reference colour; 0 = background, 1..7 = COLOURS
NUM_CLASSES = 1 + len(COLOURS)
NO_SHAPE = -1  # kind index of blobs that are no circle, square or triangle


@lru_cache(maxsize=2)
def _class_lut(radius: float) -> np.ndarray:
    """Class of every 24-bit RGB value (int8, 2**24 entries): one gather segments a video.

    Built once per radius (~0.5 s, 16 MiB); exact, unlike a coarse quantised table.
    """
    refs = np.array([BACKGROUND_RGB] + [COLOUR_RGB[c] for c in COLOURS], dtype=np.int32)  # (K, 3)
    levels = np.arange(256, dtype=np.int32)
    sq = (levels[None, :, None] - refs.T[:, None, :]) ** 2  # (3, 256, K): per channel
    gb_r, gb_g = sq[1][:, None, :], sq[2][None, :, :]  # broadcast over (g, b)
    lut = np.empty(1 << 24, dtype=np.int8)
    for r in range(256):
        d2 = sq[0][r][None, None, :] + gb_r + gb_g  # (256, 256, K)
        best = d2.argmin(-1)
        near = np.take_along_axis(d2, best[..., None], -1)[..., 0] <= radius * radius
        lut[r << 16 : (r + 1) << 16] = np.where(near, best, UNASSIGNED).reshape(-1)
    return lut


def segment(video: np.ndarray, radius: float = THRESHOLDS.assign_radius) -> np.ndarray:
    """Pixel classes (..., H, W) int8 of uint8 RGB (..., H, W, 3): -1 unassigned, 0 background, 1+ colours."""
    v = video.astype(np.int32)
    return _class_lut(float(radius))[(v[..., 0] << 16) | (v[..., 1] << 8) | v[..., 2]]


def label_blobs(classes: np.ndarray) -> np.ndarray:
    """4-connected components of equal class within each frame of (T, H, W); -1 where class <= 0.

    A component's label is the flat index of its first pixel. Min-label propagation with
    pointer jumping (each pixel jumps to its label's label), so it takes a handful of
    vectorised sweeps even for long blobs; nothing connects across frames.
    """
    fg = classes > 0
    n = classes.size
    lab = np.where(fg, np.arange(n).reshape(classes.shape), n)
    same_h = fg[:, 1:, :] & (classes[:, 1:, :] == classes[:, :-1, :])  # pixel and the one above
    same_w = fg[:, :, 1:] & (classes[:, :, 1:] == classes[:, :, :-1])  # pixel and its left one
    idx = np.flatnonzero(fg)
    while True:
        new = lab.copy()
        m = np.where(same_h, np.minimum(lab[:, 1:, :], lab[:, :-1, :]), n)
        np.minimum(new[:, 1:, :], m, out=new[:, 1:, :])
        np.minimum(new[:, :-1, :], m, out=new[:, :-1, :])
        m = np.where(same_w, np.minimum(lab[:, :, 1:], lab[:, :, :-1]), n)
        np.minimum(new[:, :, 1:], m, out=new[:, :, 1:])
        np.minimum(new[:, :, :-1], m, out=new[:, :, :-1])
        flat = new.reshape(-1)
        while True:
            jumped = flat[flat[idx]]
            if np.array_equal(jumped, flat[idx]):
                break
            flat[idx] = jumped
        if np.array_equal(new, lab):
            return np.where(fg, lab, -1)
        lab = new


def classify_kind(area, width, height, cy, box_cy) -> np.ndarray:
    """Kind index (into KINDS, or NO_SHAPE) of blobs from their geometry; arrays of equal shape.

    Fill ratio separates square, circle and triangle; only a triangle's centroid lies below its
    box centre, which tells an upright triangle from other thin blobs (see `Thresholds`).
    """
    t = THRESHOLDS
    area, width, height = (np.asarray(a, dtype=np.float64) for a in (area, width, height))
    fill = area / (width * height)
    aspect = width / height
    below = (np.asarray(cy) - np.asarray(box_cy)) / height  # upright triangle: +1/6
    kind = np.where(fill >= t.square_fill, KINDS.index("square"), KINDS.index("circle"))
    kind = np.where(fill < t.circle_fill, np.where(below > t.triangle_drop, KINDS.index("triangle"), NO_SHAPE), kind)
    return np.where((aspect < t.min_aspect) | (aspect > t.max_aspect), NO_SHAPE, kind)


def find_blobs(classes: np.ndarray, min_area: int) -> dict[str, np.ndarray]:
    """Significant blobs of a (T, H, W) class map: per-blob arrays, coordinates in pixel units.

    Keys: frame, colour (class 1..7), area, cx, cy (centroid, pixel centres at i + 0.5),
    x0, x1, y0, y1 (box edges, x1/y1 exclusive), kind (KINDS index or NO_SHAPE).
    """
    T, H, W = classes.shape
    labels = label_blobs(classes).reshape(-1)
    pix = np.flatnonzero(labels >= 0)
    order = np.argsort(labels[pix], kind="stable")
    pix = pix[order]
    lab = labels[pix]
    if len(lab) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return {k: empty for k in ("frame", "colour", "area", "cx", "cy", "x0", "x1", "y0", "y1", "kind")}
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    area = np.diff(np.r_[starts, len(lab)])
    x, y = pix % W, (pix // W) % H
    reps = lab[starts]
    blobs = {
        "frame": reps // (H * W),
        "colour": classes.reshape(-1)[reps].astype(np.int64),
        "area": area,
        "cx": np.add.reduceat(x, starts) / area + 0.5,
        "cy": np.add.reduceat(y, starts) / area + 0.5,
        "x0": np.minimum.reduceat(x, starts),
        "x1": np.maximum.reduceat(x, starts) + 1,
        "y0": np.minimum.reduceat(y, starts),
        "y1": np.maximum.reduceat(y, starts) + 1,
    }
    keep = blobs["area"] >= min_area
    blobs = {k: v[keep] for k, v in blobs.items()}
    blobs["kind"] = classify_kind(
        blobs["area"],
        blobs["x1"] - blobs["x0"],
        blobs["y1"] - blobs["y0"],
        blobs["cy"],
        (blobs["y0"] + blobs["y1"]) / 2,
    )
    return blobs


@dataclass
class Analysis:
    """Per-video segmentation summary that every score reads."""

    classes: np.ndarray  # (T, H, W) int8
    count: np.ndarray  # (T, K) significant blobs per class (column 0 unused)
    area: np.ndarray  # (T, K) area of the largest blob of each class, 0 if none
    cx: np.ndarray  # (T, K) its centroid x (NaN if none)
    cy: np.ndarray  # (T, K)
    x0: np.ndarray  # (T, K) its box
    x1: np.ndarray
    y0: np.ndarray
    y1: np.ndarray
    kind: np.ndarray  # (T, K) its kind, NO_SHAPE if none
    blobs: dict[str, np.ndarray]


def analyse(video: np.ndarray, min_area: int) -> Analysis:
    """Segment one video (T, H, W, 3) and tabulate the largest blob of each colour per frame."""
    T = video.shape[0]
    classes = segment(video)
    blobs = find_blobs(classes, min_area)
    key = blobs["frame"] * NUM_CLASSES + blobs["colour"]
    count = np.bincount(key, minlength=T * NUM_CLASSES).reshape(T, NUM_CLASSES)
    order = np.lexsort((blobs["area"], key))  # by key, then area: the last of each key is the largest
    last = order[np.r_[key[order][1:] != key[order][:-1], True]] if len(order) else order
    table = {}
    missing = {"area": 0.0, "kind": NO_SHAPE}  # NaN for positions
    for name in ("area", "cx", "cy", "x0", "x1", "y0", "y1", "kind"):
        dtype = np.int64 if name == "kind" else np.float64
        column = np.full(T * NUM_CLASSES, missing.get(name, np.nan), dtype=dtype)
        column[key[last]] = blobs[name][last]
        table[name] = column.reshape(T, NUM_CLASSES)
    return Analysis(classes=classes, count=count, blobs=blobs, **table)


def tracked(an: Analysis) -> np.ndarray:
    """Colour classes with a significant blob in `tracked_fraction` of the frames: the shapes to follow.

    The quality scores read no caption (as in VBench), so they follow what the video shows.
    """
    return np.flatnonzero((an.count > 0).sum(axis=0) >= THRESHOLDS.tracked_fraction * len(an.count))


def frame_checks(an: Analysis, pairs: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """The semantic checks and empty_frames, per frame (per captioned colour where the caption has several).

    One definition for both readers: the video scores average these over all frames, and
    `frame_profile` over ranges of frames.
    """
    cols = np.array([1 + COLOURS.index(c) for c, _ in pairs])  # the caption's colour classes
    kinds = np.array([KINDS.index(k) for _, k in pairs])
    expected = np.zeros(NUM_CLASSES, dtype=np.int64)  # blobs the caption expects per class
    expected[cols] = 1
    return {
        "colour": an.count[:, cols] > 0,  # (T, colours in the caption)
        "object_class": an.kind[:, cols] == kinds,  # (T, colours in the caption)
        "multiple_objects": (an.count[:, 1:] == expected[1:]).all(axis=1),  # (T,)
        "empty_frames": an.count[:, 1:].sum(axis=1) == 0,  # (T,)
    }


def check_videos(videos) -> np.ndarray:
    """The evaluator's input, or an error that says how to convert what was given."""
    if not isinstance(videos, np.ndarray):
        raise ValueError(
            f"videos must be a numpy uint8 array (N, T, H, W, 3), got {type(videos).__name__}; "
            "convert a float tensor in [0, 1] with (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()"
        )
    if videos.dtype != np.uint8:
        raise ValueError(f"videos must be uint8 (0..255), got {videos.dtype}; scale to 0..255 and cast")
    if videos.ndim != 5 or videos.shape[-1] != 3:
        hint = " (one video? pass video[None])" if videos.ndim == 4 else ""
        raise ValueError(f"videos must have shape (N, T, H, W, 3), got {videos.shape}{hint}")
    if videos.shape[1] < 3:
        raise ValueError(f"videos need at least 3 frames for the temporal scores, got {videos.shape[1]}")
    return videos


def caption_pairs(videos: np.ndarray, captions) -> list[list[tuple[str, str]]]:
    """(colour, kind) pairs of each video's caption; one caption per video or a clear error."""
    if isinstance(captions, str) or len(captions) != len(videos):
        raise ValueError(f"need one caption per video: {len(videos)} videos, got {captions!r:.200}")
    return [parse_caption(c) for c in captions]
