"""Image-to-video: `sample_video(start_latents=...)` and the helpers of `asd_core.start_image`.

The numbers are checked against Causal Forcing's own inference in
test_reference_causal_forcing.py; here: the contract (start yielded first and unchanged, the
cache seeded like a prefix but at timestep 0, FFE's first chunk = the first generated chunk),
bad inputs, and the encoders.
"""

import pytest
import torch

from asd_core.config import tiny_config
from asd_core.model import CausalWanTransformer
from asd_core.sampler import generate_latents, sample_video
from asd_core.schedule import parse_plan
from asd_core.start_image import check_start_latents, encode_start_image, start_latents_from_latent
from asd_core.vae import LatentCodec, from_raw, tiny_vae_config

H = W = 8


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CausalWanTransformer(tiny_config(chunk_frames=2)).eval()


@pytest.fixture(scope="module")
def context(model):
    return torch.randn(1, 5, model.config.text_dim, generator=torch.Generator().manual_seed(7))


def start(frames=1, batch=1, seed=3):
    return torch.randn(batch, 16, frames, H, W, generator=torch.Generator().manual_seed(seed))


def run(model, context, plan="2", frames=4, seeds=(1, 2), **kwargs):
    return generate_latents(model, plan=parse_plan(plan), context=context, num_frames=frames,
                            latent_height=H, latent_width=W, seeds=list(seeds), **kwargs)


def logged_calls(model, monkeypatch):
    calls = []
    forward = model.forward

    def logged(x, timestep, context, **kwargs):
        calls.append((float(timestep), kwargs["frame_offset"], x.shape[2], kwargs["update_cache"]))
        return forward(x, timestep, context, **kwargs)

    monkeypatch.setattr(model, "forward", logged)
    return calls


def test_start_is_yielded_first_unchanged_then_the_generated_chunks(model, context):
    image = start()
    pieces = list(sample_video(model, plan=parse_plan("2"), context=context, num_frames=4, latent_height=H,
                               latent_width=W, seeds=[1, 2], start_latents=image))
    assert [p.shape[2] for p in pieces] == [1, 2, 2]  # num_frames counts the generated frames only
    assert pieces[0].dtype == torch.float32 and pieces[0].device.type == "cpu"
    assert torch.equal(pieces[0], image.expand(2, -1, -1, -1, -1))  # a batch of 1 is shared by every seed


def test_start_of_whole_chunks_at_context_noise_0_is_the_prefix_path_plus_the_start(model, context):
    """With whole chunks and context_noise 0 the cache fill is the prefix's (tested against a
    recompute-everything reference in test_sampler.py); the output adds the start in front."""
    frames = start(frames=2, batch=2)
    got = run(model, context, start_latents=frames)
    continued = run(model, context, prefix=frames)
    assert torch.equal(got[:, :, :2], frames)
    assert torch.allclose(got[:, :, 2:], continued, atol=1e-6)
    assert not torch.allclose(got[:, :, 2:], run(model, context), atol=1e-3)  # the start conditions the video


def test_start_fills_the_cache_at_timestep_0_and_generated_chunks_at_context_noise(model, context, monkeypatch):
    calls = logged_calls(model, monkeypatch)
    run(model, context, plan="1*", frames=4, start_latents=start(frames=3), context_noise=100)
    fills = [c for c in calls if c[3]]
    # start frames 0-2 in pieces of chunk_frames (2 + 1) at t=0; then the first generated chunk at 100
    assert fills == [(0.0, 0, 2, True), (0.0, 2, 1, True), (100.0, 3, 2, True)]
    denoise = [(t, offset) for t, offset, _, update in calls if not update]
    ffe = parse_plan("1*")
    # FFE: the 4-step first chunk is the first GENERATED chunk, right after the start (Causal Forcing++)
    assert denoise == [(t, 3) for t in ffe.first] + [(t, 5) for t in ffe.rest]


def test_frame_wise_sampling_with_a_start_image_and_ffe(model, context, monkeypatch):
    calls = logged_calls(model, monkeypatch)
    video = run(model, context, plan="2*", frames=3, start_latents=start(), chunk_frames=1)
    assert video.shape[2] == 4
    plan = parse_plan("2*")
    denoise = [(t, offset) for t, offset, _, update in calls if not update]
    assert denoise == ([(t, 1) for t in plan.first] + [(t, 2) for t in plan.rest] + [(t, 3) for t in plan.rest])


