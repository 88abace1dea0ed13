"""The binding measure of `research.quality_causes` on videos whose answer is known
(docs/results.md, "Where the quality goes", item 3)."""

import numpy as np
import pytest

from asd_core.toy.domain import KINDS, ShapeSpec, VideoSpec, caption, parse_caption, render
from research.quality_causes import BINDING_PAIRS, binding_shares, caption_of


def _video(colours: tuple[str, ...]) -> np.ndarray:
    shapes = [ShapeSpec(c, "square", 16.0, (12.0 + 36.0 * i, 32.0), (1.0, 0.0)) for i, c in enumerate(colours)]
    return render(VideoSpec(tuple(shapes)), frames=9)


def test_a_video_that_draws_its_caption_shows_every_named_colour_and_no_other():
    shares = binding_shares(np.stack([_video(("red", "blue"))]), [("red", "blue")])
    assert shares == pytest.approx({"named colour": 1.0, "all named at once": 1.0, "a colour not named": 0.0,
                                    "colours per frame": 2.0})


def test_a_blend_of_the_two_named_colours_counts_as_a_colour_not_named():
    # "a red circle and a blue square" drawn as red + magenta: the teacher's blend (docs/results.md)
    shares = binding_shares(np.stack([_video(("red", "magenta"))]), [("red", "blue")])
    assert shares["named colour"] == pytest.approx(0.5)
    assert shares["all named at once"] == 0.0
    assert shares["a colour not named"] == 1.0


def test_binding_captions_are_captions_of_the_domain():
    for colours in BINDING_PAIRS:
        assert [c for c, _ in parse_caption(caption_of(colours))] == list(colours)
    assert caption_of(("red",)) == "a red circle"
    three = caption_of(("red", "blue", "green"))
    assert parse_caption(three) == list(zip(("red", "blue", "green"), KINDS))
    assert three == caption(VideoSpec(tuple(ShapeSpec(c, k, 16.0, (12.0 + 20.0 * i, 32.0), (1.0, 0.0))
                                            for i, (c, k) in enumerate(zip(("red", "blue", "green"), KINDS)))))
