"""Every number the toy evaluator judges by, named once.

The scores are exact only up to these choices; keeping them in one frozen dataclass (instead
of literals in the code and again in prose) lets a reader see what a score tolerates and a
test pin what the domain's own videos need.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    # segmentation: pixel -> colour class -> blobs
    assign_radius: float = 60.0  # RGB distance within which a pixel takes the nearest reference colour (two are >= ~150 apart)
    min_area_64: int = 16  # pixels a blob needs to be significant at 64x64; scaled with the frame area
    min_area_floor: int = 4  # ... but never fewer, at small frames
    # a blob's kind from its geometry (fill = area / bounding-box area)
    min_aspect: float = 2 / 3  # box width / height below this: no shape
    max_aspect: float = 3 / 2  # ... above this: no shape
    square_fill: float = 0.89  # fill at or above: square (a square fills 1.0)
    circle_fill: float = 0.64  # fill at or above (below square_fill): circle (pi/4 = 0.785)
    # less fill: a triangle if the centroid lies more than this many box heights below the box centre (an upright
    # triangle's lies 1/6 below), else no shape
    triangle_drop: float = 0.06
    # quality scores
    tracked_fraction: float = 0.5  # a colour is a tracked shape when it has a significant blob in this share of frames
    area_tolerance: float = 0.25  # subject_consistency: a frame's area within this fraction of the shape's median area
    motion_tolerance: float = 1.0  # motion_smoothness: largest |second difference| of a centroid coordinate, pixels
    wall_margin: float = 2.0  # ... or it bounced: its implied wall lies this near (px) where the box would touch the edge
    min_speed: float = 0.5  # dynamic_degree: mean centroid speed (px/frame) of a moving shape; domain shapes move >= 1
    flicker_colour: float = 16.0  # flicker: mean RGB change (0..255) of same-class pixels between frames that scores 0
    flicker_mass: float = 0.02  # flicker: change of the background's share of the frame that scores 0
    # Frechet distance features
    max_accel: float = 10.0  # a track's acceleration (px/frame^2) is clipped here; a track with none gets it
    min_feature_std: float = 0.01  # floor of a real feature's std, so constant features standardise to finite values


THRESHOLDS = Thresholds()


def default_min_area(height: int, width: int) -> int:
    """Pixels a blob needs at this frame size: `min_area_64` scaled with the area, at least `min_area_floor`."""
    return max(THRESHOLDS.min_area_floor, round(THRESHOLDS.min_area_64 * height * width / 4096))
