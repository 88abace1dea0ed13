"""Parity with Self Forcing's own model and inference pipeline, on recorded reference numbers.

tests/data/reference/self_forcing_*.safetensors were written by
research/reference/record_self_forcing.py, which ran the reference repository's own
CausalWanModel and CausalInferencePipeline (guandeh17/Self-Forcing, commit in the files'
metadata) on CPU in float32 at a tiny config with seeded random weights. Here the same weights
go through our loader (the Self Forcing key layout) and our model and sampler get the same
inputs and the same noise (full cache with context_noise 0 and 100, and a rolling cache of 6
frames with 0 or 3 sink frames); outputs must agree to RELATIVE_TOLERANCE (max abs difference /
max abs of the reference). The negative checks show the comparison can fail: without the
reference's 512-token text padding, or with a re-noised clean chunk for the cache fill.
"""

import json
from dataclasses import replace

import pytest
import reference_io
import torch
from reference_io import CLEARLY_DIFFERENT, DATA, RELATIVE_TOLERANCE, WEIGHTS, load_recording, relative_difference, to_ours
from safetensors import safe_open

import asd_core.sampler as sampler_module
from asd_core.checkpoint import load_model, read_checkpoint
from asd_core.config import CausalWanConfig
from asd_core.sampler import generate_latents
from asd_core.schedule import parse_plan

RECORDED = DATA / "self_forcing_io.safetensors"
REFERENCE_COMMIT = "33593df3e81fa3ec10239271dd2c100facac6de1"
CHUNK_FRAMES = 3


@pytest.fixture(scope="module")
def recorded():
    return load_recording(RECORDED)


@pytest.fixture(scope="module")
def reference_config(recorded) -> CausalWanConfig:
    """Our config for the reference's tiny model; tests read the checkpoint with it and vary it."""
    return reference_io.reference_config(recorded[1], CHUNK_FRAMES)


@pytest.fixture(scope="module")
def model(reference_config):
    return load_model(WEIGHTS, config=reference_config)


def test_recorded_files_name_the_reference_and_load_as_self_forcing(recorded, reference_config):
    _, metadata = recorded
    assert metadata["reference.commit"] == REFERENCE_COMMIT
    with safe_open(str(WEIGHTS), framework="pt") as f:
        assert f.metadata()["reference.commit"] == REFERENCE_COMMIT
    checkpoint = read_checkpoint(WEIGHTS, config=reference_config)
    assert checkpoint.layout == "self_forcing"  # the reference generator's own key names (`model.blocks.0.self_attn...`)
    assert reference_config.text_len == 512


def test_single_forward_matches_reference(recorded, model, one_torch_thread):
    tensors, _ = recorded
    x, t = to_ours(tensors["forward_x"]), float(tensors["forward_t"])
    reference = to_ours(tensors["forward_flow"])
    lengths = tensors["context_lengths"].tolist()
    with torch.no_grad():
        # both samples in one batch: the 12-token context zero-padded to 20, as a batch must be
        both = model(x, t, tensors["context"])
        # each sample alone with its own token count (12 and 20)
        alone = [model(x[i : i + 1], t, tensors["context"][i : i + 1, :length]) for i, length in enumerate(lengths)]
    assert relative_difference(both, reference) < RELATIVE_TOLERANCE
    for i, out in enumerate(alone):
        assert relative_difference(out, reference[i : i + 1]) < RELATIVE_TOLERANCE, f"sample {i} ({lengths[i]} tokens)"


def test_single_forward_without_text_padding_differs(recorded, reference_config, one_torch_thread):
    """Negative check: the same weights without the 512-token padding give another output."""
    tensors, _ = recorded
    unpadded = load_model(WEIGHTS, config=replace(reference_config, text_len=None))
    x, t = to_ours(tensors["forward_x"]), float(tensors["forward_t"])
    with torch.no_grad():
        out = unpadded(x[:1], t, tensors["context"][:1, :12])
    assert relative_difference(out, to_ours(tensors["forward_flow"])[:1]) > CLEARLY_DIFFERENT