def test_seeds_stay_independent_and_reproducible_with_a_start(model, context):
    image = start(batch=2)
    both = run(model, context, start_latents=image)
    alone = run(model, context, seeds=(2,), start_latents=image[1:])
    assert torch.allclose(both[1:], alone, atol=1e-5)
    assert torch.equal(both, run(model, context, start_latents=image))


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(1, 16, H, W), r"\(B, C, F0, H, W\), got shape \(1, 16, 8, 8\); one image is F0 = 1"),
    (torch.zeros(3, 16, 1, H, W), "batch 3 must be 1 or the number of seeds"),
    (torch.zeros(1, 4, 1, H, W), "4 channels and latent size 8x8, the video 16 channels"),
    (torch.zeros(1, 16, 1, 4, 4), "latent size 4x4, the video 16 channels and 8x8"),
    (torch.zeros(1, 16, 0, H, W), "0 frames"),
    (torch.full((1, 16, 1, H, W), float("nan")), "NaN or infinite"),
    ([[0.0]], "must be a tensor"),
])
def test_bad_start_latents_are_refused_before_any_model_call(model, context, monkeypatch, bad, message):
    calls = logged_calls(model, monkeypatch)
    with pytest.raises(ValueError, match=message) as error:
        run(model, context, start_latents=bad)
    assert "\n" not in str(error.value) and not calls


def test_start_and_prefix_together_are_refused(model, context):
    with pytest.raises(ValueError, match="either prefix .* or start_latents"):
        run(model, context, start_latents=start(), prefix=start())


def test_start_frames_count_against_the_models_frame_positions(model, context):
    positions = model.config.rope_max_seq_len * model.config.patch_size[0]
    with pytest.raises(ValueError, match="after a prefix of 2 latent frames exceed"):
        run(model, context, frames=positions, start_latents=start(frames=2))


def test_check_start_latents_returns_a_float32_cpu_copy():
    image = start().double()
    checked = check_start_latents(image, batch=2, channels=16, latent_height=H, latent_width=W)
    assert checked.dtype == torch.float32 and checked.shape == (2, 16, 1, H, W)
    checked.zero_()
    assert image.abs().sum() > 0


@pytest.fixture(scope="module")
def codec():
    return LatentCodec.tiny_random(seed=1)


def test_encode_start_image_is_the_codecs_encoding_of_the_image(codec):
    image = torch.rand(1, 32, 48, 3, generator=torch.Generator().manual_seed(0))
    latents = encode_start_image(codec, image)
    assert latents.shape == (1, tiny_vae_config()["z_dim"], 1, 4, 6)
    pixels = image.permute(3, 0, 1, 2)[None] * 2 - 1
    assert torch.allclose(latents, codec.encode(pixels), atol=1e-6)
    video = torch.rand(5, 32, 48, 3, generator=torch.Generator().manual_seed(1))
    assert encode_start_image(codec, video).shape[2] == 2  # 4k+1 frames: a start video


@pytest.mark.parametrize("bad, message", [
    (torch.rand(32, 48, 3), r"IMAGE \(N, H, W, 3\)"),
    (torch.rand(1, 32, 48, 4), r"IMAGE \(N, H, W, 3\)"),
    (torch.rand(3, 32, 48, 3), "3 frames does not fill whole latent frames: use 1 image or 4k\\+1 frames"),
    (torch.rand(1, 40, 48, 3), "48x40; width and height must be multiples of 16"),
])
def test_encode_start_image_refuses_bad_images(codec, bad, message):
    with pytest.raises(ValueError, match=message):
        encode_start_image(codec, bad)


def test_start_latents_from_a_comfyui_latent_are_normalised():
    raw = torch.randn(1, 16, 1, H, W, generator=torch.Generator().manual_seed(5))
    assert torch.equal(start_latents_from_latent({"samples": raw}), from_raw(raw))
    with pytest.raises(ValueError, match="video latent .* VAEEncode"):
        start_latents_from_latent({"samples": raw[:, :, 0]})
    with pytest.raises(ValueError, match="LATENT"):
        start_latents_from_latent(raw)


def test_the_ema_sink_sampler_counts_start_frames_in_the_video(model, context, monkeypatch):
    """num_frames fits the window but start + num_frames does not: Reward Forcing's EMA-Sink cache
    must be built (the start frames are cached like a prefix), not Self Forcing's rolling one."""
    import asd_core.ema_sink as ema_sink

    built = []
    cache_class = ema_sink.EmaSinkCache

    def recording(*args, **kwargs):
        built.append(kwargs["capacity_frames"])
        return cache_class(*args, **kwargs)

    monkeypatch.setattr(ema_sink, "EmaSinkCache", recording)
    video = torch.cat(list(ema_sink.sample_ema_sink_video(
        model, window_frames=4, sink_frames=2, plan=parse_plan("1"), context=context, num_frames=4,
        latent_height=H, latent_width=W, seeds=[1], start_latents=start(frames=2))), dim=2)
    assert built == [4] and video.shape[2] == 6
