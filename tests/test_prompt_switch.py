"""Prompt switches in the sampler (with and without LongLive's KV re-cache) against a reference
that keeps no cache at all.

The reference describes the cache by what it means: every frame's keys and values are those of
the last pass that computed it, so it records per frame the text it was computed under and the
frames it saw, and runs every model call as one full pass over the whole video so far with a
per-frame mask (what each frame saw), per-frame timesteps and a per-frame text (a cross-attention
processor that gives each frame its own context). A re-cache re-labels the recomputed frames
(new text; they saw every held frame); the rolling window drops the oldest frames after the sink.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from unittest import mock

import pytest
import torch

import asd_core.model as model_module
from asd_core.attention import TextCrossAttention
from asd_core.config import tiny_config
from asd_core.model import CausalWanTransformer
from asd_core.request import estimate_memory
from asd_core.sampler import PromptSwitch, generate_latents, sample_video
from asd_core.schedule import parse_plan, timestep_to_sigma

H = W = 8
CHUNK = 2


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CausalWanTransformer(tiny_config(chunk_frames=CHUNK)).eval()


def text(model, seed: int, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 5, model.config.text_dim, generator=torch.Generator().manual_seed(seed))


class PerFrameText:
    """`attn2` processor: the tokens of frame f attend to the embedded text `texts[f]`."""

    def __init__(self, texts: list[torch.Tensor], tokens_per_frame: int):
        self.texts, self.tokens_per_frame = texts, tokens_per_frame

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        tpf = self.tokens_per_frame
        return torch.cat([TextCrossAttention()(attn, hidden_states[:, f * tpf:(f + 1) * tpf], text)
                          for f, text in enumerate(self.texts)], dim=1)


@contextmanager
def per_frame_pass(model, texts, sees):
    """The model's full pass with per-frame text (raw contexts) and a frame-level mask `sees`."""
    tpf = model.config.tokens_per_frame(H, W)
    embedder = model.condition_embedder.text_embedder
    embedded = [embedder(model._pad_context(t)) for t in texts]
    token_mask = sees.repeat_interleave(tpf, 0).repeat_interleave(tpf, 1)
    for block in model.blocks:
        block.attn2.set_processor(PerFrameText(embedded, tpf))
    try:
        with mock.patch.object(model_module, "block_causal_mask", lambda *args: token_mask):
            yield
    finally:
        for block in model.blocks:
            block.attn2.set_processor(TextCrossAttention())


@dataclass
class Frame:
    latent: torch.Tensor  # (B, C, 1, H, W), clean
    text: tuple  # (cond, uncond or None) its keys were computed under
    sees: frozenset  # the frames its last pass attended to


