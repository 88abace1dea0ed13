"""Parity with Causal Forcing's own inference pipeline: frame-wise T2V and I2V, on recorded numbers.

tests/data/reference/causal_forcing_io.safetensors was written by
research/reference/record_causal_forcing.py, which ran thu-ml/Causal-Forcing's own
CausalInferencePipeline (commit in the file's metadata) on CPU in float32, frame-wise
(num_frame_per_block 1), on the tiny random weights of the Self Forcing recording
(self_forcing_weights.safetensors: Causal Forcing's model is Self Forcing's). Recorded: the
step lists of the reference's frame-wise configs (4 steps; Causal Forcing++'s 2 and 1 steps with
a 4-step first chunk = our `2*` and `1*`) and I2V from a start latent of 1 frame (an image) and
of 2 frames. Our sampler gets the same weights, contexts and noise, and must agree to
RELATIVE_TOLERANCE (max abs difference / max abs of the reference). The negative checks show the
comparison can fail: a start that does not seed the cache, a start cached at context_noise
instead of timestep 0, and FFE given to the video's first frame instead of the first generated.
"""

import hashlib
import json

import pytest
import torch
from reference_io import (
    CLEARLY_DIFFERENT,
    DATA,
    RELATIVE_TOLERANCE,
    WEIGHTS,
    load_recording,
    relative_difference,
    tiny_reference_model,
    to_ours,
)

import asd_core.sampler as sampler_module
from asd_core.sampler import generate_latents
from asd_core.schedule import parse_plan

RECORDED = DATA / "causal_forcing_io.safetensors"
REFERENCE_COMMIT = "1fc7bbc19a503c1bce80ecef08158b20e702f386"
# Each recorded run and the plan that is its step lists (the reference's frame-wise configs).
PLANS = {"t2v_4": "4", "t2v_2ffe": "2*", "t2v_1ffe": "1*", "i2v_image": "2*", "i2v_video": "1*"}


@pytest.fixture(scope="module")
def recorded():
    return load_recording(RECORDED)


@pytest.fixture(scope="module")
def model(recorded):
    """The reference's tiny model, frame-wise: chunks of the recording's num_frame_per_block (1)."""
    _, metadata = recorded
    return tiny_reference_model(metadata, int(metadata["num_frame_per_block"]))


class RecordedNoise:
    """Stands in for `asd_core.sampler.draw_noise`: serves the reference's noise in the order our
    sampler asks for it (per frame: its starting noise, then one draw per re-noise step)."""

    def __init__(self, tensors, plan, frames):
        renoise = iter(tensors["renoise"].unbind(0))
        self.pending = []
        for frame in range(frames):
            self.pending.append(to_ours(tensors["noise"][:, frame : frame + 1]))
            self.pending.extend(to_ours(next(renoise)) for _ in plan.timesteps_for_chunk(frame)[1:])

    def __call__(self, shape, generators):
        assert self.pending, "the sampler drew more noise than the reference pipeline did"
        draw = self.pending.pop(0)
        assert tuple(draw.shape) == tuple(shape), \
            f"sampler asked for {tuple(shape)}, the next recorded draw is {tuple(draw.shape)}"
        return draw.clone()


def run_settings(metadata, name):
    settings = json.loads(metadata["runs"])[name]
    return settings["start_frames"], settings["frames"], settings["context_noise"]


def sample_like_reference(model, tensors, metadata, name, monkeypatch, plan=None, **overrides):
    """Our sampler, frame-wise, on the run's inputs; `overrides` replace the arguments the
    reference's run corresponds to (the negative checks)."""
    start_frames, frames, context_noise = run_settings(metadata, name)
    plan = parse_plan(plan or PLANS[name])
    noise = RecordedNoise(tensors, plan, frames)
    monkeypatch.setattr(sampler_module, "draw_noise", noise)
    _, _, _, height, width = tensors["noise"].shape
    start = to_ours(tensors["start"][:, :start_frames]) if start_frames else None
    arguments = dict(plan=plan, context=tensors["context"], num_frames=frames, latent_height=height,
                     latent_width=width, seeds=list(range(tensors["noise"].shape[0])), context_noise=context_noise,
                     chunk_frames=1, start_latents=start)
    arguments.update(overrides)
    video = generate_latents(model, **arguments)
    return video, noise


