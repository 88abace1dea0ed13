"""Synthetic video domain: coloured shapes bouncing on a plain background, with captions.

Why this domain: the built-in default model must train on this CPU in an hour or two, and
its quality must be measurable exactly (see `asd_core.toy.scores`). Every video here has a
known ground truth: 1-3 shapes (circle, square, triangle), each in its own colour from a
small palette of colours far apart in RGB, drawn with crisp edges (no anti-aliasing: every
pixel is exactly the background or a palette colour), moving at constant velocity and
bouncing off the walls (the velocity component normal to the wall is reflected; the shape
always lies fully inside the frame). Shapes never overlap during the sampled length.

Geometry (pixel centres at i + 0.5): a shape of size s has an s x s bounding box centred on
its position (x, y); circle = diameter s, square = side s, triangle = upright isosceles with
base s and height s (apex at the top). Sampled specs use integer sizes, integer bounding-box
corners and integer velocities, so every trajectory -- bounces included -- is pixel exact:
centroids move by exactly the velocity each frame except at a bounce. `render` accepts any
float spec.

Captions follow one fixed grammar: "a <colour> <shape>" per shape, joined as
"A", "A and B", "A, B and C" (for n shapes: commas, then " and " before the last). Every
shape has its own colour, so a colour names exactly one shape.

Defaults: 64x64 RGB, 33 frames = 9 latent frames with the Wan VAE's 4x temporal compression
((33 - 1) / 4 + 1 = 9 = 3 chunks of 3).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# Colours far apart in RGB (smallest pairwise distance ~150, background included), so a
# pixel's nearest palette colour is unambiguous even for imperfect generated videos.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 60, 230),
    "yellow": (235, 215, 50),
    "magenta": (210, 60, 210),
    "cyan": (50, 210, 215),
    "white": (235, 235, 235),
}
COLOURS: tuple[str, ...] = tuple(COLOUR_RGB)
BACKGROUND_RGB: tuple[int, int, int] = (20, 20, 24)  # near-black, one fixed colour
KINDS: tuple[str, ...] = ("circle", "square", "triangle")

# Every token a caption can contain ("," is its own token); a toy text encoder's vocabulary.
CAPTION_VOCAB: list[str] = ["a", "and", ","] + list(COLOURS) + list(KINDS)
# The words a user may type (the vocabulary as help and warnings list it).
BUILTIN_WORDS = " ".join(w for w in CAPTION_VOCAB if w != ",")

DEFAULT_FRAMES = 33
DEFAULT_HEIGHT = 64
DEFAULT_WIDTH = 64
MAX_SHAPES = 3
MIN_GAP = 2  # background pixels kept between the bounding boxes of different shapes

_GRAMMAR = (
    'captions are "a <colour> <shape>" items joined as "A", "A and B" or "A, B and C", '
    f"with colour in {list(COLOURS)}, shape in {list(KINDS)}, each colour at most once "
    '(e.g. "a red circle, a blue square and a green triangle")'
)


@dataclass(frozen=True)
class ShapeSpec:
    colour: str  # one of COLOURS
    kind: str  # one of KINDS
    size: float  # bounding-box side in pixels
    position: tuple[float, float]  # bounding-box centre (x, y) at frame 0, pixels
    velocity: tuple[float, float]  # (vx, vy) in pixels per frame, before bounces

    def __post_init__(self):
        if self.colour not in COLOUR_RGB:
            raise ValueError(f"unknown colour {self.colour!r}; use one of {list(COLOURS)}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown shape kind {self.kind!r}; use one of {list(KINDS)}")
        if not self.size > 0:
            raise ValueError(f"shape size must be > 0 pixels, got {self.size}")


@dataclass(frozen=True)
class VideoSpec:
    shapes: tuple[ShapeSpec, ...]

    def __post_init__(self):
        object.__setattr__(self, "shapes", tuple(self.shapes))
        if not self.shapes:
            raise ValueError("a video needs at least one shape")
        colours = [s.colour for s in self.shapes]
        if len(set(colours)) != len(colours):
            raise ValueError(f"each shape needs its own colour (a colour names one shape), got {colours}")


def size_range(height: int, width: int) -> tuple[int, int]:
    """Integer shape sizes sampled for a frame: 3/16 to 5/16 of the shorter side (12-20 at 64)."""
    side = min(height, width)
    return max(3, round(side * 3 / 16)), max(3, round(side * 5 / 16))


def max_speed(height: int, width: int) -> int:
    """Largest |velocity component| sampled, pixels per frame (2 at 64x64)."""
    return max(1, round(min(height, width) / 32))


def _fold(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Position on a line with reflecting walls at lo and hi (triangle wave of the free path)."""
    span = hi - lo
    if span <= 0:
        return np.full_like(p, lo)
    u = np.mod(p - lo, 2 * span)
    return lo + np.where(u <= span, u, 2 * span - u)


