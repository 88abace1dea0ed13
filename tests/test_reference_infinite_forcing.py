"""Parity with Infinite Forcing's own model (V-sink) and inference pipeline, on recorded numbers.

tests/data/reference/infinite_forcing_io.safetensors was written by
research/reference/record_infinite_forcing.py, which ran the reference's own CausalWanModel and
CausalInferencePipeline (Infinite Forcing, commit in the file's metadata) on CPU in float32 with
the tiny random model of self_forcing_weights.safetensors: its released window of 6 frames with
1 sink frame (and 9 frames with 3), 5 chunks of 3 frames (each chunk after the window is full
evicts 3 frames), 4 steps.
`sample_repositioned_sink_video` gets the same weights, inputs and noise; outputs must agree to
RELATIVE_TOLERANCE. Negative checks: Self Forcing's rolling cache (the sink kept at its first
position) and Reward Forcing's EMA-Sink cache (which overwrites the sink with evicted frames).
"""

import json

import pytest
from reference_io import (
    CLEARLY_DIFFERENT,
    DATA,
    RELATIVE_TOLERANCE,
    load_recording,
    relative_difference,
    tiny_reference_model,
    to_ours,
)
from test_reference_reward_forcing import sample_like_reference

from asd_core.ema_sink import sample_ema_sink_video, sample_repositioned_sink_video
from asd_core.sampler import generate_latents

RECORDED = DATA / "infinite_forcing_io.safetensors"
REFERENCE_COMMIT = "b8feaf5f0c3ad96c208d9a17fee80d00a28d99cd"
CHUNK_FRAMES = 3


@pytest.fixture(scope="module")
def recorded():
    return load_recording(RECORDED)


@pytest.fixture(scope="module")
def model(recorded):
    return tiny_reference_model(recorded[1], CHUNK_FRAMES)


RELEASED = (6, 1)  # configs/self_forcing_dmd_vsink1.yaml: local_attn_size, sink_size


def reference_video(tensors, window: int, sink: int):
    return to_ours(tensors[f"video_window_{window}_sink_{sink}"])


def test_recorded_file_names_the_reference(recorded):
    _, metadata = recorded
    assert metadata["reference.commit"] == REFERENCE_COMMIT
    assert [tuple(w) for w in json.loads(metadata["windows"])] == [RELEASED, (9, 3)]


@pytest.mark.parametrize("window,sink", [RELEASED, (9, 3)])
def test_repositioned_sink_video_matches_reference(recorded, model, window, sink, monkeypatch, one_torch_thread):
    tensors, _ = recorded
    video = sample_like_reference(model, tensors, monkeypatch, sample_repositioned_sink_video, window_frames=window,
                                  sink_frames=sink)
    reference = reference_video(tensors, window, sink)
    for chunk in range(reference.shape[2] // CHUNK_FRAMES):
        frames = slice(chunk * CHUNK_FRAMES, (chunk + 1) * CHUNK_FRAMES)
        assert relative_difference(video[:, :, frames], reference[:, :, frames]) < RELATIVE_TOLERANCE, f"chunk {chunk}"


@pytest.mark.parametrize("window,sink", [RELEASED, (9, 3)])
def test_self_forcing_rolling_cache_differs(recorded, model, window, sink, monkeypatch, one_torch_thread):
    """Negative check: the sink left at its first positions (Self Forcing's rolling cache) after eviction."""
    tensors, _ = recorded
    video = sample_like_reference(model, tensors, monkeypatch, generate_latents, max_cache_frames=window,
                                  sink_frames=sink)
    reference = reference_video(tensors, window, sink)
    assert relative_difference(video[:, :, :window], reference[:, :, :window]) < RELATIVE_TOLERANCE
    assert relative_difference(video[:, :, window:], reference[:, :, window:]) > CLEARLY_DIFFERENT


def test_ema_sink_cache_differs(recorded, model, monkeypatch, one_torch_thread):
    """Negative check: even at alpha 1 Reward Forcing's sink takes evicted frames of another size."""
    tensors, _ = recorded
    window, sink = RELEASED
    video = sample_like_reference(model, tensors, monkeypatch, sample_ema_sink_video, alpha=1.0,
                                  window_frames=window, sink_frames=sink)
    reference = reference_video(tensors, window, sink)
    assert relative_difference(video[:, :, -CHUNK_FRAMES:], reference[:, :, -CHUNK_FRAMES:]) > CLEARLY_DIFFERENT