def test_recorded_file_names_the_reference_and_the_weights_it_ran(recorded):
    _, metadata = recorded
    assert metadata["reference.commit"] == REFERENCE_COMMIT
    assert metadata["num_frame_per_block"] == "1"
    digest = hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
    assert metadata["weights"] == f"{WEIGHTS.name} (sha256 {digest})"


@pytest.mark.parametrize("name", list(PLANS))
def test_plans_are_the_reference_configs_step_lists(recorded, name):
    """`4`, `2*` and `1*` are the step lists of causal_forcing_dmd_framewise{,_2step,_1step}.yaml
    after the reference's warp (the first chunk's list where the config has one)."""
    tensors, _ = recorded
    plan = parse_plan(PLANS[name])
    rest = tensors[f"{name}_steps_rest"].double()
    first = tensors.get(f"{name}_steps_first", tensors[f"{name}_steps_rest"]).double()
    assert torch.allclose(torch.tensor(plan.rest, dtype=torch.float64), rest, rtol=1e-6)
    assert torch.allclose(torch.tensor(plan.first, dtype=torch.float64), first, rtol=1e-6)


@pytest.mark.parametrize("name", list(PLANS))
def test_video_matches_reference(recorded, model, name, monkeypatch, one_torch_thread):
    tensors, metadata = recorded
    start_frames, frames, _ = run_settings(metadata, name)
    calls = []
    forward = model.forward

    def logged(x, timestep, context, **kwargs):
        calls.append((float(timestep), kwargs["frame_offset"]))
        return forward(x, timestep, context, **kwargs)

    monkeypatch.setattr(model, "forward", logged)
    video, noise = sample_like_reference(model, tensors, metadata, name, monkeypatch)
    assert not noise.pending, f"{len(noise.pending)} recorded noise draws were not used"
    assert video.shape[2] == start_frames + frames
    if start_frames:  # the output video begins with the start latents, unchanged
        assert torch.equal(video[:, :, :start_frames], to_ours(tensors["start"][:, :start_frames]))
    reference = to_ours(tensors[f"{name}_video"])
    for frame in range(frames):
        difference = relative_difference(video[:, :, start_frames + frame], reference[:, :, frame])
        assert difference < RELATIVE_TOLERANCE, f"generated frame {frame}: {difference:.2e}"
    # the same model calls, in order: start frames cached at t=0, FFE's first chunk the first
    # generated frame (the reference also fills the cache after the last frame)
    reference_calls = tensors[f"{name}_calls"][:-1].tolist()
    assert len(calls) == len(reference_calls)
    for (t, offset), (ref_t, ref_offset) in zip(calls, reference_calls):
        assert offset == ref_offset and t == pytest.approx(ref_t, rel=1e-6, abs=1e-9)


def later_frames_difference(video, tensors, name, start_frames):
    return relative_difference(video[:, :, start_frames:], to_ours(tensors[f"{name}_video"]))


def test_a_start_that_does_not_seed_the_cache_differs(recorded, model, monkeypatch, one_torch_thread):
    """Negative check: the same noise and plan without the start image in the cache (T2V)."""
    tensors, metadata = recorded
    video, _ = sample_like_reference(model, tensors, metadata, "i2v_image", monkeypatch, start_latents=None)
    assert later_frames_difference(video, tensors, "i2v_image", 0) > CLEARLY_DIFFERENT


def test_a_start_cached_at_context_noise_differs(recorded, model, monkeypatch, one_torch_thread):
    """Negative check: the start as a prefix, whose cache fill is labelled context_noise (100 in
    this run), is not what the reference does with an initial latent (timestep 0)."""
    tensors, metadata = recorded
    start = to_ours(tensors["start"][:, :1])
    video, _ = sample_like_reference(model, tensors, metadata, "i2v_image", monkeypatch, start_latents=None,
                                     prefix=start)
    assert later_frames_difference(video, tensors, "i2v_image", 0) > CLEARLY_DIFFERENT


def test_ffe_only_on_the_videos_first_frame_differs(recorded, model, monkeypatch, one_torch_thread):
    """Negative check: with a start image, the reference gives the 4-step list to the first
    GENERATED frame; plain 2 steps there (FFE kept for frame 0 only, which the start takes) differs."""
    tensors, metadata = recorded
    video, _ = sample_like_reference(model, tensors, metadata, "i2v_image", monkeypatch, plan="2")
    assert later_frames_difference(video, tensors, "i2v_image", 1) > CLEARLY_DIFFERENT
