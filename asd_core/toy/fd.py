"""Frechet distance of toy videos to the domain's real ones, on hand-made per-video features.

The sub-scores judge each video against its caption; FD judges the set against the real
distribution (class fractions, blob count/size/fill/kind mix, tracked speed and
acceleration, frame-difference energy, background-mass jitter, sharpness), so a model that
draws every shape the same way or too slowly shows here. Features are standardised by the
real set's mean and std, so no one feature's units dominate. No learned network: the same
number on every machine. Needs >= 2 videos (NaN otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .domain import COLOURS, KINDS, make_batch
from .measures import NO_SHAPE, NUM_CLASSES, Analysis, analyse, check_videos, tracked
from .thresholds import THRESHOLDS, default_min_area

REFERENCE_SEED = 1_000_003  # real reference videos; keep training/test seeds away from it
DEFAULT_REFERENCE_SIZE = 256  # real videos the reference statistics are fitted to

FEATURE_NAMES: tuple[str, ...] = (
    ("frac_background",)
    + tuple(f"frac_{c}" for c in COLOURS)
    + ("frac_unassigned", "blobs_per_frame", "log_blob_area", "blob_fill")
    + tuple(f"kind_{k}" for k in KINDS)
    + ("kind_none", "track_speed", "track_accel", "frame_change", "background_jitter", "sharpness")
)


def features(video: np.ndarray, an: Analysis) -> np.ndarray:
    """Caption-free features of one video, in FEATURE_NAMES order."""
    T, H, W = an.classes.shape
    max_accel = THRESHOLDS.max_accel
    shifted = an.classes.reshape(-1).astype(np.int64) + 1  # unassigned -> 0, background -> 1, ...
    frac = np.bincount(shifted, minlength=NUM_CLASSES + 1) / an.classes.size
    b = an.blobs
    n = len(b["area"])
    box = (b["x1"] - b["x0"]) * (b["y1"] - b["y0"])
    kind_mix = np.bincount(b["kind"] - NO_SHAPE, minlength=len(KINDS) + 1) / max(n, 1)  # [none, kinds...]
    speeds, accels = [], []
    for col in tracked(an):
        pos = np.stack([an.cx[:, col], an.cy[:, col]], axis=-1)  # (T, 2)
        step = np.linalg.norm(np.diff(pos, axis=0), axis=-1)
        accel = np.linalg.norm(np.diff(pos, n=2, axis=0), axis=-1)
        speeds.append(np.nanmean(step) if np.isfinite(step).any() else 0.0)
        accels.append(np.nanmean(np.minimum(accel, max_accel)) if np.isfinite(accel).any() else max_accel)
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
            np.mean(accels) if accels else max_accel,
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
    scale: np.ndarray  # (D,) raw feature std, floored at min_feature_std (constant features stay finite)
    sigma: np.ndarray  # (D, D) covariance of the standardised features (their mean is 0)
    count: int

    @classmethod
    def from_features(cls, features: np.ndarray) -> ReferenceStats:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"reference features must be (N >= 2, D), got shape {features.shape}")
        mean = features.mean(axis=0)
        scale = np.maximum(features.std(axis=0), THRESHOLDS.min_feature_std)
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
    videos = check_videos(videos)
    area = default_min_area(*videos.shape[2:4]) if min_area is None else min_area
    return np.stack([features(v, analyse(v, area)) for v in videos])


@lru_cache(maxsize=4)
def reference_stats(
    frames: int, height: int, width: int, n: int = DEFAULT_REFERENCE_SIZE, seed: int = REFERENCE_SEED
) -> ReferenceStats:
    """Statistics of n real domain videos of this size from `seed` (cached per process)."""
    videos, _ = make_batch(seed, n, frames, height, width)
    return ReferenceStats.from_features(video_features(videos))
