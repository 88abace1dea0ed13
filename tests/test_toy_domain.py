"""Toy video domain: determinism, exact rendering, bouncing, caption grammar."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asd_core.toy.domain import (
    BACKGROUND_RGB,
    CAPTION_VOCAB,
    COLOUR_RGB,
    COLOURS,
    KINDS,
    MIN_GAP,
    ShapeSpec,
    VideoSpec,
    caption,
    make_batch,
    parse_caption,
    render,
    render_video,
    sample_video_spec,
    size_range,
    tokenize_caption,
    trajectory,
    video_stream,
)

T, H, W = 33, 64, 64


def test_same_seed_same_videos_and_stream_matches_batch():
    videos, captions = make_batch(7, 4)
    again, captions_again = make_batch(7, 4)
    assert videos.shape == (4, T, H, W, 3) and videos.dtype == np.uint8
    assert np.array_equal(videos, again) and captions == captions_again
    stream = video_stream(7)
    for i in range(4):
        video, text = next(stream)
        assert np.array_equal(video, videos[i]) and text == captions[i]
    video, text = render_video(7, 2)  # random access
    assert np.array_equal(video, videos[2]) and text == captions[2]
    other, _ = make_batch(8, 4)
    assert not np.array_equal(other, videos)


def test_the_toy_package_has_no_second_sample_video():
    """asd_core.sample_video is the causal sampler; the domain's ground truth is render_video."""
    import asd_core
    import asd_core.toy

    assert not hasattr(asd_core.toy, "sample_video") and not hasattr(asd_core.toy.domain, "sample_video")
    assert asd_core.sample_video.__module__ == "asd_core.sampler"


def test_pixels_are_exactly_background_or_palette():
    videos, _ = make_batch(3, 8)
    allowed = {BACKGROUND_RGB, *COLOUR_RGB.values()}
    seen = {tuple(int(c) for c in rgb) for rgb in np.unique(videos.reshape(-1, 3), axis=0)}
    assert seen <= allowed
    assert len(seen) > 2


def _reference_mask(kind, size, cx, cy):
    """Independent point-in-shape test, pixel by pixel (triangle by its three edge half-planes)."""
    mask = np.zeros((H, W), dtype=bool)
    half = size / 2
    apex, left, right = (cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)

    def side(p, q, x, y):  # cross product (q - p) x (point - p)
        return (q[0] - p[0]) * (y - p[1]) - (q[1] - p[1]) * (x - p[0])

    for i in range(H):
        for j in range(W):
            x, y = j + 0.5, i + 0.5
            if kind == "circle":
                inside = math.hypot(x - cx, y - cy) <= half
            elif kind == "square":
                inside = abs(x - cx) <= half and abs(y - cy) <= half
            else:  # clockwise in image coordinates (y down): inside is on the non-negative side
                edges = ((apex, right), (right, left), (left, apex))
                inside = all(side(p, q, x, y) >= 0 for p, q in edges)
            mask[i, j] = inside
    return mask


@pytest.mark.parametrize("kind", KINDS)
def test_render_matches_pixel_by_pixel_reference(kind):
    shape = ShapeSpec("red", kind, 13.0, (20.5, 30.5), (2.0, -1.0))
    video = render(VideoSpec([shape]), frames=3, height=H, width=W)
    centres = trajectory(shape, 3, H, W)
    for t in range(3):
        ref = _reference_mask(kind, 13.0, *centres[t])
        got = (video[t] == COLOUR_RGB["red"]).all(-1)
        assert np.array_equal(got, ref)


def test_trajectory_matches_step_by_step_bounce_simulation():
    shape = ShapeSpec("blue", "square", 15.0, (40.5, 9.5), (2.0, -2.0))
    got = trajectory(shape, 200, H, W)
    x0, y0 = 40.5 - 7.5, 9.5 - 7.5  # box corner
    vx, vy = 2, -2
    for t in range(200):
        assert got[t] == pytest.approx((x0 + 7.5, y0 + 7.5)), t
        x0, y0 = x0 + vx, y0 + vy
        if x0 < 0 or x0 > W - 15:  # reflect off the wall
            x0 = -x0 if x0 < 0 else 2 * (W - 15) - x0
            vx = -vx
        if y0 < 0 or y0 > H - 15:
            y0 = -y0 if y0 < 0 else 2 * (H - 15) - y0
            vy = -vy


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    size=st.floats(3, 30),
    pos=st.tuples(st.floats(-100, 200), st.floats(-100, 200)),
    vel=st.tuples(st.floats(-7, 7), st.floats(-7, 7)),
    frames=st.integers(1, 400),
)
def test_bouncing_keeps_shapes_inside_for_long_videos(kind, size, pos, vel, frames):
    shape = ShapeSpec("green", kind, size, pos, vel)
    centres = trajectory(shape, frames, H, W)
    assert (centres >= size / 2 - 1e-9).all()
    assert (centres[:, 0] <= W - size / 2 + 1e-9).all() and (centres[:, 1] <= H - size / 2 + 1e-9).all()
    steps = np.abs(np.diff(centres, axis=0))  # speed per axis never grows (reflection keeps it)
    assert (steps <= np.abs(vel) + 1e-6).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), index=st.integers(0, 10**6))
