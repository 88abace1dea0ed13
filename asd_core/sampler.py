"""The causal chunk loop: Self Forcing's few-step sampler with per-chunk step plans (FFE).

For each chunk of `chunk_frames` latent frames: start from noise; at each timestep of the
plan predict x0 and re-noise it to the next timestep with fresh noise; the last x0 is the
chunk, yielded at once. Then one more pass on the clean chunk, labelled timestep 0 (or
`context_noise`, with no noise added, as Self Forcing's inference pipeline does), writes its
keys and values into the KV cache for the chunks after it. Prompt switches (with LongLive's
KV re-cache) change the text from a chunk on: `asd_core.prompt_switch`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .kv_cache import KVCache
from .prompt_switch import PromptSwitch, RecentFrames, check_prompt_switches, largest_recache
from .request import API_NAMES, check_request, check_seed
from .schedule import StepPlan, timestep_to_sigma
from .start_image import START_FILL_TIMESTEP, check_start_latents


class SamplingCancelled(Exception):
    """Raised between model calls when `should_cancel()` says so."""


class NonFiniteOutput(ValueError):
    """A finished chunk holds NaN or inf: refused rather than handed on as a black or garbage video."""

    def __init__(self, chunk: int, num_chunks: int):
        self.chunk, self.num_chunks = chunk, num_chunks
        super().__init__(f"the model produced NaN or infinite values in chunk {chunk + 1} of {num_chunks}: check "
                         "the checkpoint's weights, the dtype (float16 can overflow) and the CFG scale")


@dataclass
class SamplerProgress:
    call: int  # model calls done so far (1-based after the call)
    total_calls: int
    chunk: int  # chunk index the call belonged to (-1 for prefix frames)
    num_chunks: int
    finished_chunk: torch.Tensor | None = None  # (B, C, f, H, W) when a chunk just finished


def check_video_shape(model, *, num_frames: int, latent_height: int, latent_width: int, seeds: Sequence[int],
                      guided: bool = False, context_noise: float = 0.0, cfg_scale: float = 1.0,
                      prefix_frames: int = 0, max_cache_frames: int | None = None, sink_frames: int | None = None,
                      chunk_frames: int | None = None, reusable_cache: KVCache | None = None,
                      recache_frames: int = 0) -> None:
    """Reject a request the chunking, RoPE, the cache window or the device's memory cannot take,
    before any model runs (the rules live in `asd_core.request`, shared with the CLI and nodes).

    `reusable_cache`: a cache this call may reuse; its bytes are already allocated, so they count
    as available rather than needed twice. `recache_frames`: the largest re-cache pass (prompt switches).
    """
    for seed in seeds:
        check_seed(seed, "seeds")
    held = reusable_cache.nbytes() if reusable_cache is not None else 0
    check_request(model.config, frames=num_frames, width=latent_width, height=latent_height, batch=len(seeds),
                  guided=guided, context_noise=context_noise, cfg_scale=cfg_scale, prefix_frames=prefix_frames,
                  window_frames=max_cache_frames, sink_frames=sink_frames, chunk_frames=chunk_frames,
                  device=model.device, dtype=model.dtype, held_bytes=held, recache_frames=recache_frames,
                  names=API_NAMES)


def sample_video(
    model,
    *,
    plan: StepPlan,
    context: torch.Tensor,
    num_frames: int,
    latent_height: int,
    latent_width: int,
    seeds: Sequence[int],
    negative_context: torch.Tensor | None = None,
    cfg_scale: float = 1.0,
    context_noise: float = 0.0,
    prefix: torch.Tensor | None = None,
    chunk_frames: int | None = None,
    max_cache_frames: int | None = None,
    sink_frames: int | None = None,
    cache: KVCache | None = None,
    callback: Callable[[SamplerProgress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    prompt_switches: Sequence[PromptSwitch] = (),
    recache: bool = True,
    start_latents: torch.Tensor | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the clean latents (B, C, chunk_frames, H, W) of each chunk, in order, float32 on the CPU.

    seeds: one per sample; each sample draws its noise from its own generator, so a
      sample's video depends on its seed only (same seed, same video, bitwise on CPU).
    context: (B or 1, L, text_dim) text embeddings; negative_context + cfg_scale != 1 turns
      on classifier-free guidance (off for distilled models).
    context_noise: the timestep in [0, 1000] the cache-filling pass tells the model; the chunk
      itself stays clean (Self Forcing's inference; 0 is its default).
    prefix: (B, C, P, H, W) clean latents of a video to continue; they fill the cache first.
    chunk_frames: latent frames generated per chunk (default: the model's trained chunk; 1 =
      frame-wise). The cached path needs no mask, so any size runs on the same weights.
    max_cache_frames: None sizes the cache for the whole video; a number makes it a rolling
      window of that many frames keeping `sink_frames` (default: one chunk) for ever.
    cache: a KVCache to reuse between videos (`kv_cache_for_video` makes one); default: a new one.
    prompt_switches: PromptSwitch(frame, context[, negative_context]) entries: from generated
      latent frame `frame` (a chunk start, increasing) on, that text conditions the video.
    recache: at each switch, first recompute the cached frames' keys and values under the new
      prompt (LongLive's KV re-cache: one more model call per switch); False keeps the old cache.
    start_latents: (B or 1, C, F0, H, W) clean latents of a start image (F0 = 1) or video:
      yielded first as they are, then they fill the cache at timestep 0 (image-to-video as
      Causal Forcing does it; `asd_core.start_image`). `num_frames` counts the generated frames
      after them, and an FFE plan's first chunk is the first generated one.

    Latents stay on the model's device while a chunk is denoised (noise is drawn on the CPU per
    chunk and copied once), and each finished chunk moves to the CPU, so a long video's latents
    never hold accelerator memory and no model call waits on the host.
    """
    config = model.config
    chunk_frames = chunk_frames or config.chunk_frames
    batch = len(seeds)
    guided = negative_context is not None and cfg_scale != 1.0
    start = None if start_latents is None else check_start_latents(
        start_latents, batch=batch, channels=config.in_channels, latent_height=latent_height,
        latent_width=latent_width, prefix=prefix)
    # Start latents fill the cache as a prefix does, labelled timestep 0, and are also returned.
    seeding, seeding_timestep = (prefix, context_noise) if start is None else (start, START_FILL_TIMESTEP)
    prefix_frames = 0 if seeding is None else seeding.shape[2]
    switches = check_prompt_switches(prompt_switches, num_frames=num_frames, chunk_frames=chunk_frames, batch=batch,
                                     text_dim=config.text_dim, guided=guided)
    capacity = _cache_geometry(model, prefix_frames + num_frames, max_cache_frames, sink_frames, chunk_frames)[0]
    recache_frames = largest_recache(switches, prefix_frames=prefix_frames, cached_frames=capacity) if recache else 0
    check_video_shape(model, num_frames=num_frames, latent_height=latent_height, latent_width=latent_width,
                      seeds=seeds, guided=guided, context_noise=context_noise, cfg_scale=cfg_scale,
                      prefix_frames=prefix_frames, max_cache_frames=max_cache_frames, sink_frames=sink_frames,
                      chunk_frames=chunk_frames, reusable_cache=cache, recache_frames=recache_frames)
    contexts = batch_contexts(context, negative_context if guided else None, batch)
    # chunk index -> the conditioning it switches to (each switch's negative defaults to the call's)
    switch_contexts = {
        s.frame // chunk_frames: batch_contexts(
            s.context, (negative_context if s.negative_context is None else s.negative_context) if guided else None,
            batch)
        for s in switches
    }
    if prefix is not None and (prefix.shape[0] != batch or prefix.shape[1] != config.in_channels
                               or prefix.shape[3:] != (latent_height, latent_width)):
        raise ValueError(
            f"prefix latents {tuple(prefix.shape)} do not match batch {batch}, {config.in_channels} channels "
            f"and latent size {latent_height}x{latent_width}"
        )

    wanted = dict(batch=2 * batch if guided else batch, video_frames=prefix_frames + num_frames,
                  latent_height=latent_height, latent_width=latent_width, max_cache_frames=max_cache_frames,
                  sink_frames=sink_frames, chunk_frames=chunk_frames)
    if cache is None:
        cache = kv_cache_for_video(model, **wanted)
    elif not cache_fits(cache, model, **wanted):
        raise ValueError("the KV cache passed does not fit this request (batch, size, window or dtype differ); "
                         "make one with kv_cache_for_video for it, or pass none")
    device = model.device
    contexts = contexts.to(device)
    generators = [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]
    num_chunks = num_frames // chunk_frames
    prefix_calls = -(-prefix_frames // chunk_frames)
    # the last chunk needs no cache fill; a re-cache is one call per switch
    total_calls = prefix_calls + plan.model_calls(num_chunks) - 1 + (len(switches) if recache else 0)
    calls = 0
    recent = RecentFrames(cache.capacity_frames) if switches and recache else None

    def predict(x: torch.Tensor, timestep: float, frame_offset: int, update_cache: bool, chunk: int,
                recache_pass: bool = False) -> torch.Tensor:
        """One transformer pass (two halves of one batch under CFG); returns x0 in float32."""
        nonlocal calls
        if should_cancel is not None and should_cancel():
            raise SamplingCancelled(f"cancelled after {calls} of {total_calls} model calls")
        model_in = torch.cat([x, x]) if guided else x
        rewrite = {"recache": True} if recache_pass else {}  # the keyword only where a re-cache needs it
        with torch.no_grad():
            flow = model(model_in, timestep, contexts, frame_offset=frame_offset, kv_cache=cache,
                         update_cache=update_cache, **rewrite).float()
        if guided:
            cond, uncond = flow.chunk(2)
            flow = uncond + cfg_scale * (cond - uncond)
        calls += 1
        if callback is not None:
            callback(SamplerProgress(calls, total_calls, chunk, num_chunks))
        return x - timestep_to_sigma(timestep) * flow

    cache.reset()
    if start is not None:
        yield start.clone()  # a copy: the caller may edit what it gets while the cache is filled from `start`
    for first in range(0, prefix_frames, chunk_frames):
        piece = seeding[:, :, first : first + chunk_frames].to(device, torch.float32)
        predict(piece, seeding_timestep, first, True, -1)
        if recent is not None:  # a re-cache recomputes them too (at context_noise, as LongLive does every frame)
            recent.add(piece)

    shape = (batch, config.in_channels, chunk_frames, latent_height, latent_width)
    for chunk in range(num_chunks):
        offset = prefix_frames + chunk * chunk_frames
        if chunk in switch_contexts:
            contexts = switch_contexts[chunk].to(device)
            if recent is not None:  # LongLive's re-cache: the held frames' keys under the new prompt
                count = cache.recache_frames()
                predict(recent.last(count).to(device), context_noise, offset - count, False, chunk, recache_pass=True)
        timesteps = plan.timesteps_for_chunk(chunk)
        # Every draw of the chunk at once, in each generator's order (start noise, then one per
        # re-noise): one host-to-device copy per chunk instead of one per step.
        noises = draw_noises(shape, generators, len(timesteps)).to(device)  # (steps, B, C, f, H, W)
        x = noises[0]
        for step, timestep in enumerate(timesteps):
            x0 = predict(x, timestep, offset, False, chunk)
            if step + 1 < len(timesteps):
                sigma = timestep_to_sigma(timesteps[step + 1])
                x = (1 - sigma) * x0 + sigma * noises[step + 1]
        finished = x0.cpu()
        if not torch.isfinite(finished).all():  # on the CPU already: no extra wait on the device
            raise NonFiniteOutput(chunk, num_chunks)
        if callback is not None:
            callback(SamplerProgress(calls, total_calls, chunk, num_chunks, finished_chunk=finished))
        yield finished  # before the cache fill: the caller has the chunk one model pass sooner
        if chunk + 1 < num_chunks:
            predict(x0, context_noise, offset, True, chunk)  # the clean chunk fills the cache
            if recent is not None:
                recent.add(finished)


def generate_latents(model, **kwargs) -> torch.Tensor:
    """All chunks of `sample_video` concatenated: (B, C, F, H, W)."""
    return torch.cat(list(sample_video(model, **kwargs)), dim=2)


def draw_noise(shape: tuple[int, ...], generators: list[torch.Generator]) -> torch.Tensor:
    """Noise drawn on the CPU from each sample's own generator: device-independent, batch-independent."""
    return torch.stack([torch.randn(shape[1:], generator=g) for g in generators])


def draw_noises(shape: tuple[int, ...], generators: list[torch.Generator], count: int) -> torch.Tensor:
    """`count` successive `draw_noise` results, stacked: (count, *shape), same values in the same order."""
    return torch.stack([draw_noise(shape, generators) for _ in range(count)])


def renoise(x0: torch.Tensor, timestep: float, generators: list[torch.Generator]) -> torch.Tensor:
    sigma = timestep_to_sigma(timestep)
    return (1 - sigma) * x0 + sigma * draw_noise(tuple(x0.shape), generators)


def batch_contexts(context: torch.Tensor, negative: torch.Tensor | None, batch: int) -> torch.Tensor:
    """(B, L, D) conditioning, with the unconditional half appended under CFG (padded to one length)."""
    parts = [context] if negative is None else [context, negative]
    for part in parts:
        if part.ndim != 3 or part.shape[0] not in (1, batch):
            raise ValueError(
                f"text conditioning must be (B, L, D) with B = 1 or {batch}, got {tuple(part.shape)}"
            )
    length = max(p.shape[1] for p in parts)
    parts = [F.pad(p, (0, 0, 0, length - p.shape[1])).expand(batch, -1, -1) for p in parts]
    return torch.cat(parts)


def _cache_geometry(model, video_frames: int, max_cache_frames: int | None, sink_frames: int | None,
                    chunk_frames: int | None) -> tuple[int, bool, int]:
    """(capacity frames, rolling, sink frames) of the cache a video needs."""
    rolling = max_cache_frames is not None and max_cache_frames < video_frames
    capacity = max_cache_frames if rolling else video_frames
    sink = (chunk_frames or model.config.chunk_frames) if sink_frames is None else sink_frames
    return capacity, rolling, sink if rolling else 0


def kv_cache_for_video(model, *, batch: int, video_frames: int, latent_height: int, latent_width: int,
                       max_cache_frames: int | None = None, sink_frames: int | None = None,
                       chunk_frames: int | None = None) -> KVCache:
    """A KV cache for one request to `sample_video`: whole video, or a rolling window with sinks.

    Pass it back as `cache=` to sample more videos of that shape without reallocating; `batch`
    counts both CFG halves (2 x seeds when guided).
    """
    capacity, rolling, sink = _cache_geometry(model, video_frames, max_cache_frames, sink_frames, chunk_frames)
    return model.new_kv_cache(batch_size=batch, capacity_frames=capacity, latent_height=latent_height,
                              latent_width=latent_width, rolling=rolling, sink_frames=sink)


def cache_fits(cache: KVCache, model, *, batch: int, video_frames: int, latent_height: int, latent_width: int,
               max_cache_frames: int | None = None, sink_frames: int | None = None,
               chunk_frames: int | None = None) -> bool:
    """True when `cache` is what `kv_cache_for_video` would make for these arguments."""
    capacity, rolling, sink = _cache_geometry(model, video_frames, max_cache_frames, sink_frames, chunk_frames)
    tokens = model.config.tokens_per_frame(latent_height, latent_width)
    return (cache.matches(batch_size=batch, tokens_per_frame=tokens, dtype=model.dtype, device=model.device)
            and (cache.capacity_frames, cache.rolling, cache.sink_frames) == (capacity, rolling, sink))