def reference_video(model, plan, context, num_frames, seeds, *, switches=(), recache=True, window=None, sink=0,
                    context_noise=0.0, negative=None, cfg_scale=1.0, prefix=None):
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    batch, guided = len(seeds), negative is not None and cfg_scale != 1.0
    frames: list[Frame] = []
    held: list[int] = []
    dropped = False

    def noise():
        return torch.stack([torch.randn(16, CHUNK, H, W, generator=g) for g in generators])

    def make_room(count):
        nonlocal dropped
        while window is not None and len(held) + count > window:
            held.pop(sink)  # the oldest frame after the sink
            dropped = True

    def flow(x, t, current_text, sees_now):
        """The chunk x at timestep t after every earlier frame, each as its last pass saw it."""
        start = len(frames)
        count = start + x.shape[2]
        sees = torch.zeros(count, count, dtype=torch.bool)
        for i, frame in enumerate(frames):
            sees[i, list(frame.sees)] = True
        sees[start:, list(sees_now)] = True
        video = torch.cat([f.latent for f in frames] + [x], dim=2)
        times = torch.cat([torch.full((batch, start), float(context_noise)), torch.full((batch, x.shape[2]), t)], 1)
        outs = []
        for half in (0, 1) if guided else (0,):
            texts = [f.text[half].expand(batch, -1, -1) for f in frames]
            texts += [current_text[half].expand(batch, -1, -1)] * x.shape[2]
            with per_frame_pass(model, texts, sees), torch.no_grad():
                outs.append(model(video, times, texts[0])[:, :, start:])
        return outs[0] if not guided else outs[1] + cfg_scale * (outs[0] - outs[1])

    def add(latents, current_text):
        make_room(latents.shape[2])
        sees = frozenset(held) | set(range(len(frames), len(frames) + latents.shape[2]))
        for f in range(latents.shape[2]):
            frames.append(Frame(latents[:, :, f:f + 1], current_text, sees))
        held.extend(range(len(frames) - latents.shape[2], len(frames)))

    current = (context, negative)
    if prefix is not None:
        for start in range(0, prefix.shape[2], CHUNK):
            add(prefix[:, :, start:start + CHUNK], current)
    switch_at = {s.frame: (s.context, negative if s.negative_context is None else s.negative_context)
                 for s in switches}
    outputs = []
    for index in range(num_frames // CHUNK):
        if index * CHUNK in switch_at:
            current = switch_at[index * CHUNK]
            if recache:
                redo = [i for i in held if not (dropped and i < sink)]
                for i in set(held) - set(redo):  # the reference is exact while kept keys saw no redone frame
                    assert not frames[i].sees & set(redo) - {i}, "reference cannot model this re-cache"
                for i in redo:
                    frames[i].text, frames[i].sees = current, frozenset(held)
        make_room(CHUNK)
        sees_now = set(held) | set(range(len(frames), len(frames) + CHUNK))
        x = noise()
        steps = plan.timesteps_for_chunk(index)
        for k, t in enumerate(steps):
            x0 = x - timestep_to_sigma(t) * flow(x, t, current, sees_now)
            if k + 1 < len(steps):
                s = timestep_to_sigma(steps[k + 1])
                x = (1 - s) * x0 + s * noise()
        outputs.append(x0)
        add(x0, current)
    return torch.cat(outputs, dim=2)


def ours(model, context, frames, seeds=(1, 2), plan="1*", **kwargs):
    return generate_latents(model, plan=parse_plan(plan), context=context, num_frames=frames, latent_height=H,
                            latent_width=W, seeds=list(seeds), **kwargs)


@pytest.mark.parametrize("recache", [True, False])
def test_two_switches_match_the_reference(model, recache, one_torch_thread):
    first, second, third = text(model, 1), text(model, 2), text(model, 3)
    switches = [PromptSwitch(2, second), PromptSwitch(6, third)]
    got = ours(model, first, 8, prompt_switches=switches, recache=recache)
    expected = reference_video(model, parse_plan("1*"), first, 8, [1, 2], switches=switches, recache=recache)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    plain = ours(model, first, 8)
    assert torch.equal(got[:, :, :2], plain[:, :, :2])  # a switch changes nothing before it
    assert (got[:, :, 2:] - plain[:, :, 2:]).abs().max() > 1e-2


def test_recache_and_plain_switch_differ(model, one_torch_thread):
    """The re-cache is not a no-op: after the switch the two videos part (and both are checked
    against the reference above)."""
    first, second = text(model, 1), text(model, 2)
    switch = [PromptSwitch(4, second)]
    recached = ours(model, first, 8, prompt_switches=switch)
    plain = ours(model, first, 8, prompt_switches=switch, recache=False)
    assert torch.equal(recached[:, :, :4], plain[:, :, :4])
    assert (recached[:, :, 4:] - plain[:, :, 4:]).abs().max() > 1e-3


def test_switch_in_a_rolling_window_with_sink_matches_the_reference(model, one_torch_thread):
    """Window 4 frames, sink 2: the switch at 2 re-caches every held frame; at 6 (after frames
    2-3 left the window) only the frames after the sink."""
    first, second, third = text(model, 1), text(model, 2), text(model, 3)
    switches = [PromptSwitch(2, second), PromptSwitch(6, third)]
    got = ours(model, first, 10, prompt_switches=switches, max_cache_frames=4, sink_frames=2)
    expected = reference_video(model, parse_plan("1*"), first, 10, [1, 2], switches=switches, window=4, sink=2)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_switch_with_prefix_cfg_context_noise_and_new_negative_matches_the_reference(model, one_torch_thread):
    first, second, negative, second_negative = (text(model, s) for s in (1, 2, 4, 5))
    prefix = torch.randn(2, 16, 2, H, W, generator=torch.Generator().manual_seed(3))
    switches = [PromptSwitch(4, second, negative_context=second_negative)]
    kwargs = dict(negative_context=negative, cfg_scale=2.5, context_noise=100.0, prefix=prefix)
    got = ours(model, first, 6, plan="2", prompt_switches=switches, **kwargs)
    expected = reference_video(model, parse_plan("2"), first, 6, [1, 2], switches=switches, negative=negative,
                               cfg_scale=2.5, context_noise=100.0, prefix=prefix)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("recache", [False, True])
def test_plain_switch_keeps_the_cache_and_recache_is_one_call_per_switch(model, recache):
    first, second, third = text(model, 1), text(model, 2), text(model, 3)
    switches = [PromptSwitch(2, second), PromptSwitch(6, third)]
    calls, events = [], []
    forward = model.forward

    def logged(x, timestep, context, **kwargs):
        calls.append((kwargs.get("recache", False), kwargs["frame_offset"], x.shape[2]))
        return forward(x, timestep, context, **kwargs)

    with mock.patch.object(model, "forward", logged):
        list(sample_video(model, plan=parse_plan("1*"), context=first, num_frames=8, latent_height=H,
                          latent_width=W, seeds=[0], prompt_switches=switches, recache=recache,
                          callback=events.append))
    # 1* over 4 chunks: 4 + 1 + 1 + 1 steps and 3 cache fills, plus one re-cache per switch
    expected_calls = 10 + (2 if recache else 0)
    assert len(calls) == expected_calls and events[-1].total_calls == expected_calls
    recaches = [c for c in calls if c[0]]  # (recache, first frame, frames): every frame held so far
    assert recaches == ([(True, 0, 2), (True, 0, 6)] if recache else [])


def test_memory_estimate_counts_the_recache_pass(model):
    sizes = dict(batch=1, latent_frames=12, latent_height=H, latent_width=W)
    plain = estimate_memory(model.config, **sizes)
    assert estimate_memory(model.config, recache_frames=CHUNK, **sizes).activations == plain.activations
    assert estimate_memory(model.config, recache_frames=10, **sizes).activations > plain.activations


@pytest.mark.parametrize("switches, message", [
    ([PromptSwitch(3, None)], "prompt switch at frame 3 is not at a chunk start: use a multiple of chunk_frames=2"),
    ([PromptSwitch(0, None)], "prompt switch at frame 0 is outside the video"),
    ([PromptSwitch(8, None)], "prompt switch at frame 8 is outside the video: use a generated latent frame in 1..7"),
    ([PromptSwitch(4, None), PromptSwitch(2, None)], "increasing frame order, got frame 2 after 4"),
    ([PromptSwitch(2, None), PromptSwitch(2, None)], "increasing frame order, got frame 2 after 2"),
    ([(2, None)], "prompt_switches holds PromptSwitch(frame, context) entries, got tuple"),
    ([PromptSwitch(2.0, None)], "a prompt switch's frame is a latent frame index (an int), got 2.0"),
    ([PromptSwitch(2, "wide")], "prompt switch at frame 2: context must be (B, L, 32) with B = 1 or 2, got (1, 5, 7)"),
    ([PromptSwitch(2, "batch")], "prompt switch at frame 2: context must be (B, L, 32) with B = 1 or 2, got (3, 5, 32)"),
    ([PromptSwitch(2, "ok", negative_context="ok")], "has a negative_context but the call is not guided"),
])
def test_bad_switches_are_refused_in_one_line_before_any_model_call(model, switches, message):
    tensors = {None: text(model, 2), "ok": text(model, 2), "wide": torch.zeros(1, 5, 7),
               "batch": torch.zeros(3, 5, 32)}
    switches = [s if not isinstance(s, PromptSwitch) else
                PromptSwitch(s.frame, tensors[s.context], s.negative_context and tensors[s.negative_context])
                for s in switches]
    with mock.patch.object(model, "forward", side_effect=AssertionError("no model call expected")):
        with pytest.raises(ValueError) as error:
            ours(model, text(model, 1), 8, prompt_switches=switches)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_cache_rewrite_needs_held_frames(model):
    cache = model.new_kv_cache(batch_size=1, capacity_frames=4, latent_height=H, latent_width=W)
    with pytest.raises(ValueError, match="cannot re-cache 2 frames: the cache holds 0"):
        cache.begin_rewrite(2)
    cache.begin(2, commit=True)
    cache.finish()
    cache.begin_rewrite(2)  # the held frames, in place: the length does not change
    cache.finish()
    assert cache.length_frames == 2 and cache.recache_frames() == 2


def test_switch_after_a_start_image_recomputes_it_too(model, one_torch_thread):
    """Image-to-video: the start frame is held like a prefix, so the re-cache recomputes it (at
    context_noise, 0 here, the timestep it was first written with)."""
    first, second = text(model, 1), text(model, 2)
    start = torch.randn(1, 16, 1, H, W, generator=torch.Generator().manual_seed(6))
    switches = [PromptSwitch(2, second)]
    got = ours(model, first, 6, start_latents=start, prompt_switches=switches)
    assert torch.equal(got[:, :, :1], start.expand(2, -1, -1, -1, -1))
    expected = reference_video(model, parse_plan("1*"), first, 6, [1, 2], switches=switches,
                               prefix=start.expand(2, -1, -1, -1, -1))
    torch.testing.assert_close(got[:, :, 1:], expected, rtol=1e-4, atol=1e-4)