class RecordedNoise:
    """Stands in for `asd_core.sampler.draw_noise`: serves the reference's noise in the order our
    sampler asks for it (per chunk: its starting noise, then one draw per re-noise step)."""

    def __init__(self, tensors):
        noise, renoise = tensors["noise"], tensors["renoise"]
        steps = renoise.shape[0] // (noise.shape[1] // CHUNK_FRAMES)
        self.pending = []
        for chunk in range(noise.shape[1] // CHUNK_FRAMES):
            self.pending.append(to_ours(noise[:, chunk * CHUNK_FRAMES : (chunk + 1) * CHUNK_FRAMES]))
            self.pending.extend(to_ours(renoise[chunk * steps + step]) for step in range(steps))

    def __call__(self, shape, generators):
        assert self.pending, "the sampler drew more noise than the reference pipeline did"
        draw = self.pending.pop(0)
        assert tuple(draw.shape) == tuple(shape), \
            f"sampler asked for {tuple(shape)}, the next recorded draw is {tuple(draw.shape)}"
        return draw.clone()


def sample_like_reference(model, tensors, context_noise, monkeypatch, **kwargs):
    noise = RecordedNoise(tensors)
    monkeypatch.setattr(sampler_module, "draw_noise", noise)
    _, _, frames, height, width = to_ours(tensors["noise"]).shape
    video = generate_latents(
        model, plan=parse_plan("4"), context=tensors["context"], num_frames=frames, latent_height=height,
        latent_width=width, seeds=list(range(tensors["noise"].shape[0])), context_noise=context_noise, **kwargs,
    )
    assert not noise.pending, f"{len(noise.pending)} recorded noise draws were not used"
    return video


def test_plan_4_is_the_reference_step_list(recorded):
    tensors, _ = recorded
    ours = torch.tensor(parse_plan("4").first, dtype=torch.float64)
    assert torch.allclose(ours, tensors["denoising_step_list"].double(), rtol=1e-6)


@pytest.mark.parametrize("context_noise", [0, 100])
def test_video_matches_reference(recorded, model, context_noise, monkeypatch, one_torch_thread):
    tensors, _ = recorded
    calls = []
    forward = model.forward

    def logged(x, timestep, context, **kwargs):
        calls.append((float(timestep), kwargs["frame_offset"]))
        return forward(x, timestep, context, **kwargs)

    monkeypatch.setattr(model, "forward", logged)
    video = sample_like_reference(model, tensors, context_noise, monkeypatch)
    reference = to_ours(tensors[f"video_context_noise_{context_noise}"])
    for chunk in range(reference.shape[2] // CHUNK_FRAMES):
        frames = slice(chunk * CHUNK_FRAMES, (chunk + 1) * CHUNK_FRAMES)
        assert relative_difference(video[:, :, frames], reference[:, :, frames]) < RELATIVE_TOLERANCE, f"chunk {chunk}"
    # the same model calls, in order (the reference also fills the cache after the last chunk)
    reference_calls = tensors[f"calls_context_noise_{context_noise}"][:-1]
    assert len(calls) == len(reference_calls)
    for (t, offset), (ref_t, ref_offset) in zip(calls, reference_calls.tolist()):
        assert offset == ref_offset and t == pytest.approx(ref_t, rel=1e-6)


@pytest.mark.parametrize("sink_frames", [0, 3])
def test_rolling_cache_matches_reference(recorded, model, sink_frames, monkeypatch, one_torch_thread):
    """The reference's rolling cache (local_attn_size=6 frames, sink_size 0 or 3) is our
    max_cache_frames=6 with sink_frames: the last chunk is generated after 3 frames are evicted."""
    tensors, metadata = recorded
    rolling = json.loads(metadata["rolling"])
    video = sample_like_reference(model, tensors, rolling["context_noise"], monkeypatch,
                                  max_cache_frames=rolling["local_attn_size"], sink_frames=sink_frames)
    window = rolling["local_attn_size"]
    full_cache = to_ours(tensors["video_context_noise_0"])
    assert relative_difference(video[:, :, :window], full_cache[:, :, :window]) < RELATIVE_TOLERANCE
    reference = to_ours(tensors[f"rolling_sink_{sink_frames}_last_chunk"])
    assert relative_difference(video[:, :, window:], reference) < RELATIVE_TOLERANCE
    assert relative_difference(full_cache[:, :, window:], reference) > CLEARLY_DIFFERENT  # eviction matters here


def test_video_with_renoised_cache_fill_differs(recorded, model, monkeypatch, one_torch_thread):
    """Negative check: re-noising the clean chunk before the cache fill (our sampler before
    issue 21, and Self Forcing's training rollout) is not what the reference samples."""
    tensors, _ = recorded
    context_noise = 100
    extra = torch.Generator().manual_seed(0)
    forward = model.forward

    def renoised_fill(x, timestep, context, **kwargs):
        if kwargs.get("update_cache"):
            sigma = context_noise / 1000
            x = (1 - sigma) * x + sigma * torch.randn(x.shape, generator=extra)
        return forward(x, timestep, context, **kwargs)

    monkeypatch.setattr(model, "forward", renoised_fill)
    video = sample_like_reference(model, tensors, context_noise, monkeypatch)
    reference = to_ours(tensors[f"video_context_noise_{context_noise}"])
    later_chunks = slice(CHUNK_FRAMES, None)
    assert relative_difference(video[:, :, later_chunks], reference[:, :, later_chunks]) > CLEARLY_DIFFERENT