def test_sampled_videos_are_valid_and_never_occlude(seed, index):
    spec = sample_video_spec(seed, index)
    lo, hi = size_range(H, W)
    assert 1 <= len(spec.shapes) <= 3
    assert len({s.colour for s in spec.shapes}) == len(spec.shapes)
    for s in spec.shapes:
        assert lo <= s.size <= hi and s.velocity != (0.0, 0.0)
    video = render(spec, T * 4, H, W)  # 4x the sampled length: shapes may meet later, never before T
    for s in spec.shapes:
        area = (video[:T] == COLOUR_RGB[s.colour]).all(-1).sum(axis=(1, 2))
        assert (area == area[0]).all() and area[0] > 0  # fully visible every frame: no clipping, no overlap
    tracks = [trajectory(s, T, H, W) for s in spec.shapes]
    for i in range(len(tracks)):
        for j in range(i + 1, len(tracks)):
            reach = (spec.shapes[i].size + spec.shapes[j].size) / 2 + MIN_GAP
            assert (np.abs(tracks[i] - tracks[j]) >= reach).any(axis=-1).all()


def test_domain_covers_all_colours_kinds_and_counts():
    specs = [sample_video_spec(5, i) for i in range(150)]
    shapes = [s for spec in specs for s in spec.shapes]
    assert {s.colour for s in shapes} == set(COLOURS)
    assert {s.kind for s in shapes} == set(KINDS)
    assert {len(spec.shapes) for spec in specs} == {1, 2, 3}


def test_caption_examples():
    red = ShapeSpec("red", "circle", 12.0, (20.0, 20.0), (1.0, 0.0))
    blue = ShapeSpec("blue", "square", 12.0, (40.0, 40.0), (1.0, 0.0))
    green = ShapeSpec("green", "triangle", 12.0, (20.0, 50.0), (1.0, 0.0))
    assert caption(VideoSpec([red])) == "a red circle"
    assert caption(VideoSpec([red, blue])) == "a red circle and a blue square"
    assert caption(VideoSpec([red, blue, green])) == "a red circle, a blue square and a green triangle"
    assert parse_caption("  A Red circle ,a blue   square AND a green triangle ") == [
        ("red", "circle"),
        ("blue", "square"),
        ("green", "triangle"),
    ]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), index=st.integers(0, 10**6))
def test_caption_round_trip(seed, index):
    spec = sample_video_spec(seed, index)
    text = caption(spec)
    assert parse_caption(text) == [(s.colour, s.kind) for s in spec.shapes]
    tokens = tokenize_caption(text)
    assert set(tokens) <= set(CAPTION_VOCAB)
    assert " ".join(tokens).replace(" ,", ",") == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "red circle",
        "a purple circle",
        "a red hexagon",
        "a red circle, a blue square",
        "a red circle and a blue square and a green triangle",
        "a red circle, and a blue square",
        "a red circle and a red square",
        "a red circle.",
    ],
)
def test_parse_caption_rejects_text_outside_the_grammar(text):
    with pytest.raises(ValueError, match="captions are"):
        parse_caption(text)


def test_bad_specs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown colour"):
        ShapeSpec("purple", "circle", 10.0, (10.0, 10.0), (1.0, 0.0))
    with pytest.raises(ValueError, match="own colour"):
        VideoSpec([ShapeSpec("red", "circle", 10.0, (10.0, 10.0), (1.0, 0.0))] * 2)
    with pytest.raises(ValueError, match="does not fit"):
        render(VideoSpec([ShapeSpec("red", "circle", 80.0, (10.0, 10.0), (1.0, 0.0))]))
    with pytest.raises(ValueError, match="n must be"):
        make_batch(0, 0)
