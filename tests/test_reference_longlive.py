"""Parity with LongLive's own inference (frame sink + rolling window; prompt switches with KV re-cache).

tests/data/reference/longlive_io.safetensors was written by research/reference/record_longlive.py,
which ran LongLive's own CausalWanModel, CausalInferencePipeline and
InteractiveCausalInferencePipeline (NVlabs/LongLive, the Wan2.1 version; commit in the file's
metadata) on CPU in float32 at the tiny config of the Self Forcing recording, on the same weights
(tests/data/reference/self_forcing_weights.safetensors, which the script regenerated and checked).
Here our loader, model and sampler get the same inputs and noise: a plain video with a 6-frame
window and 3 sink frames run past two evictions, the same with prompt switches at frames 6 and 9,
and a whole-video cache with switches at 3 and 6 and context noise 100. Outputs must agree to
RELATIVE_TOLERANCE (max abs difference / max abs of the reference). The negative check: the same
switches without the re-cache are far off, so the comparison sees the re-cache.
"""

import json

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
from asd_core.sampler import PromptSwitch, generate_latents
from asd_core.schedule import parse_plan

RECORDED = DATA / "longlive_io.safetensors"
REFERENCE_COMMIT = "2462895575c579617af5089c9a05c7b500dc0036"
CHUNK_FRAMES = 3


@pytest.fixture(scope="module")
def recorded():
    return load_recording(RECORDED)


@pytest.fixture(scope="module")
def model(recorded):
    return tiny_reference_model(recorded[1], CHUNK_FRAMES)


class RecordedNoise:
    """Serves the reference's noise in the order our sampler draws it (per chunk: its starting
    noise, then one draw per re-noise step)."""

    def __init__(self, tensors, chunks: int):
        noise, renoise = tensors["noise"], tensors["renoise"]
        steps = renoise.shape[0] // (noise.shape[1] // CHUNK_FRAMES)
        self.pending = []
        for chunk in range(chunks):
            self.pending.append(to_ours(noise[:, chunk * CHUNK_FRAMES : (chunk + 1) * CHUNK_FRAMES]))
            self.pending.extend(to_ours(renoise[chunk * steps + step]) for step in range(steps))

    def __call__(self, shape, generators):
        assert self.pending, "the sampler drew more noise than the reference pipeline did"
        draw = self.pending.pop(0)
        assert tuple(draw.shape) == tuple(shape), f"sampler asked for {tuple(shape)}, recorded {tuple(draw.shape)}"
        return draw.clone()


def sample_like_reference(model, recorded, run, monkeypatch, recache=True, whole_cache=False):
    """Our sampler on the run's settings and noise; returns (video, model calls)."""
    tensors, metadata = recorded
    settings = json.loads(metadata["runs"])[run]
    frames = settings["chunks"] * CHUNK_FRAMES
    noise = RecordedNoise(tensors, settings["chunks"])
    monkeypatch.setattr(sampler_module, "draw_noise", noise)
    calls = []
    forward = model.forward

    def logged(x, timestep, context, **kwargs):
        calls.append((float(timestep), kwargs["frame_offset"], x.shape[2]))
        return forward(x, timestep, context, **kwargs)

    monkeypatch.setattr(model, "forward", logged)
    window = -1 if whole_cache else settings["local_attn_size"]
    switches = [PromptSwitch(frame, tensors[f"context_{index + 1}"])
                for index, frame in enumerate(settings["switch_frames"] or [])]
    video = generate_latents(
        model, plan=parse_plan("4"), context=tensors["context_0"], num_frames=frames,
        latent_height=noise.pending[0].shape[3], latent_width=noise.pending[0].shape[4], seeds=[0, 1],
        context_noise=settings["context_noise"], max_cache_frames=None if window == -1 else window,
        sink_frames=settings["sink_size"], prompt_switches=switches, recache=recache,
    )
    monkeypatch.undo()
    assert not noise.pending, f"{len(noise.pending)} recorded noise draws were not used"
    return video, calls


