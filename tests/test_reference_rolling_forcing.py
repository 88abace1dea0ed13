"""Parity with Rolling Forcing's own model and rolling-window inference, on recorded reference numbers.

tests/data/reference/rolling_forcing_io.safetensors was written by
research/reference/record_rolling_forcing.py, which ran the reference repository's own
CausalWanModel (its attention sink and RoPE re-indexing) and `inference_rolling_forcing`
(TencentARC/RollingForcing, commit in the file's metadata) on CPU in float32, with the tiny
random model of tests/data/reference/self_forcing_weights.safetensors: 9 chunks of 3 frames,
5 and 4 steps (windows of 5 and 4 chunks), 21-frame attention span, batch 2. Our
`sample_rolling_video` gets the same weights, inputs and noise; every frame must agree to
RELATIVE_TOLERANCE (max abs difference / max abs of the reference). The negative checks show
the comparison can fail where the algorithm's specific parts matter: the anchor left at its
first position instead of re-indexed, or an attention span that does not end.
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

import asd_core.rolling_forcing as rolling_module
from asd_core.rolling_cache import RollingForcingCache
from asd_core.rolling_forcing import generate_rolling_latents
from asd_core.schedule import parse_plan

RECORDED = DATA / "rolling_forcing_io.safetensors"
REFERENCE_COMMIT = "a1477d09e85dc759a6a6728f55f77f59342ce388"
CHUNK_FRAMES = 3


@pytest.fixture(scope="module")
def recorded():
    return load_recording(RECORDED)


@pytest.fixture(scope="module")
def model(recorded):
    return tiny_reference_model(recorded[1], CHUNK_FRAMES)


class RecordedNoise:
    """Stands in for `draw_noise`: per window, the new chunk's recorded starting noise, then the
    window's recorded re-noise draws (one per unfinished chunk, oldest first)."""

    def __init__(self, tensors, steps: int):
        noise, renoise = tensors["noise"], list(tensors[f"renoise_steps_{steps}"].unbind(0))
        num_chunks = noise.shape[1] // CHUNK_FRAMES
        self.pending = []
        for window in range(num_chunks + steps - 1):
            if window < num_chunks:
                self.pending.append(to_ours(noise[:, window * CHUNK_FRAMES : (window + 1) * CHUNK_FRAMES]))
            oldest, newest = max(0, window - steps + 1), min(window, num_chunks - 1)
            unfinished = sum(1 for chunk in range(oldest, newest + 1) if window - chunk < steps - 1)
            self.pending.extend(to_ours(renoise.pop(0)) for _ in range(unfinished))
        assert not renoise, "the recorded draws do not follow the window schedule"

    def __call__(self, shape, generators):
        assert self.pending, "the sampler drew more noise than the reference pipeline did"
        draw = self.pending.pop(0)
        assert tuple(draw.shape) == tuple(shape), f"sampler asked for {tuple(shape)}, recorded {tuple(draw.shape)}"
        return draw.clone()


def sample_like_reference(model, tensors, metadata, steps, monkeypatch, **kwargs):
    noise = RecordedNoise(tensors, steps)
    monkeypatch.setattr(rolling_module, "draw_noise", noise)
    _, _, frames, height, width = to_ours(tensors["noise"]).shape
    kwargs.setdefault("attention_frames", int(metadata["attention_frames"]))
    video = generate_rolling_latents(
        model, plan=parse_plan(str(steps)), context=tensors["context"], num_frames=frames, latent_height=height,
        latent_width=width, seeds=[0, 1], context_noise=float(metadata["context_noise"]), **kwargs,
    )
    assert not noise.pending, f"{len(noise.pending)} recorded noise draws were not used"
    return video


def test_recorded_file_names_the_reference(recorded):
    tensors, metadata = recorded
    assert metadata["reference.commit"] == REFERENCE_COMMIT
    assert int(metadata["chunk_frames"]) == CHUNK_FRAMES
    for steps in (5, 4):  # our plans are the reference's step lists after its warp
        ours = torch.tensor(parse_plan(str(steps)).rest, dtype=torch.float64)
        assert torch.allclose(ours, tensors[f"denoising_step_list_{steps}"].double(), rtol=1e-6)


@pytest.mark.parametrize("steps", [5, 4])
def test_rolling_video_matches_reference(recorded, model, steps, monkeypatch, one_torch_thread):
    tensors, metadata = recorded
    video = sample_like_reference(model, tensors, metadata, steps, monkeypatch)
    reference = to_ours(tensors[f"video_steps_{steps}"])
    for chunk in range(reference.shape[2] // CHUNK_FRAMES):
        frames = slice(chunk * CHUNK_FRAMES, (chunk + 1) * CHUNK_FRAMES)
        assert relative_difference(video[:, :, frames], reference[:, :, frames]) < RELATIVE_TOLERANCE, f"chunk {chunk}"


def test_anchor_without_rope_reindexing_differs(recorded, model, monkeypatch, one_torch_thread):
    """Negative check: the sink left at frames 0-2 instead of moved before the working frames."""
    tensors, metadata = recorded
    monkeypatch.setattr(RollingForcingCache, "_rotation_to", lambda self, position: _identity(self))
    video = sample_like_reference(model, tensors, metadata, 5, monkeypatch)
    reference = to_ours(tensors["video_steps_5"])
    assert relative_difference(video[:, :, :6], reference[:, :, :6]) < RELATIVE_TOLERANCE  # sink not yet moved
    assert relative_difference(video[:, :, 9:], reference[:, :, 9:]) > CLEARLY_DIFFERENT


def test_unbounded_attention_span_differs(recorded, model, monkeypatch, one_torch_thread):
    """Negative check: windows that see every earlier frame, not the reference's 21-frame span."""
    tensors, metadata = recorded
    video = sample_like_reference(model, tensors, metadata, 5, monkeypatch, attention_frames=99)
    reference = to_ours(tensors["video_steps_5"])
    assert relative_difference(video[:, :, -3:], reference[:, :, -3:]) > CLEARLY_DIFFERENT


def _identity(cache: RollingForcingCache) -> tuple[torch.Tensor, torch.Tensor]:
    cos, _ = cache.frame_rope(cache.anchor_frames, 0)
    return torch.ones_like(cos), torch.zeros_like(cos)
