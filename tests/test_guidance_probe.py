"""The guidance probe's schedule (docs/results.md, "Where the quality goes", item 5): it must
guide each call with the scale its noise level names, through the product's own sampler."""

import pytest
import torch

from asd_core.config import tiny_config
from asd_core.model import CausalWanTransformer
from asd_core.sampler import sample_video
from asd_core.schedule import parse_plan, sigma_to_timestep
from research.guidance_probe import ScheduledGuidance

H = W = 8


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CausalWanTransformer(tiny_config(chunk_frames=2)).eval()


def texts(model):
    g = torch.Generator().manual_seed(3)
    return torch.randn(1, 5, model.config.text_dim, generator=g), torch.randn(1, 5, model.config.text_dim, generator=g)


def video(model, cfg_scale, plan="4"):
    context, negative = texts(model)
    chunks = sample_video(model, plan=parse_plan(plan), context=context, negative_context=negative,
                          cfg_scale=cfg_scale, num_frames=4, latent_height=H, latent_width=W, seeds=[1, 2])
    return torch.cat(list(chunks), dim=2)


def test_one_scale_at_every_noise_level_is_plain_guidance(model):
    wrapped = ScheduledGuidance(model, base=2.0, high=3.0, low=3.0, threshold=0.75)
    torch.testing.assert_close(video(wrapped, 2.0), video(model, 3.0))


def test_each_call_is_guided_with_the_scale_of_its_noise_level():
    def fake(x, timestep, context, **kwargs):
        return torch.cat([torch.full_like(x[:1], 5.0), torch.full_like(x[:1], 1.0)])  # cond 5, uncond 1

    wrapped = ScheduledGuidance(fake, base=2.0, high=4.0, low=1.5, threshold=0.75)
    x = torch.zeros(2, 1, 1, 1, 1)
    for sigma, scale in ((0.9, 4.0), (0.5, 1.5)):
        cond, uncond = wrapped(x, sigma_to_timestep(sigma), None).chunk(2)
        # what the sampler computes from the two halves with its own scale, 2
        assert (uncond + 2.0 * (cond - uncond)).item() == pytest.approx(1.0 + scale * 4.0)