def expected_calls(recorded, run) -> list[tuple[float, int, int]]:
    """The reference's model calls as ours make them: without its cache fill after the last chunk,
    and a re-cache after an eviction without the `sink` frames whose keys it does not write
    (LongLive recomputes `local_attn_size` frames and keeps the sink's keys)."""
    tensors, metadata = recorded
    sink = json.loads(metadata["runs"])[run]["sink_size"]
    calls = []
    for t, first, frames in tensors[f"{run}_calls"][:-1].tolist():
        first, frames = int(first), int(frames)
        if frames > CHUNK_FRAMES and first > 0:
            first, frames = first + sink, frames - sink
        calls.append((t, first, frames))
    return calls


def test_recorded_file_names_the_reference(recorded):
    _, metadata = recorded
    assert metadata["reference.commit"] == REFERENCE_COMMIT
    assert metadata["reference.repo"] == "https://github.com/NVlabs/LongLive"
    assert json.loads(metadata["runs"])["rolling_switch"]["global_sink"] is True


@pytest.mark.parametrize("run", ["rolling_video", "rolling_switch", "global_switch"])
def test_video_matches_longlive(recorded, model, run, monkeypatch, one_torch_thread):
    tensors, _ = recorded
    video, calls = sample_like_reference(model, recorded, run, monkeypatch)
    reference = to_ours(tensors[run])
    for chunk in range(reference.shape[2] // CHUNK_FRAMES):
        frames = slice(chunk * CHUNK_FRAMES, (chunk + 1) * CHUNK_FRAMES)
        assert relative_difference(video[:, :, frames], reference[:, :, frames]) < RELATIVE_TOLERANCE, f"chunk {chunk}"
    reference_calls = expected_calls(recorded, run)
    assert [(offset, frames) for _, offset, frames in calls] == [(first, n) for _, first, n in reference_calls]
    assert [t for t, _, _ in calls] == pytest.approx([t for t, _, _ in reference_calls], rel=1e-6)


def test_eviction_and_switch_matter_in_the_recording(recorded, model, monkeypatch, one_torch_thread):
    """The parity above covers the eviction and the switch: the switch run's first two chunks equal
    the plain run's and its later ones do not, and our sampler with a whole-video cache on the same
    noise leaves the rolling reference once the window has dropped frames."""
    tensors, _ = recorded
    plain, switched = to_ours(tensors["rolling_video"]), to_ours(tensors["rolling_switch"])
    assert torch.equal(plain[:, :, :6], switched[:, :, :6])
    assert relative_difference(switched[:, :, 6:], plain[:, :, 6:]) > CLEARLY_DIFFERENT
    whole_cache, _ = sample_like_reference(model, recorded, "rolling_video", monkeypatch, whole_cache=True)
    assert relative_difference(whole_cache[:, :, :6], plain[:, :, :6]) < RELATIVE_TOLERANCE
    assert relative_difference(whole_cache[:, :, 9:], plain[:, :, 9:]) > CLEARLY_DIFFERENT


@pytest.mark.parametrize("run", ["rolling_switch", "global_switch"])
def test_switch_without_recache_is_caught(recorded, model, run, monkeypatch, one_torch_thread):
    """Negative check: the same switches with the old cache kept (recache=False) miss the reference."""
    tensors, metadata = recorded
    first_switch = json.loads(metadata["runs"])[run]["switch_frames"][0]
    video, calls = sample_like_reference(model, recorded, run, monkeypatch, recache=False)
    reference = to_ours(tensors[run])
    assert relative_difference(video[:, :, :first_switch], reference[:, :, :first_switch]) < RELATIVE_TOLERANCE
    assert relative_difference(video[:, :, first_switch:], reference[:, :, first_switch:]) > CLEARLY_DIFFERENT
