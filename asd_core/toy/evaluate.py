"""Exact, VBench-like scores for videos of the toy domain (`asd_core.toy.domain`).

Every score is in [0, 1] (higher is better) except `fd` (>= 0, lower is better) and the
diagnostic `empty_frames` (lower is better); the domain's own videos score 1.0 on every
quality and semantic figure. Scores are computed per video, then averaged over videos.

Segmentation (shared by all scores). Each pixel is assigned to the nearest of the background
colour and the 7 palette colours if it lies within ASSIGN_RADIUS (60, RGB Euclidean; the
closest two reference colours are ~150 apart) and is "unassigned" otherwise. Per frame,
pixels of one colour form 4-connected blobs; a blob of at least `min_area` pixels (16 at
64x64, scaled with the frame area) is *significant*. Its kind comes from its geometry:
aspect ratio of the bounding box outside [2/3, 3/2] -> no shape; fill ratio (area / box area)
>= 0.89 -> square (1.0), >= 0.64 -> circle (pi/4 = 0.785), otherwise a triangle (0.5) if its
centroid lies below the box centre (upright: 1/6 of the height), else no shape. Each domain
shape has its own colour, so a shape is *tracked* as the largest blob of its colour.

The quality scores read no caption (as in VBench): they track every colour that has a
significant blob in at least half of the frames; a video with no tracked shape gets 0 for
subject_consistency, motion_smoothness and dynamic_degree. The semantic scores compare the
frames with the caption.

Quality (VBench "Quality Score" dimensions in brackets):
- sharpness [imaging quality]: assigned non-background pixels / (those + unassigned pixels).
  Crisp shapes on the background give 1; blur creates in-between colours at every edge;
  noise leaves most pixels unassigned. A frame of pure background counts as 1.
- subject_consistency [subject consistency]: per tracked shape and frame, 1 if the shape is
  present, its area within 25% of its median area and its kind equal to its most frequent
  kind (the same object throughout the video).
- motion_smoothness [motion smoothness]: per tracked shape and frame triple (t-1, t, t+1),
  1 if both centroid coordinates have a second difference within `motion_tolerance` pixels
  (1.0) -- constant velocity -- allowing a bounce: the triple also passes when reflecting
  the last one or two positions about some wall makes it straight and that wall lies within
  2 px of where the shape's box would touch the frame edge. A missing shape fails. A frozen
  shape is smooth (constant velocity zero): motion itself is dynamic_degree's job.
- dynamic_degree [dynamic degree]: fraction of tracked shapes whose mean centroid speed is
  >= 0.5 px/frame (every domain shape moves at >= 1 px/frame); frozen videos get 0.
- flicker [temporal flickering + background consistency]: per consecutive frame pair,
  0.5 * max(0, 1 - d_colour / 16) + 0.5 * max(0, 1 - d_mass / 0.02), where d_colour is the
  mean absolute RGB change (0..255) of pixels assigned to the same class in both frames
  (0 for the domain: colours never change) and d_mass the change in the fraction of
  background pixels (0 for the domain: shapes keep their area and never overlap).
- quality = (sharpness + subject_consistency + motion_smoothness + flicker
  + 0.5 * dynamic_degree) / 4.5 -- VBench also weights dynamic degree by 0.5.

Semantic (VBench "Semantic Score" dimensions in brackets), per frame, averaged:
- colour [color]: fraction of captioned shapes whose colour has a significant blob;
- object_class [object class]: fraction of captioned shapes whose tracked blob has the
  captioned kind;
- multiple_objects [multiple objects]: 1 if every colour has exactly as many significant
  blobs as the caption names (1 or 0), else 0.
- semantic = mean of the three.

total = 0.8 * quality + 0.2 * semantic: VBench's Total = (4 Quality + Semantic) / 5.

empty_frames (a diagnostic, in no score): fraction of frames with no significant blob of any
colour. The domain always shows 1-3 shapes (0.0); a student that collapsed to blank frames
shows it here first (docs/results.md: a learning discriminator drove students there).

fd: Frechet distance between Gaussians fitted to fixed hand-made per-video features of the
generated and the real videos (class fractions, blob count/size/fill/kind mix, tracked
speed and acceleration, frame-difference energy, background-mass jitter, sharpness; see
`video_features`), each standardised by the real set's mean and std. The real reference is
DEFAULT_REFERENCE_SIZE videos of the domain from REFERENCE_SEED at the same size (cached),
or a set the caller passes. Needs >= 2 videos (NaN otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .domain import BACKGROUND_RGB, COLOUR_RGB, COLOURS, KINDS, make_batch, parse_caption

ASSIGN_RADIUS = 60.0  # RGB distance within which a pixel counts as a palette/background colour
UNASSIGNED = -1  # class of pixels near no reference colour; 0 = background, 1..7 = COLOURS
NUM_CLASSES = 1 + len(COLOURS)
NO_SHAPE = -1  # kind index of blobs that are no circle, square or triangle
REFERENCE_SEED = 1_000_003  # real reference videos; keep training/test seeds away from it
DEFAULT_REFERENCE_SIZE = 256
QUALITY_WEIGHTS = {
    "sharpness": 1.0,
    "subject_consistency": 1.0,
    "motion_smoothness": 1.0,
    "flicker": 1.0,
    "dynamic_degree": 0.5,
}
SEMANTIC_KEYS = ("colour", "object_class", "multiple_objects")
TOTAL_WEIGHTS = {"quality": 0.8, "semantic": 0.2}


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


def segment(video: np.ndarray, radius: float = ASSIGN_RADIUS) -> np.ndarray:
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
    """Kind index (into KINDS, or NO_SHAPE) of blobs from their geometry; arrays of equal shape."""
    area, width, height = (np.asarray(a, dtype=np.float64) for a in (area, width, height))
    fill = area / (width * height)
    aspect = width / height
    below = (np.asarray(cy) - np.asarray(box_cy)) / height  # upright triangle: +1/6
    kind = np.where(fill >= 0.89, KINDS.index("square"), KINDS.index("circle"))
    kind = np.where(fill < 0.64, np.where(below > 0.06, KINDS.index("triangle"), NO_SHAPE), kind)
    return np.where((aspect < 2 / 3) | (aspect > 3 / 2), NO_SHAPE, kind)


def default_min_area(height: int, width: int) -> int:
    return max(4, round(16 * height * width / 4096))


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
class _Analysis:
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


def _analyse(video: np.ndarray, min_area: int) -> _Analysis:
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
    return _Analysis(classes=classes, count=count, blobs=blobs, **table)


def _smooth_triples(p: np.ndarray, lo: float, hi: float, tol: float, wall_margin: float = 2.0) -> np.ndarray:
    """Whether each triple (p[t-1], p[t], p[t+1]) is straight, or straight after one bounce; (T-2,).

    A bounce at wall w between t and t+1 makes (a, b, 2w - c) straight, so w = (c + 2b - a) / 2;
    between t-1 and t, (a, 2w - b, 2w - c) is straight, so w = (2b + a - c) / 2. The implied
    wall must lie within `wall_margin` of lo or hi (estimated from the blob's box, which can
    differ from the true box by a pixel: rasterised apex rows, blurred edges).
    """
    a, b, c = p[:-2], p[1:-1], p[2:]
    ok = np.abs(c - 2 * b + a) <= tol
    for wall in ((c + 2 * b - a) / 2, (2 * b + a - c) / 2):
        ok |= (np.abs(wall - lo) <= wall_margin) | (np.abs(wall - hi) <= wall_margin)
    return ok  # NaN (missing shape) compares False


def _tracked(an: _Analysis) -> np.ndarray:
    """Colour classes with a significant blob in at least half of the frames: the shapes to follow."""
    return np.flatnonzero((an.count > 0).sum(axis=0) * 2 >= len(an.count))


def _frame_checks(an: _Analysis, pairs: list[tuple[str, str]]) -> dict[str, np.ndarray]:
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


def _quality_scores(video: np.ndarray, an: _Analysis, tol: float) -> dict[str, float]:
    T, H, W = an.classes.shape
    fg, fuzzy = (an.classes > 0).sum(), (an.classes < 0).sum()
    consistent, smooth, moving = [], [], []
    for col in _tracked(an):
        here = an.count[:, col] > 0
        med = np.median(an.area[here, col])
        mode = np.bincount(an.kind[here, col] - NO_SHAPE).argmax() + NO_SHAPE
        consistent.append(here & (np.abs(an.area[:, col] - med) <= 0.25 * med) & (an.kind[:, col] == mode))
        ok = np.ones(T - 2, dtype=bool)
        for p, e0, e1, size in ((an.cx, an.x0, an.x1, W), (an.cy, an.y0, an.y1, H)):
            lo = np.median(p[here, col] - e0[here, col])  # centroid when the box touches the low wall
            hi = size - np.median(e1[here, col] - p[here, col])  # ... the high wall
            ok &= _smooth_triples(p[:, col], lo, hi, tol)
        smooth.append(ok)
        step = np.hypot(np.diff(an.cx[:, col]), np.diff(an.cy[:, col]))
        step = step[~np.isnan(step)]
        moving.append(float(len(step) > 0 and step.mean() >= 0.5))
    return {
        "sharpness": float(fg / (fg + fuzzy)) if fg + fuzzy else 1.0,
        "subject_consistency": float(np.mean(consistent)) if consistent else 0.0,
        "motion_smoothness": float(np.mean(smooth)) if smooth else 0.0,
        "flicker": _flicker_score(video, an.classes),
        "dynamic_degree": float(np.mean(moving)) if moving else 0.0,
    }


def _flicker_score(video: np.ndarray, classes: np.ndarray) -> float:
    """Mean over frame pairs of colour stability of unchanged-class pixels and background-mass stability."""
    if len(video) < 2:
        return 1.0
    same = (classes[1:] == classes[:-1]) & (classes[1:] >= 0)  # (T-1, H, W)
    change = np.abs(video[1:].astype(np.int16) - video[:-1].astype(np.int16)).mean(-1)  # (T-1, H, W)
    n_same = same.sum(axis=(1, 2))
    d_colour = np.where(n_same > 0, (change * same).sum(axis=(1, 2)) / np.maximum(n_same, 1), 255.0)
    bg = (classes == 0).mean(axis=(1, 2))  # (T,)
    d_mass = np.abs(np.diff(bg))
    score = 0.5 * np.clip(1 - d_colour / 16, 0, 1) + 0.5 * np.clip(1 - d_mass / 0.02, 0, 1)
    return float(score.mean())


FEATURE_NAMES: tuple[str, ...] = (
    ("frac_background",)
    + tuple(f"frac_{c}" for c in COLOURS)
    + ("frac_unassigned", "blobs_per_frame", "log_blob_area", "blob_fill")
    + tuple(f"kind_{k}" for k in KINDS)
    + ("kind_none", "track_speed", "track_accel", "frame_change", "background_jitter", "sharpness")
)


def _features(video: np.ndarray, an: _Analysis) -> np.ndarray:
    """Caption-free per-video features for the Frechet distance, in FEATURE_NAMES order."""
    T, H, W = an.classes.shape
    shifted = an.classes.reshape(-1).astype(np.int64) + 1  # unassigned -> 0, background -> 1, ...
    frac = np.bincount(shifted, minlength=NUM_CLASSES + 1) / an.classes.size
    b = an.blobs
    n = len(b["area"])
    box = (b["x1"] - b["x0"]) * (b["y1"] - b["y0"])
    kind_mix = np.bincount(b["kind"] - NO_SHAPE, minlength=len(KINDS) + 1) / max(n, 1)  # [none, kinds...]
    speeds, accels = [], []
    for col in _tracked(an):
        pos = np.stack([an.cx[:, col], an.cy[:, col]], axis=-1)  # (T, 2)
        step = np.linalg.norm(np.diff(pos, axis=0), axis=-1)
        accel = np.linalg.norm(np.diff(pos, n=2, axis=0), axis=-1)
        speeds.append(np.nanmean(step) if np.isfinite(step).any() else 0.0)
        accels.append(np.nanmean(np.minimum(accel, 10.0)) if np.isfinite(accel).any() else 10.0)
    fg, fuzzy = frac[2:].sum(), frac[0]  # colour classes vs unassigned (frac index = class + 1)
    change = np.abs(np.diff(video.astype(np.int16), axis=0)).mean() / 255 if T > 1 else 0.0
    return np.concatenate([
        frac[1:],  # background, colours
        frac[:1],  # unassigned
        [
            n / T,
            np.log(b["area"]).mean() if n else 0.0,
            (b["area"] / box).mean() if n else 0.0,
        ],
        kind_mix[1:],
        kind_mix[:1],
        [
            np.mean(speeds) if speeds else 0.0,
            np.mean(accels) if accels else 10.0,
            change,
            (an.classes == 0).mean(axis=(1, 2)).std(),
            fg / (fg + fuzzy) if fg + fuzzy else 1.0,
        ],
    ])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)). No scipy here, so the trace of the matrix
    square root comes from eigenvalues: S1 S2 is similar to the symmetric PSD matrix
    S1^(1/2) S2 S1^(1/2) (same eigenvalues), whose square root's trace is the sum of the
    square roots of its eigenvalues; S1^(1/2) itself comes from `eigh` of S1.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_root = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root, 0.0))


@dataclass(frozen=True)
class ReferenceStats:
    """Real-video feature statistics: the standardisation and the Gaussian FD compares against."""

    mean: np.ndarray  # (D,) raw feature mean
    scale: np.ndarray  # (D,) raw feature std, floored at 0.01 (constant features stay finite)
    sigma: np.ndarray  # (D, D) covariance of the standardised features (their mean is 0)
    count: int

    @classmethod
    def from_features(cls, features: np.ndarray) -> ReferenceStats:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"reference features must be (N >= 2, D), got shape {features.shape}")
        mean = features.mean(axis=0)
        scale = np.maximum(features.std(axis=0), 0.01)
        z = (features - mean) / scale
        return cls(mean=mean, scale=scale, sigma=np.cov(z, rowvar=False), count=len(features))

    def distance(self, features: np.ndarray) -> float:
        """FD of a set of raw features (N >= 2, D) to this reference; NaN for fewer than 2."""
        if len(features) < 2:
            return float("nan")
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return frechet_distance(z.mean(axis=0), np.cov(z, rowvar=False), np.zeros_like(self.mean), self.sigma)


def video_features(videos: np.ndarray, min_area: int | None = None) -> np.ndarray:
    """Per-video features (N, len(FEATURE_NAMES)) of uint8 videos (N, T, H, W, 3)."""
    videos = _check_videos(videos)
    area = default_min_area(*videos.shape[2:4]) if min_area is None else min_area
    return np.stack([_features(v, _analyse(v, area)) for v in videos])


@lru_cache(maxsize=4)
def reference_stats(
    frames: int, height: int, width: int, n: int = DEFAULT_REFERENCE_SIZE, seed: int = REFERENCE_SEED
) -> ReferenceStats:
    """Statistics of n real domain videos of this size from `seed` (cached per process)."""
    videos, _ = make_batch(seed, n, frames, height, width)
    return ReferenceStats.from_features(video_features(videos))


def _check_videos(videos) -> np.ndarray:
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


def score_videos(
    videos: np.ndarray,
    captions: list[str],
    *,
    motion_tolerance: float = 1.0,
    min_area: int | None = None,
) -> dict[str, np.ndarray]:
    """Per-video scores (each an (N,) array): sub-scores, quality, semantic and total."""
    return _score(videos, captions, motion_tolerance, min_area)[0]


def _caption_pairs(videos: np.ndarray, captions) -> list[list[tuple[str, str]]]:
    """(colour, kind) pairs of each video's caption; one caption per video or a clear error."""
    if isinstance(captions, str) or len(captions) != len(videos):
        raise ValueError(f"need one caption per video: {len(videos)} videos, got {captions!r:.200}")
    return [parse_caption(c) for c in captions]


