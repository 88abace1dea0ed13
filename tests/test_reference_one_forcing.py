"""Parity with One-Forcing's own model and inference pipeline, on recorded numbers.

tests/data/reference/one_forcing_io.safetensors was written by
research/reference/record_one_forcing.py, which ran the reference's own CausalWanModel and
CausalInferencePipeline (One-Forcing, commit in the file's metadata) on CPU in float32 with the
tiny random model of self_forcing_weights.safetensors and its released inference settings
(scripts/infer.sh): the first block 4 steps [1000, 750, 500, 250], every later block the one step
[1000], warped with shift 5; frame-wise (blocks of 1 frame) and chunk-wise (blocks of 3).
`sample_video` with the FFE plan `1*` and `chunk_frames` 1 or 3 gets the same weights, inputs and
noise; outputs must agree to RELATIVE_TOLERANCE. Negative checks: the plain one-step plan `1`,
and the first block's step list without the warp.
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
from asd_core.sampler import generate_latents
from asd_core.schedule import parse_plan

RECORDED = DATA / "one_forcing_io.safetensors"
REFERENCE_COMMIT = "ca345b35a87623e1c8b5af356a92f7412da816a3"
MODES = {"framewise": 1, "chunkwise": 3}
RELEASED_PLAN = "1*"  # first chunk 4 steps, later chunks 1 step, shift 5


@pytest.fixture(scope="module")
def recorded():
    return load_recording(RECORDED)


@pytest.fixture(scope="module")
def model(recorded):
    """Built with chunks of 3 frames; each mode passes its own `chunk_frames` to the sampler."""
    return tiny_reference_model(recorded[1], MODES["chunkwise"])


class RecordedBlockNoise:
    """Stands in for `asd_core.sampler.draw_noise`: per block its starting noise, then the
    recorded re-noise draws of the blocks that take more than one step (here the first)."""

    def __init__(self, tensors, mode: str, plan):
        noise, renoise = tensors["noise"], list(tensors[f"renoise_{mode}"].unbind(0))
        frames = MODES[mode]
        self.pending = []
        for block in range(noise.shape[1] // frames):
            self.pending.append(to_ours(noise[:, block * frames : (block + 1) * frames]))
            self.pending.extend(to_ours(renoise.pop(0)) for _ in plan.timesteps_for_chunk(block)[1:])
        assert not renoise, "the plan does not take the recorded number of re-noise draws"

    def __call__(self, shape, generators):
        draw = self.pending.pop(0)
        assert tuple(draw.shape) == tuple(shape), f"asked for {tuple(shape)}, recorded {tuple(draw.shape)}"
        return draw.clone()


def sample_like_reference(model, tensors, monkeypatch, mode: str, plan: str = RELEASED_PLAN, chunk_frames=None):
    step_plan = parse_plan(plan)
    noise = RecordedBlockNoise(tensors, mode, step_plan)
    monkeypatch.setattr(sampler_module, "draw_noise", noise)
    _, _, frames, height, width = to_ours(tensors["noise"]).shape
    video = generate_latents(model, plan=step_plan, context=tensors["context"], num_frames=frames,
                             latent_height=height, latent_width=width, seeds=[0, 1],
                             chunk_frames=chunk_frames or MODES[mode])
    assert not noise.pending, f"{len(noise.pending)} recorded noise draws were not used"
    return video


def test_recorded_file_names_the_reference_and_our_plan(recorded):
    tensors, metadata = recorded
    assert metadata["reference.commit"] == REFERENCE_COMMIT
    plan = parse_plan(RELEASED_PLAN)
    assert torch.allclose(torch.tensor(plan.first, dtype=torch.float64),
                          tensors["first_frame_denoising_step_list"].double(), rtol=1e-6)
    assert torch.allclose(torch.tensor(plan.rest, dtype=torch.float64),
                          tensors["denoising_step_list"].double(), rtol=1e-6)


@pytest.mark.parametrize("mode", list(MODES))
def test_ffe_sampling_matches_reference(recorded, model, mode, monkeypatch, one_torch_thread):
    tensors, _ = recorded
    video = sample_like_reference(model, tensors, monkeypatch, mode)
    reference = to_ours(tensors[f"video_{mode}"])
    frames = MODES[mode]
    for block in range(reference.shape[2] // frames):
        part = slice(block * frames, (block + 1) * frames)
        assert relative_difference(video[:, :, part], reference[:, :, part]) < RELATIVE_TOLERANCE, f"block {block}"


def test_one_step_first_chunk_differs(recorded, model, monkeypatch, one_torch_thread):
    """Negative check: without the first block's own 4-step list (plan `1`)."""
    tensors, _ = recorded
    tensors = {**tensors, "renoise_framewise": tensors["renoise_framewise"][:0]}  # one step: no re-noise draw
    video = sample_like_reference(model, tensors, monkeypatch, "framewise", plan="1")
    reference = to_ours(tensors["video_framewise"])
    assert relative_difference(video[:, :, :1], reference[:, :, :1]) > CLEARLY_DIFFERENT


def test_unwarped_first_chunk_differs(recorded, model, monkeypatch, one_torch_thread):
    """Negative check: the first block's list taken as it is written, without the shift-5 warp."""
    tensors, _ = recorded
    video = sample_like_reference(model, tensors, monkeypatch, "framewise",
                                  plan="first=1000,750,500,250;rest=1000;shift=1")
    reference = to_ours(tensors["video_framewise"])
    assert relative_difference(video[:, :, :1], reference[:, :, :1]) > CLEARLY_DIFFERENT
