"""The causal sampler against a recompute-everything reference, plus its user-facing contracts."""

import pytest
import torch

from asd_core.config import tiny_config
from asd_core.model import CausalWanTransformer
from asd_core.sampler import SamplingCancelled, generate_latents, sample_video
from asd_core.schedule import parse_plan, timestep_to_sigma

H = W = 8


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CausalWanTransformer(tiny_config(chunk_frames=2)).eval()


@pytest.fixture(scope="module")
def context(model):
    return torch.randn(1, 5, model.config.text_dim, generator=torch.Generator().manual_seed(7))


def reference_sampler(model, plan, context, num_frames, seeds, negative=None, cfg_scale=1.0,
                      context_noise=0.0, prefix=None):
    """No KV cache: every call runs the full block-causal pass over all earlier frames + the chunk.

    Noise is drawn per sample from its own generator in the sampler's documented order:
    chunk noise, then one draw per re-noise. Earlier chunks are seen clean, labelled with the
    timestep context_noise (Self Forcing's inference).
    """
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    chunk = model.config.chunk_frames
    batch = len(seeds)
    ctx = context.expand(batch, -1, -1)

    def noise():
        return torch.stack([torch.randn(16, chunk, H, W, generator=g) for g in generators])

    def flow(frames, timesteps, text):
        with torch.no_grad():
            return model(frames, timesteps, text)[:, :, -chunk:]

    history = [] if prefix is None else [prefix]  # what later chunks see: clean chunks
    history_t = [] if prefix is None else [torch.zeros(batch, prefix.shape[2])]
    outputs = []
    num_chunks = num_frames // chunk
    for index in range(num_chunks):
        x = noise()
        steps = plan.timesteps_for_chunk(index)
        for k, t in enumerate(steps):
            frames = torch.cat(history + [x], dim=2)
            times = torch.cat(history_t + [torch.full((batch, chunk), t)], dim=1)
            v = flow(frames, times, ctx)
            if negative is not None and cfg_scale != 1.0:
                v_uncond = flow(frames, times, negative.expand(batch, -1, -1))
                v = v_uncond + cfg_scale * (v - v_uncond)
            x0 = x - timestep_to_sigma(t) * v
            if k + 1 < len(steps):
                s = timestep_to_sigma(steps[k + 1])
                x = (1 - s) * x0 + s * noise()
        outputs.append(x0)
        history.append(x0)
        history_t.append(torch.full((batch, chunk), float(context_noise)))
    return torch.cat(outputs, dim=2)


def run(model, context, plan="1*", frames=6, seeds=(1, 2), **kwargs):
    return generate_latents(model, plan=parse_plan(plan), context=context, num_frames=frames,
                            latent_height=H, latent_width=W, seeds=list(seeds), **kwargs)


@pytest.mark.parametrize("plan", ["1", "2*", "first=1000,600;rest=1000,300;shift=3"])
def test_cached_sampler_equals_recompute_everything_reference(model, context, plan):
    got = run(model, context, plan)
    expected = reference_sampler(model, parse_plan(plan), context, 6, [1, 2])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_reference_match_with_cfg_and_context_noise(model, context):
    negative = torch.zeros(1, 5, model.config.text_dim)
    kwargs = dict(negative_context=negative, cfg_scale=2.5, context_noise=100.0)
    got = run(model, context, "2", **kwargs)
    expected = reference_sampler(model, parse_plan("2"), context, 6, [1, 2], negative=negative,
                                 cfg_scale=2.5, context_noise=100.0)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_continuation_from_prefix_matches_reference(model, context):
    """A clean prefix (an encoded video) fills the cache first; generation continues after it."""
    prefix = torch.randn(2, 16, 4, H, W, generator=torch.Generator().manual_seed(3))
    got = run(model, context, "2", prefix=prefix)
    expected = reference_sampler(model, parse_plan("2"), context, 6, [1, 2], prefix=prefix)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, run(model, context, "2"))  # the prefix really conditions the video


def test_same_seed_same_video_bitwise_and_seeds_are_independent(model, context):
    a = run(model, context, seeds=(11, 12))
    b = run(model, context, seeds=(11, 12))
    assert torch.equal(a, b)
    alone = run(model, context, seeds=(12,))
    torch.testing.assert_close(a[1:], alone, rtol=1e-5, atol=1e-5)  # sample 2 depends on its seed only
    assert not torch.allclose(a[0], a[1])


def test_streams_chunks_and_reports_every_model_call(model, context):
    events = []
    chunks = list(sample_video(model, plan=parse_plan("1*"), context=context, num_frames=6, latent_height=H,
                               latent_width=W, seeds=[0], callback=events.append))
    assert [c.shape for c in chunks] == [(1, 16, 2, H, W)] * 3
    calls = [e for e in events if e.finished_chunk is None]
    finished = [e for e in events if e.finished_chunk is not None]
    # 1*: chunk 0 = 4 steps + cache fill, chunk 1 = 1 + fill, chunk 2 = 1 (last chunk fills nothing)
    assert [e.call for e in calls] == list(range(1, 9))
    assert all(e.total_calls == 8 for e in events)
    assert [e.chunk for e in finished] == [0, 1, 2]
    assert torch.equal(finished[1].finished_chunk, chunks[1])


def test_cancel_stops_between_model_calls(model, context):
    calls = []

    def should_cancel():
        return len(calls) >= 3

    with pytest.raises(SamplingCancelled, match="3 of"):
        run(model, context, callback=lambda e: calls.append(e) if e.finished_chunk is None else None,
            should_cancel=should_cancel)
    assert len(calls) == 3


