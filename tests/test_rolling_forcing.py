"""Rolling Forcing's sampler beyond the reference's recorded case (that one is
tests/test_reference_rolling_forcing.py): FFE plans, short videos, CFG, seeds, bad input.

The independent check of the FFE path: with a one-step window and an attention span longer than
the video, the anchor never moves and every pass sees all earlier frames, which is exactly Self
Forcing's chunk loop (`asd_core.sampler`, itself tested against a recompute-everything
reference and Self Forcing's own pipeline); both draw their noise in the same order.
"""

import pytest
import torch

from asd_core.config import tiny_config
from asd_core.model import CausalWanTransformer
from asd_core.rolling_forcing import generate_rolling_latents, sample_rolling_video
from asd_core.sampler import SamplingCancelled, generate_latents
from asd_core.schedule import parse_plan

H = W = 4
CHUNK = 2
FRAMES = 8  # 4 chunks


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CausalWanTransformer(tiny_config(chunk_frames=CHUNK)).eval()


@pytest.fixture(scope="module")
def context(model):
    return torch.randn(1, 5, model.config.text_dim, generator=torch.Generator().manual_seed(7))


def rolling(model, context, plan, **kwargs):
    kwargs.setdefault("num_frames", FRAMES)
    kwargs.setdefault("seeds", [3, 4])
    return generate_rolling_latents(model, plan=parse_plan(plan), context=context, latent_height=H,
                                    latent_width=W, **kwargs)


def relative_difference(ours, reference):
    return float((ours - reference).abs().max() / reference.abs().max())


@pytest.mark.parametrize("plan", ["1*", "1", "first=1000,500;rest=1000"])
def test_one_step_window_with_unbounded_span_is_self_forcing(model, context, plan, one_torch_thread):
    ours = rolling(model, context, plan, attention_frames=FRAMES + CHUNK)
    self_forcing = generate_latents(model, plan=parse_plan(plan), context=context, num_frames=FRAMES,
                                    latent_height=H, latent_width=W, seeds=[3, 4])
    assert relative_difference(ours, self_forcing) < 1e-5


def test_bounded_span_moves_the_anchor_and_differs_from_self_forcing(model, context, one_torch_thread):
    """Negative check of the test above: a 2-chunk span re-indexes the anchor and drops frames."""
    ours = rolling(model, context, "1*", attention_frames=2 * CHUNK)
    self_forcing = generate_latents(model, plan=parse_plan("1*"), context=context, num_frames=FRAMES,
                                    latent_height=H, latent_width=W, seeds=[3, 4])
    assert relative_difference(ours[:, :, : 2 * CHUNK], self_forcing[:, :, : 2 * CHUNK]) < 1e-5
    assert relative_difference(ours[:, :, 2 * CHUNK :], self_forcing[:, :, 2 * CHUNK :]) > 1e-3


def test_every_chunk_takes_every_step_even_when_the_video_is_shorter_than_the_window(model, context,
                                                                                    one_torch_thread):
    """4 steps, 2 chunks: the window never fills; each frame still sees each timestep once."""
    plan = parse_plan("4")
    seen = {frame: [] for frame in range(2 * CHUNK)}
    calls, finished = [], []
    forward = model.forward

    def logged(x, timestep, text, **kwargs):
        if not kwargs["update_cache"]:
            for index, t in enumerate(timestep[0].tolist()):
                seen[kwargs["frame_offset"] + index].append(t)
        return forward(x, timestep, text, **kwargs)

    model.forward = logged
    try:
        chunks = list(sample_rolling_video(model, plan=plan, context=context, num_frames=2 * CHUNK, latent_height=H,
                                           latent_width=W, seeds=[1],
                                           callback=lambda p: (finished if p.finished_chunk is not None
                                                               else calls).append(p)))
    finally:
        del model.forward
    assert len(chunks) == 2 and all(c.shape == (1, 16, CHUNK, H, W) for c in chunks)
    assert all(torch.isfinite(c).all() for c in chunks)
    for frame, timesteps in seen.items():
        assert timesteps == pytest.approx(list(plan.rest)), f"frame {frame}"
    # windows 0-4 (5 passes) + one cache fill (chunk 0; the last chunk needs none)
    assert [p.call for p in calls] == list(range(1, 7)) and calls[-1].total_calls == 6
    assert [p.chunk for p in finished] == [0, 1]


def test_guidance_with_equal_prompts_is_the_unguided_video(model, context, one_torch_thread):
    plain = rolling(model, context, "2", seeds=[5])
    guided = rolling(model, context, "2", seeds=[5], negative_context=context, cfg_scale=3.0)
    assert relative_difference(guided, plain) < 1e-5


def test_a_sample_depends_on_its_seed_only(model, context, one_torch_thread):
    both = rolling(model, context, "2", seeds=[3, 4])
    alone = rolling(model, context, "2", seeds=[4])
    assert relative_difference(both[1:], alone) < 1e-5
    assert relative_difference(both[:1], alone) > 1e-2


def test_bad_requests_are_refused_with_a_message(model, context):
    with pytest.raises(ValueError, match="attention_frames must be at least two chunks"):
        rolling(model, context, "2", attention_frames=CHUNK)
    with pytest.raises(ValueError, match="multiple|chunk"):
        rolling(model, context, "2", num_frames=FRAMES + 1)


def test_cancel_stops_between_model_calls(model, context):
    with pytest.raises(SamplingCancelled):
        rolling(model, context, "2", should_cancel=lambda: True)