def trajectory(shape: ShapeSpec, frames: int, height: int, width: int) -> np.ndarray:
    """Bounding-box centres (frames, 2) as (x, y): constant velocity, reflected at the walls.

    Closed form (no step-by-step integration), so frame t costs the same for any t and
    never drifts; the box stays inside [0, width] x [0, height].
    """
    if shape.size > min(height, width):
        raise ValueError(f"shape size {shape.size} does not fit a {height}x{width} frame")
    t = np.arange(frames, dtype=np.float64)
    half = shape.size / 2
    x = _fold(shape.position[0] + shape.velocity[0] * t, half, width - half)
    y = _fold(shape.position[1] + shape.velocity[1] * t, half, height - half)
    return np.stack([x, y], axis=-1)  # (T, 2)


def shape_mask(kind: str, size: float, cx: np.ndarray, cy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean masks (T, H, W) of one shape centred at (cx[t], cy[t]), sampled at pixel centres."""
    xs = np.arange(width, dtype=np.float64) + 0.5
    ys = np.arange(height, dtype=np.float64) + 0.5
    dx = xs[None, None, :] - np.asarray(cx, dtype=np.float64)[:, None, None]  # (T, 1, W)
    dy = ys[None, :, None] - np.asarray(cy, dtype=np.float64)[:, None, None]  # (T, H, 1)
    half = size / 2
    if kind == "circle":
        return dx * dx + dy * dy <= half * half
    if kind == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if kind == "triangle":
        depth = dy + half  # distance below the apex
        return (depth >= 0) & (depth <= size) & (np.abs(dx) <= depth / 2)
    raise ValueError(f"unknown shape kind {kind!r}; use one of {list(KINDS)}")


def render(
    spec: VideoSpec, frames: int = DEFAULT_FRAMES, height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH
) -> np.ndarray:
    """Draw a video as uint8 (T, H, W, 3); later shapes are drawn over earlier ones."""
    if frames < 1 or height < 1 or width < 1:
        raise ValueError(f"frames, height and width must be >= 1, got {frames}, {height}, {width}")
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    video[...] = BACKGROUND_RGB
    for shape in spec.shapes:
        centres = trajectory(shape, frames, height, width)
        mask = shape_mask(shape.kind, shape.size, centres[:, 0], centres[:, 1], height, width)
        video[mask] = COLOUR_RGB[shape.colour]
    return video


def _boxes_apart(a: np.ndarray, b: np.ndarray, size_a: float, size_b: float, gap: float) -> bool:
    """Whether two bounding-box centre tracks (T, 2) keep at least `gap` pixels apart on every frame."""
    reach = (size_a + size_b) / 2 + gap
    apart = (np.abs(a - b) >= reach).any(axis=-1)  # separated along x or y
    return bool(apart.all())


def sample_spec(
    rng: np.random.Generator,
    frames: int = DEFAULT_FRAMES,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    max_shapes: int = MAX_SHAPES,
) -> VideoSpec:
    """Draw a random video: 1..max_shapes shapes, distinct colours, no overlap for `frames` frames.

    Sizes, bounding-box corners and velocities are integers, so renders are pixel exact.
    Shapes are placed one by one; a draw that would come within MIN_GAP pixels of an earlier
    shape is redrawn, and after 100 failed draws that shape is left out (the first always
    fits), so the function always returns and is deterministic given `rng`.
    """
    if not 1 <= max_shapes <= len(COLOURS):
        raise ValueError(f"max_shapes must be in 1..{len(COLOURS)}, got {max_shapes}")
    lo, hi = size_range(height, width)
    if hi > min(height, width):
        raise ValueError(f"frame {height}x{width} is too small for shapes of size up to {hi}")
    vmax = max_speed(height, width)
    count = int(rng.integers(1, max_shapes + 1))
    colours = rng.choice(len(COLOURS), size=count, replace=False)
    shapes: list[ShapeSpec] = []
    tracks: list[np.ndarray] = []
    for c in colours:
        for _ in range(100):
            size = int(rng.integers(lo, hi + 1))
            x0 = int(rng.integers(0, width - size + 1))
            y0 = int(rng.integers(0, height - size + 1))
            vx, vy = 0, 0
            while not (vx or vy):
                vx, vy = (int(v) for v in rng.integers(-vmax, vmax + 1, size=2))
            shape = ShapeSpec(
                colour=COLOURS[c],
                kind=KINDS[int(rng.integers(len(KINDS)))],
                size=float(size),
                position=(x0 + size / 2, y0 + size / 2),
                velocity=(float(vx), float(vy)),
            )
            track = trajectory(shape, frames, height, width)
            if all(_boxes_apart(track, t, size, s.size, MIN_GAP) for t, s in zip(tracks, shapes)):
                shapes.append(shape)
                tracks.append(track)
                break
    return VideoSpec(tuple(shapes))


def caption(spec: VideoSpec) -> str:
    """The caption of a video: "a red circle", "a red circle and a blue square", "A, B and C"."""
    return caption_of_pairs([(s.colour, s.kind) for s in spec.shapes])


def caption_of_pairs(pairs: list[tuple[str, str]]) -> str:
    """The caption naming these (colour, kind) pairs in order, in the grammar `caption` writes."""
    items = [f"a {colour} {kind}" for colour, kind in pairs]
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def parse_caption(text: str) -> list[tuple[str, str]]:
    """Inverse of `caption`: the (colour, kind) pairs, in order. Case and extra spaces are ignored.

    Raises ValueError (saying what the grammar accepts) for anything else.
    """
    if not isinstance(text, str):
        raise ValueError(f"caption must be a string, got {type(text).__name__}; {_GRAMMAR}")
    normal = re.sub(r"\s+", " ", text.strip().lower())
    normal = re.sub(r"\s*,\s*", ", ", normal)
    items = re.split(r", | and ", normal)
    pairs = []
    for item in items:
        words = item.split(" ")
        if len(words) != 3 or words[0] != "a" or words[1] not in COLOUR_RGB or words[2] not in KINDS:
            raise ValueError(f"cannot parse {item!r} in caption {text!r}: {_GRAMMAR}")
        pairs.append((words[1], words[2]))
    if caption_of_pairs(pairs) != normal:  # joiners in the wrong places
        raise ValueError(f"caption {text!r} is not joined as the grammar says: {_GRAMMAR}")
    colours = [c for c, _ in pairs]
    if len(set(colours)) != len(colours):
        raise ValueError(f"caption {text!r} repeats a colour: {_GRAMMAR}")
    return pairs


def tokenize_caption(text: str) -> list[str]:
    """Tokens of a caption, all from CAPTION_VOCAB (validated by `parse_caption` first)."""
    parse_caption(text)
    normal = re.sub(r"\s+", " ", text.strip().lower())
    return re.sub(r"\s*,\s*", " , ", normal).split()


def render_video(
    seed: int,
    index: int,
    frames: int = DEFAULT_FRAMES,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    max_shapes: int = MAX_SHAPES,
) -> tuple[np.ndarray, str]:
    """Video `index` of stream `seed` and its caption: the domain's ground truth, drawn (not generated).

    Random access, so loaders can shard by index. (`asd_core.sampler.sample_video` is the
    causal model's sampler; this one renders a known spec.)
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng([seed, index])
    spec = sample_spec(rng, frames, height, width, max_shapes)
    return render(spec, frames, height, width), caption(spec)


def sample_video_spec(
    seed: int,
    index: int,
    frames: int = DEFAULT_FRAMES,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    max_shapes: int = MAX_SHAPES,
) -> VideoSpec:
    """The spec behind `render_video(seed, index, ...)`."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    return sample_spec(np.random.default_rng([seed, index]), frames, height, width, max_shapes)


def video_stream(
    seed: int,
    frames: int = DEFAULT_FRAMES,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    max_shapes: int = MAX_SHAPES,
    start: int = 0,
) -> Iterator[tuple[np.ndarray, str]]:
    """Endless (video (T, H, W, 3) uint8, caption) pairs; the same seed gives the same stream."""
    index = start
    while True:
        yield render_video(seed, index, frames, height, width, max_shapes)
        index += 1


def make_batch(
    seed: int,
    n: int,
    frames: int = DEFAULT_FRAMES,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    max_shapes: int = MAX_SHAPES,
    start: int = 0,
) -> tuple[np.ndarray, list[str]]:
    """The first n videos of `video_stream(seed, ...)` from `start`: (n, T, H, W, 3) uint8 and captions."""
    if n < 1:
        raise ValueError(f"batch size n must be >= 1, got {n}")
    pairs = [render_video(seed, start + i, frames, height, width, max_shapes) for i in range(n)]
    return np.stack([v for v, _ in pairs]), [c for _, c in pairs]