def test_cfg_scale_one_ignores_negative_and_rolling_window_larger_than_video_changes_nothing(model, context):
    plain = run(model, context)
    assert torch.equal(run(model, context, negative_context=torch.zeros(1, 5, 32), cfg_scale=1.0), plain)
    assert torch.equal(run(model, context, max_cache_frames=6), plain)
    rolled = run(model, context, frames=8, max_cache_frames=4, sink_frames=2)
    assert rolled.shape == (2, 16, 8, H, W) and torch.isfinite(rolled).all()


def test_bad_inputs_are_rejected_before_any_model_call(model, context):
    with pytest.raises(ValueError, match="5 latent frames do not split into chunks of 2; use num_frames 4 or 6"):
        run(model, context, frames=5)
    with pytest.raises(ValueError, match="patch size"):
        generate_latents(model, plan=parse_plan("1"), context=context, num_frames=2, latent_height=7,
                         latent_width=8, seeds=[0])
    with pytest.raises(ValueError, match="text conditioning"):
        run(model, torch.randn(3, 5, 32))
    with pytest.raises(ValueError, match="prefix latents"):
        run(model, context, prefix=torch.randn(2, 16, 2, 4, 4))
    with pytest.raises(ValueError, match="at least one seed"):
        run(model, context, seeds=())


def test_a_passed_cache_is_reused_and_a_wrong_one_refused(model, context):
    from asd_core.sampler import kv_cache_for_video

    cache = kv_cache_for_video(model, batch=2, video_frames=6, latent_height=H, latent_width=W)
    first = run(model, context, cache=cache)
    storage = cache.keys.data_ptr()
    assert torch.equal(run(model, context, cache=cache), first)  # reset between videos, no stale keys
    assert cache.keys.data_ptr() == storage  # the same storage, not reallocated
    assert torch.equal(run(model, context), first)
    with pytest.raises(ValueError, match="KV cache passed does not fit this request"):
        run(model, context, seeds=(1, 2, 3), cache=cache)


def test_chunk_frames_argument_leaves_the_model_config_alone(model, context):
    """Frame-wise sampling of a chunk-2 model is a call argument: the config is never swapped."""
    config = model.config
    got = run(model, context, "1", chunk_frames=1)
    assert model.config is config and config.chunk_frames == 2
    frame_wise = CausalWanTransformer(tiny_config(chunk_frames=1)).eval()
    frame_wise.load_state_dict(model.state_dict())
    expected = reference_sampler(frame_wise, parse_plan("1"), context, 6, [1, 2])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    # tiny_config: 256 RoPE positions per axis, chunks of 2 (issue 25 item 4: failed after the model ran)
    (dict(frames=258), r"num_frames 258: 258 latent frames exceed the 256 frame positions .* use num_frames 256 or fewer"),
    (dict(frames=254, prefix=torch.zeros(2, 16, 4, H, W)), r"after a prefix of 4 latent frames exceed .* 252 or fewer"),
    (dict(max_cache_frames=3), r"max_cache_frames=3 is too small: .* 2 sink frames .* >= 4"),
    (dict(context_noise=float("nan")), r"context_noise is a timestep in \[0, 1000\], got nan"),
    (dict(cfg_scale=float("inf"), negative_context=torch.zeros(1, 5, 32)), r"cfg_scale must be a finite number"),
    (dict(seeds=(1, 10**23)), r"seeds must be an integer in \[0, 2\^64 - 1\], got 1000000"),
])
def test_requests_the_model_cannot_run_are_refused_before_any_model_call(model, context, kwargs, message):
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match=message):
            run(model, context, **kwargs)
    finally:
        handle.remove()
    assert calls == []


def test_a_request_larger_than_the_device_memory_is_refused_with_what_fits(context, monkeypatch):
    """Memory is estimated up front (KV cache from the config + latents + activations) against what
    the device has; the refusal says how much is needed and the largest request that fits, and that
    request then runs."""
    import re

    import asd_core.request as request

    torch.manual_seed(0)
    fresh = CausalWanTransformer(tiny_config(chunk_frames=2)).eval()
    budget = request.estimate_memory(fresh.config, batch=2, latent_frames=8, latent_height=H, latent_width=W).total
    monkeypatch.setattr(request, "device_memory", lambda device: budget)
    calls = []
    handle = fresh.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError) as refused:
        run(fresh, context, frames=40)
    handle.remove()
    message = str(refused.value)
    assert calls == [] and len(message.splitlines()) == 1
    assert re.fullmatch(r"40 latent frames of 8x8 need about [\d.]+ MB \(KV cache [\d.]+ MB, activations [\d.]+ MB, "
                        r"latents [\d.]+ MB\) but cpu has [\d.]+ MB available: use num_frames 8 or fewer, or a smaller "
                        r"latent_width/latent_height, or a smaller batch", message), message
    assert run(fresh, context, frames=8).shape[2] == 8


def test_non_finite_chunk_is_refused_not_returned(model, context):
    """NaN weights (or an overflowing dtype / CFG scale) raise after the first chunk instead of
    handing a garbage video to the caller (API and nodes alike)."""
    from asd_core.sampler import NonFiniteOutput

    broken = CausalWanTransformer(model.config).eval()
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.proj_out.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteOutput, match="NaN or infinite values in chunk 1 of 3"):
        run(broken, context)
