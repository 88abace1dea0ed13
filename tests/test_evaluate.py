"""The toy evaluator judged on videos whose right answer is known: real, noise, frozen, shuffled..."""

import re
from collections import deque

import numpy as np
import pytest

from asd_core.toy.domain import (
    BACKGROUND_RGB,
    COLOUR_RGB,
    COLOURS,
    KINDS,
    ShapeSpec,
    VideoSpec,
    make_batch,
    parse_caption,
    render,
    size_range,
)
from asd_core.toy.fd import FEATURE_NAMES, ReferenceStats, frechet_distance, video_features
from asd_core.toy.measures import NO_SHAPE, classify_kind, find_blobs, label_blobs, segment
from asd_core.toy.profile import frame_profile
from asd_core.toy.scores import evaluate_videos, score_videos
from asd_core.toy.thresholds import THRESHOLDS, default_min_area

QUALITY = ("sharpness", "subject_consistency", "motion_smoothness", "flicker", "dynamic_degree")
SEMANTIC = ("colour", "object_class", "multiple_objects")


@pytest.fixture(scope="module")
def real():
    return make_batch(11, 24)


@pytest.fixture(scope="module")
def real_scores(real):
    return evaluate_videos(*real)


def _box_blur(videos):
    """3x3 box blur of (N, T, H, W, 3) uint8, edges replicated."""
    pad = np.pad(videos.astype(np.float32), ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = videos.shape[2:4]
    out = sum(pad[:, :, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9
    return np.round(out).astype(np.uint8)


def _swap_colours(text):
    """The same shapes named with colours the video does not contain."""
    pairs = parse_caption(text)
    unused = [c for c in COLOURS if c not in {c for c, _ in pairs}]
    items = [f"a {unused[i]} {kind}" for i, (_, kind) in enumerate(pairs)]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def test_real_videos_score_top(real_scores):
    for key in QUALITY + SEMANTIC + ("quality", "semantic", "total"):
        assert real_scores[key] == pytest.approx(1.0), key
    assert set(real_scores) >= {"quality", "semantic", "total", "fd"}
    assert all(isinstance(v, float) for v in real_scores.values())


def test_noise_scores_low(real):
    videos, captions = real
    noise = np.random.default_rng(0).integers(0, 256, videos.shape, dtype=np.uint8)
    s = evaluate_videos(noise, captions)
    assert s["quality"] < 0.3 and s["semantic"] == 0.0 and s["total"] < 0.3
    assert s["sharpness"] < 0.5 and s["motion_smoothness"] == 0.0


def test_frozen_videos_lose_motion_only(real, real_scores):
    videos, captions = real
    frozen = np.repeat(videos[:, :1], videos.shape[1], axis=1)
    s = evaluate_videos(frozen, captions)
    assert s["dynamic_degree"] == 0.0
    assert s["motion_smoothness"] == 1.0  # constant velocity zero: smooth, but not moving
    assert s["semantic"] == 1.0
    assert s["quality"] < real_scores["quality"] - 0.1
    assert s["fd"] > 5 * real_scores["fd"]


def test_empty_frames_counts_frames_without_any_shape(real, real_scores):
    """The collapse diagnostic: 0 for the domain, the blanked share of frames otherwise."""
    videos, captions = real
    assert real_scores["empty_frames"] == 0.0
    blanked = videos.copy()
    blanked[:, 8:] = BACKGROUND_RGB  # background from frame 8 on: 1 - 8/T of the frames are empty
    s = evaluate_videos(blanked, captions)
    assert s["empty_frames"] == pytest.approx(1 - 8 / videos.shape[1])
    noise = np.random.default_rng(0).integers(0, 256, videos.shape, dtype=np.uint8)
    assert evaluate_videos(noise, captions)["empty_frames"] > 0.9


def test_frame_profile_locates_where_a_video_goes_wrong(real):
    """Per range of frames: the domain is perfect everywhere; blanking the later frames shows there only."""
    videos, captions = real
    ranges = [(0, 8), (9, 20), (21, 32)]
    clean = frame_profile(videos, captions, ranges)
    assert clean == {"colour": [1.0] * 3, "multiple_objects": [1.0] * 3, "empty_frames": [0.0] * 3,
                     "sharpness": [1.0] * 3}
    blanked = videos.copy()
    blanked[:, 21:] = BACKGROUND_RGB
    profile = frame_profile(blanked, captions, ranges)
    assert profile["empty_frames"] == [0.0, 0.0, 1.0] and profile["colour"] == [1.0, 1.0, 0.0]
    wrong = frame_profile(videos, [_swap_colours(c) for c in captions], ranges)
    assert wrong["colour"] == [0.0] * 3 and wrong["empty_frames"] == [0.0] * 3
    with pytest.raises(ValueError, match="outside the videos' 33 frames"):
        frame_profile(videos, captions, [(21, 33)])


def test_shuffled_frames_lose_temporal_consistency(real):
    videos, captions = real
    rng = np.random.default_rng(1)
    shuffled = np.stack([v[rng.permutation(len(v))] for v in videos])
    s = evaluate_videos(shuffled, captions)
    assert s["motion_smoothness"] < 0.4
    assert s["semantic"] == 1.0  # every frame is still a correct frame


def test_blur_loses_sharpness(real, real_scores):
    videos, captions = real
    s = evaluate_videos(_box_blur(videos), captions)
    assert s["sharpness"] < 0.8
    assert s["quality"] < real_scores["quality"] - 0.04
    assert s["colour"] == 1.0  # blurred shapes are still found


def test_brightness_flicker_loses_flicker_score(real):
    videos, captions = real
    flickering = videos.copy()
    flickering[:, 1::2] = np.clip(videos[:, 1::2].astype(np.int16) + 30, 0, 255).astype(np.uint8)
    s = evaluate_videos(flickering, captions)
    assert s["flicker"] < 0.6
    assert s["semantic"] == 1.0 and s["motion_smoothness"] == 1.0  # still the same, well-found shapes


def test_wrong_captions_lose_semantic_but_not_quality(real, real_scores):
    videos, captions = real
    s = evaluate_videos(videos, [_swap_colours(c) for c in captions])
    assert s["semantic"] == 0.0 and s["colour"] == 0.0
    assert s["quality"] == real_scores["quality"]  # quality reads no caption
    swap = {"circle": "square", "square": "circle"}
    wrong_kinds = [re.sub("circle|square", lambda m: swap[m.group()], c) for c in captions]
    s = evaluate_videos(videos, wrong_kinds)
    assert s["colour"] == 1.0 and s["object_class"] < 0.8


def test_missing_and_extra_shapes_lose_count():
    shape = ShapeSpec("red", "square", 14.0, (20.0, 20.0), (1.0, 1.0))
    other = ShapeSpec("cyan", "circle", 14.0, (46.0, 46.0), (-1.0, -1.0))
    video = render(VideoSpec([shape, other]), 9)[None]
    s = score_videos(video, ["a red square"])  # cyan is extra
    assert s["colour"][0] == 1.0 and s["multiple_objects"][0] == 0.0
    s = score_videos(video, ["a red square, a cyan circle and a blue triangle"])  # blue is missing
    assert s["colour"][0] == pytest.approx(2 / 3) and s["multiple_objects"][0] == 0.0


def test_direction_change_away_from_walls_is_not_smooth():
    """A bounce is excused only at a wall: turning around mid-frame breaks constant velocity."""
    shape = ShapeSpec("yellow", "circle", 12.0, (20.0, 30.0), (1.0, 0.0))
    ahead = render(VideoSpec([shape]), 12)
    video = np.concatenate([ahead, ahead[::-1][1:]])[None]  # right for 11 frames, then back
    s = score_videos(video, ["a yellow circle"])
    assert s["motion_smoothness"][0] < 1.0
    assert s["motion_smoothness"][0] > 0.9  # only the turning frame fails
    long = render(VideoSpec([ShapeSpec("yellow", "circle", 12.0, (20.0, 30.0), (2.0, 1.0))]), 300)[None]
    assert score_videos(long, ["a yellow circle"])["motion_smoothness"][0] == 1.0  # many wall bounces


def test_fd_separates_real_from_noise(real, real_scores):
    videos, _ = real
    other, _ = make_batch(12, 24)
    noise = np.random.default_rng(2).integers(0, 256, videos.shape, dtype=np.uint8)
    ref = ReferenceStats.from_features(video_features(other))
    fd_real = ref.distance(video_features(videos))
    fd_noise = ref.distance(video_features(noise))
    assert fd_real < 10 and real_scores["fd"] < 10
    assert fd_noise > 100 * max(fd_real, real_scores["fd"])
    assert evaluate_videos(videos[:4], real[1][:4], reference=other)["fd"] == pytest.approx(
        ref.distance(video_features(videos[:4]))
    )
    assert np.isnan(evaluate_videos(videos[:1], real[1][:1])["fd"])
    assert video_features(videos).shape == (24, len(FEATURE_NAMES))


def test_scores_are_deterministic(real):
    videos, captions = real
    a = evaluate_videos(videos[:6], captions[:6])
    b = evaluate_videos(videos[:6].copy(), list(captions[:6]))
    assert a == b


def test_frechet_distance_matches_independent_formulas():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    # tr sqrt(S1 S2) = sum of square roots of the (real, positive) eigenvalues of S1 S2
    trace_root = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_root
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    # commuting (diagonal) covariances: sum (sqrt(a) - sqrt(b))^2
    d1, d2 = rng.uniform(0.1, 2, 6), rng.uniform(0.1, 2, 6)
    closed = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(d1) - np.sqrt(d2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(closed, rel=1e-10)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-7)


def _flood_fill_labels(classes):
    """Independent reference: breadth-first flood fill, pixel by pixel; labels are arbitrary ids."""
    labels = -np.ones(classes.shape, dtype=np.int64)
    next_id = 0
    T, H, W = classes.shape
    for t in range(T):
        for i in range(H):
            for j in range(W):
                if classes[t, i, j] <= 0 or labels[t, i, j] >= 0:
                    continue
                labels[t, i, j] = next_id
                queue = deque([(i, j)])
                while queue:
                    y, x = queue.popleft()
                    for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                        if 0 <= yy < H and 0 <= xx < W and labels[t, yy, xx] < 0:
                            if classes[t, yy, xx] == classes[t, i, j]:
                                labels[t, yy, xx] = next_id
                                queue.append((yy, xx))
                next_id += 1
    return labels


@pytest.mark.parametrize("density", [0.3, 0.6, 0.9])
def test_label_blobs_matches_flood_fill(density):
    rng = np.random.default_rng(int(density * 10))
    fg = rng.random((3, 20, 24)) < density
    colour, other = rng.integers(1, 3, size=fg.shape), rng.integers(-1, 1, size=fg.shape)
    classes = np.where(fg, colour, other).astype(np.int8)
    got, ref = label_blobs(classes), _flood_fill_labels(classes)
    assert np.array_equal(got < 0, ref < 0)
    pairs = set(zip(got[got >= 0].tolist(), ref[ref >= 0].tolist()))
    assert len(pairs) == len(np.unique(got[got >= 0])) == len(np.unique(ref[ref >= 0]))  # a bijection


def test_segment_matches_brute_force_nearest_colour():
    refs = np.array([BACKGROUND_RGB] + [COLOUR_RGB[c] for c in COLOURS], dtype=np.float64)
    pixels = np.random.default_rng(4).integers(0, 256, size=(5000, 3), dtype=np.uint8)
    near = refs[None] + np.random.default_rng(5).normal(0, 25, size=(500, 1, 3))  # near every colour
    pixels = np.concatenate([pixels, np.clip(near, 0, 255).astype(np.uint8).reshape(-1, 3)])
    dist = np.linalg.norm(pixels[:, None, :].astype(np.float64) - refs[None], axis=-1)
    expected = np.where(dist.min(-1) <= THRESHOLDS.assign_radius, dist.argmin(-1), -1)
    assert np.array_equal(segment(pixels[None]).reshape(-1), expected)
    assert (expected >= 0).mean() > 0.3


@pytest.mark.parametrize("kind", KINDS)
def test_every_rendered_shape_is_classified_right(kind):
    lo, hi = size_range(64, 64)
    for size in range(lo, hi + 1):
        for x0, y0 in ((0, 0), (17, 5), (64 - size, 64 - size)):
            shape = ShapeSpec("magenta", kind, float(size), (x0 + size / 2, y0 + size / 2), (1.0, 0.0))
            blobs = find_blobs(segment(render(VideoSpec([shape]), 1)), min_area=16)
            assert len(blobs["kind"]) == 1
            assert KINDS[blobs["kind"][0]] == kind, (kind, size, x0, y0)


def test_blob_kinds_change_at_the_named_thresholds():
    """classify_kind reads Thresholds: a blob just either side of each bound lands on that bound's side."""
    t, eps = THRESHOLDS, 0.005

    def kinds(area, width, height, cy):
        n = len(area)
        got = classify_kind(np.array(area, float), np.full(n, width, float), np.array(height, float) + np.zeros(n),
                            np.array(cy, float) + np.zeros(n), np.full(n, height / 2, float))
        return [None if k == NO_SHAPE else KINDS[k] for k in got]

    fills = [t.square_fill + eps, t.square_fill - eps, t.circle_fill + eps]
    assert kinds([100 * f for f in fills], 10, 10, 5.0) == ["square", "circle", "circle"]
    low = 100 * (t.circle_fill - eps)  # too little fill for a circle: a triangle only if its centroid is low
    assert kinds([low, low], 10, 10, [5 + 10 * (t.triangle_drop + eps), 5 + 10 * (t.triangle_drop - eps)]) == [
        "triangle", None]
    wide, too_wide = 10 * t.max_aspect, 10 * t.max_aspect + 1  # a full box, so the aspect decides
    assert kinds([wide * 10], wide, 10, 5.0) == ["square"] and kinds([too_wide * 10], too_wide, 10, 5.0) == [None]
    tall, too_tall = 10 / t.min_aspect, 10 / t.min_aspect + 1
    assert kinds([tall * 10], 10, tall, tall / 2) == ["square"]
    assert kinds([too_tall * 10], 10, too_tall, too_tall / 2) == [None]
    assert default_min_area(64, 64) == t.min_area_64 and default_min_area(128, 128) == 4 * t.min_area_64
    assert default_min_area(16, 16) == t.min_area_floor


def test_bad_input_raises_clear_errors(real):
    videos, captions = real
    with pytest.raises(ValueError, match="uint8"):
        evaluate_videos(videos[:2].astype(np.float32) / 255, captions[:2])
    with pytest.raises(ValueError, match=r"video\[None\]"):
        evaluate_videos(videos[0], captions[:1])
    with pytest.raises(ValueError, match="one caption per video"):
        evaluate_videos(videos, captions[:3])
    with pytest.raises(ValueError, match="captions are"):
        evaluate_videos(videos[:1], ["a dog"])
    with pytest.raises(ValueError, match="at least 3 frames"):
        evaluate_videos(videos[:, :2], captions)
    with pytest.raises(ValueError, match="numpy uint8 array"):
        evaluate_videos([[0, 0, 0]], captions[:1])