def _score(videos, captions, motion_tolerance, min_area) -> tuple[dict[str, np.ndarray], np.ndarray]:
    videos = _check_videos(videos)
    pairs = _caption_pairs(videos, captions)
    area = default_min_area(*videos.shape[2:4]) if min_area is None else int(min_area)
    rows, feats = [], []
    for video, pair in zip(videos, pairs):
        an = _analyse(video, area)
        checks = _frame_checks(an, pair)
        rows.append(_quality_scores(video, an, motion_tolerance) | {k: float(v.mean()) for k, v in checks.items()})
        feats.append(_features(video, an))
    scores = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    scores["quality"] = sum(w * scores[k] for k, w in QUALITY_WEIGHTS.items()) / sum(QUALITY_WEIGHTS.values())
    scores["semantic"] = sum(scores[k] for k in SEMANTIC_KEYS) / len(SEMANTIC_KEYS)
    scores["total"] = sum(w * scores[k] for k, w in TOTAL_WEIGHTS.items())
    return scores, np.stack(feats)


def frame_profile(
    videos: np.ndarray,
    captions: list[str],
    frame_ranges: list[tuple[int, int]],
    *,
    min_area: int | None = None,
) -> dict[str, list[float]]:
    """Per-frame measures averaged over videos and over each (first, last) range of frames.

    The video-level scores hide where in a video things go wrong; per chunk of the causal
    sampler, a drift over the chunks or a VAE that decodes some frames worse shows up here
    (docs/results.md, "The VAE's later frames"). Keys: colour and multiple_objects (as in the
    semantic score, per frame), empty_frames and sharpness; each one value per range.
    """
    videos = _check_videos(videos)
    pairs = _caption_pairs(videos, captions)
    frames = videos.shape[1]
    for first, last in frame_ranges:
        if not 0 <= first <= last < frames:
            raise ValueError(f"frame range ({first}, {last}) is outside the videos' {frames} frames")
    area = default_min_area(*videos.shape[2:4]) if min_area is None else int(min_area)
    per_frame = {"colour": [], "multiple_objects": [], "empty_frames": [], "sharpness": []}
    for video, pair in zip(videos, pairs):
        an = _analyse(video, area)
        checks = _frame_checks(an, pair)
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


def evaluate_videos(
    videos: np.ndarray,
    captions: list[str],
    reference: ReferenceStats | np.ndarray | None = None,
    *,
    motion_tolerance: float = 1.0,
    min_area: int | None = None,
) -> dict[str, float]:
    """Mean scores of generated videos (N, T, H, W, 3) uint8 with their captions, plus `fd`.

    reference: None -> the domain's real videos at the same size (REFERENCE_SEED, cached);
    a uint8 array of real videos; or precomputed `ReferenceStats`. Returns a flat dict of
    floats: quality, semantic, total, fd, every sub-score (see the module docstring) and
    std_total (the spread of the per-video total).
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
