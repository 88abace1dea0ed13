"""Parity with Reward Forcing's own model (EMA-Sink) and inference pipeline, on recorded numbers.

tests/data/reference/reward_forcing_io.safetensors was written by
research/reference/record_reward_forcing.py, which ran the reference's own CausalWanModel and
CausalInferencePipeline (Reward Forcing, commit in the file's metadata) on CPU in float32 with
the tiny random model of self_forcing_weights.safetensors: a 9-frame window with a 3-frame
EMA sink, 5 chunks of 3 frames (chunks 3 and 4 evict into the sink), 4 steps, alpha 0.999 (the
reference's) and 0.5. `sample_ema_sink_video` (Self Forcing's chunk loop with `EmaSinkCache`)
gets the same weights, inputs and noise; outputs must agree to RELATIVE_TOLERANCE. Negative
checks: Self Forcing's rolling cache (fixed sink at its first positions) and a wrong alpha.
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
from test_reference_self_forcing import RecordedNoise

import asd_core.sampler as sampler_module
from asd_core.ema_sink import sample_ema_sink_video
from asd_core.sampler import generate_latents
from asd_core.schedule import parse_plan

RECORDED = DATA / "reward_forcing_io.safetensors"
REFERENCE_COMMIT = "4317f5a0d29d1cee6a0f2e80ed5f5724bee97c66"
CHUNK_FRAMES = 3


@pytest.fixture(scope="module")
def recorded():
    return load_recording(RECORDED)


@pytest.fixture(scope="module")
def model(recorded):
    return tiny_reference_model(recorded[1], CHUNK_FRAMES)


def sample_like_reference(model, tensors, monkeypatch, sampler, **kwargs):
    noise = RecordedNoise(tensors)
    monkeypatch.setattr(sampler_module, "draw_noise", noise)
    _, _, frames, height, width = to_ours(tensors["noise"]).shape
    chunks = sampler(model, plan=parse_plan("4"), context=tensors["context"], num_frames=frames,
                     latent_height=height, latent_width=width, seeds=[0, 1], **kwargs)
    video = chunks if isinstance(chunks, torch.Tensor) else torch.cat(list(chunks), dim=2)
    assert not noise.pending, f"{len(noise.pending)} recorded noise draws were not used"
    return video


def test_recorded_file_names_the_reference(recorded):
    tensors, metadata = recorded
    assert metadata["reference.commit"] == REFERENCE_COMMIT
    ours = torch.tensor(parse_plan("4").rest, dtype=torch.float64)
    assert torch.allclose(ours, tensors["denoising_step_list"].double(), rtol=1e-6)


@pytest.mark.parametrize("alpha", [0.999, 0.5])
def test_ema_sink_video_matches_reference(recorded, model, alpha, monkeypatch, one_torch_thread):
    tensors, metadata = recorded
    video = sample_like_reference(model, tensors, monkeypatch, sample_ema_sink_video, alpha=alpha,
                                  window_frames=int(metadata["window_frames"]),
                                  sink_frames=int(metadata["sink_frames"]))
    reference = to_ours(tensors[f"video_alpha_{alpha}"])
    for chunk in range(reference.shape[2] // CHUNK_FRAMES):
        frames = slice(chunk * CHUNK_FRAMES, (chunk + 1) * CHUNK_FRAMES)
        assert relative_difference(video[:, :, frames], reference[:, :, frames]) < RELATIVE_TOLERANCE, f"chunk {chunk}"


def test_self_forcing_rolling_cache_differs(recorded, model, monkeypatch, one_torch_thread):
    """Negative check: a fixed sink at frames 0-2 (Self Forcing's rolling cache) after eviction."""
    tensors, metadata = recorded
    window, sink = int(metadata["window_frames"]), int(metadata["sink_frames"])
    video = sample_like_reference(model, tensors, monkeypatch, generate_latents, max_cache_frames=window,
                                  sink_frames=sink)
    reference = to_ours(tensors["video_alpha_0.999"])
    assert relative_difference(video[:, :, :window], reference[:, :, :window]) < RELATIVE_TOLERANCE
    assert relative_difference(video[:, :, window:], reference[:, :, window:]) > CLEARLY_DIFFERENT


def test_wrong_alpha_differs(recorded, model, monkeypatch, one_torch_thread):
    tensors, metadata = recorded
    video = sample_like_reference(model, tensors, monkeypatch, sample_ema_sink_video, alpha=0.999,
                                  window_frames=int(metadata["window_frames"]),
                                  sink_frames=int(metadata["sink_frames"]))
    reference = to_ours(tensors["video_alpha_0.5"])
    assert relative_difference(video[:, :, -CHUNK_FRAMES:], reference[:, :, -CHUNK_FRAMES:]) > CLEARLY_DIFFERENT
