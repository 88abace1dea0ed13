"""Parity with CausVid's own model and autoregressive inference pipeline, on recorded numbers.

tests/data/reference/causvid_io.safetensors was written by research/reference/record_causvid.py,
which ran the reference's own CausalWanModel, CausalWanDiffusionWrapper and InferencePipeline
(CausVid, commit in the file's metadata) on CPU in float32 with the tiny random model of
self_forcing_weights.safetensors: 3 blocks of 3 frames, batch 1, with its released step list
[1000, 757, 522] unwarped (configs/wan_causal_dmd.yaml) and with its 4-step list warped by
shift 8 (configs/wan_causal_dmd_warp_4step_cfg2.yaml). `sample_causvid_video` gets the same
weights, inputs and noise; outputs must agree to RELATIVE_TOLERANCE. Negative checks: the plain
`sample_video` (sigma = t / 1000, not the scheduler's grid sigma) and Self Forcing's shift 5.
"""

import pytest
import torch
from reference_io import (
    CLEARLY_DIFFERENT,
    DATA,
    RELATIVE_TOLERANCE,
    load_recording,
    relative_difference,
    tiny_reference_model,
    to_ours,
)

import asd_core.sampler as sampler_module
from asd_core.causvid import sample_causvid_video
from asd_core.families import BY_NAME
from asd_core.sampler import sample_video
from asd_core.schedule import parse_plan

RECORDED = DATA / "causvid_io.safetensors"
REFERENCE_COMMIT = "ca2115039172dfa3a02deee1534408a09680f29f"
CHUNK_FRAMES = 3
PLANS = {"released": BY_NAME["causvid"].plan, "warp_4step": "4;shift=8"}


@pytest.fixture(scope="module")
def recorded():
    return load_recording(RECORDED)


@pytest.fixture(scope="module")
def model(recorded):
    return tiny_reference_model(recorded[1], CHUNK_FRAMES)


class RecordedBlockNoise:
    """Stands in for `asd_core.sampler.draw_noise`: per block its starting noise, then its re-noise draws."""

    def __init__(self, tensors, config: str, steps: int):
        noise, renoise = tensors["noise"], list(tensors[f"renoise_{config}"].unbind(0))
        self.pending = []
        for block in range(noise.shape[1] // CHUNK_FRAMES):
            self.pending.append(to_ours(noise[:, block * CHUNK_FRAMES : (block + 1) * CHUNK_FRAMES]))
            self.pending.extend(to_ours(renoise.pop(0)) for _ in range(steps - 1))
        assert not renoise, "the plan does not take the recorded number of re-noise draws"

    def __call__(self, shape, generators):
        draw = self.pending.pop(0)
        assert tuple(draw.shape) == tuple(shape), f"asked for {tuple(shape)}, recorded {tuple(draw.shape)}"
        return draw.clone()


def sample_like_reference(model, tensors, monkeypatch, config: str, sampler, plan: str | None = None):
    step_plan = parse_plan(plan or PLANS[config])
    noise = RecordedBlockNoise(tensors, config, len(step_plan.rest))
    monkeypatch.setattr(sampler_module, "draw_noise", noise)
    _, _, frames, height, width = to_ours(tensors["noise"]).shape
    video = torch.cat(list(sampler(model, plan=step_plan, context=tensors["context"], num_frames=frames,
                                   latent_height=height, latent_width=width, seeds=[0])), dim=2)
    assert not noise.pending, f"{len(noise.pending)} recorded noise draws were not used"
    return video


def test_recorded_file_names_the_reference_and_our_plans(recorded):
    tensors, metadata = recorded
    assert metadata["reference.commit"] == REFERENCE_COMMIT
    for config, plan in PLANS.items():
        ours = torch.tensor(parse_plan(plan).rest, dtype=torch.float64)
        assert torch.allclose(ours, tensors[f"denoising_step_list_{config}"].double(), rtol=1e-6), config


@pytest.mark.parametrize("config", list(PLANS))
def test_causvid_sampling_matches_reference(recorded, model, config, monkeypatch, one_torch_thread):
    tensors, _ = recorded
    video = sample_like_reference(model, tensors, monkeypatch, config, sample_causvid_video)
    reference = to_ours(tensors[f"video_{config}"])
    for block in range(reference.shape[2] // CHUNK_FRAMES):
        frames = slice(block * CHUNK_FRAMES, (block + 1) * CHUNK_FRAMES)
        assert relative_difference(video[:, :, frames], reference[:, :, frames]) < RELATIVE_TOLERANCE, f"block {block}"


def test_sigma_from_the_timestep_differs(recorded, model, monkeypatch, one_torch_thread):
    """Negative check: sigma = 0.757 for 757 (not the scheduler's grid 0.75676) moves the output
    by 5e-4 to 8e-4 of its range, five times the tolerance and more."""
    tensors, _ = recorded
    video = sample_like_reference(model, tensors, monkeypatch, "released", sample_video)
    assert relative_difference(video, to_ours(tensors["video_released"])) > 5 * RELATIVE_TOLERANCE


def test_self_forcing_shift_differs(recorded, model, monkeypatch, one_torch_thread):
    """Negative check: the 4-step list warped by Self Forcing's shift 5 instead of CausVid's 8."""
    tensors, _ = recorded
    video = sample_like_reference(model, tensors, monkeypatch, "warp_4step", sample_causvid_video, plan="4")
    assert relative_difference(video, to_ours(tensors["video_warp_4step"])) > CLEARLY_DIFFERENT
