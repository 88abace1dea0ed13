"""Rolling Forcing's sampler: a window of chunks at staggered noise levels, denoised jointly.

Self Forcing (`asd_core.sampler`) finishes one chunk with all its steps before the next starts.
Rolling Forcing (TencentARC/RollingForcing) keeps a window of n = len(steps) chunks: the
newest chunk enters as noise at the first timestep, each older one sits one timestep further
on, and one model pass over the whole window (per-frame timesteps, every frame of the window
seeing every other) advances all of them by one step. After the pass the oldest chunk, at the
last timestep, is finished: it is yielded and its clean latents fill the cache (one pass at
`context_noise`, as Self Forcing's inference does); the others are re-noised to their next
timestep; the window slides by one chunk. The first chunk is kept for ever as an attention sink
whose RoPE position is moved to sit just before the other frames the window sees
(`asd_core.rolling_cache`). Each chunk still gets len(steps) model passes, but a pass covers n
chunks, so a video of C chunks takes C + n - 1 denoising passes instead of C x n.

With an FFE plan (`1*`, `2*`: more steps for the first chunk) the first chunk, the sink every
later window attends to, is denoised alone with `plan.first` (as Self Forcing's first chunk is)
and the window of len(plan.rest) chunks rolls from the second chunk on. The reference has no
such mode; with a uniform plan this module is the reference's algorithm
(`tests/test_reference_rolling_forcing.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from .rolling_cache import RollingForcingCache
from .sampler import (
    NonFiniteOutput,
    SamplerProgress,
    SamplingCancelled,
    batch_contexts,  # the same conditioning batch as Self Forcing's loop
    check_video_shape,
    draw_noise,
)
from .schedule import StepPlan, timestep_to_sigma

ATTENTION_FRAMES = 21  # the reference's attention span in latent frames (its max_attention_size)


def sample_rolling_video(
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
    chunk_frames: int | None = None,
    attention_frames: int = ATTENTION_FRAMES,
    callback: Callable[[SamplerProgress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> Iterator[torch.Tensor]:
    """Yield each chunk's clean latents (B, C, chunk_frames, H, W), float32 on the CPU, as it finishes.

    Arguments as `asd_core.sampler.sample_video`'s, plus `attention_frames`: how many latent
    frames a pass may attend to (anchor + latest clean frames + the window; the reference's 21).
    Each sample draws its noise from its own generator: per window, the new chunk's starting
    noise, then one re-noise draw per unfinished chunk, oldest first.
    """
    config = model.config
    chunk_frames = chunk_frames or config.chunk_frames
    batch = len(seeds)
    guided = negative_context is not None and cfg_scale != 1.0
    if not isinstance(attention_frames, int) or attention_frames < 2 * chunk_frames:
        raise ValueError(f"attention_frames must be at least two chunks ({2 * chunk_frames} latent frames: the "
                         f"anchor and the chunk being kept), got {attention_frames!r}")
    check_video_shape(model, num_frames=num_frames, latent_height=latent_height, latent_width=latent_width,
                      seeds=seeds, guided=guided, context_noise=context_noise, cfg_scale=cfg_scale,
                      max_cache_frames=chunk_frames + attention_frames, sink_frames=chunk_frames,
                      chunk_frames=chunk_frames)
    contexts = batch_contexts(context, negative_context if guided else None, batch).to(model.device)
    cache = rolling_cache_for_video(model, batch=2 * batch if guided else batch, latent_height=latent_height,
                                    latent_width=latent_width, chunk_frames=chunk_frames,
                                    attention_frames=attention_frames)
    generators = [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]
    shape = (batch, config.in_channels, chunk_frames, latent_height, latent_width)
    num_chunks = num_frames // chunk_frames
    alone = plan.first != plan.rest  # FFE: the first chunk is denoised on its own with plan.first
    steps = plan.rest
    rolled = num_chunks - 1 if alone else num_chunks
    total_calls = (len(plan.first) + 1 if alone else 0) + _rolling_calls(rolled, len(steps)) - 1
    calls = 0

    def predict(x: torch.Tensor, frame_timesteps: list[float], frame_offset: int, keep: bool,
                chunk: int) -> torch.Tensor:
        """One pass over x (B, C, F, H, W) with a timestep per frame; returns x0 in float32."""
        nonlocal calls
        if should_cancel is not None and should_cancel():
            raise SamplingCancelled(f"cancelled after {calls} of {total_calls} model calls")
        model_in = torch.cat([x, x]) if guided else x
        timesteps = torch.tensor(frame_timesteps, dtype=torch.float32).expand(model_in.shape[0], -1)
        cache.place(frame_offset)
        with torch.no_grad():
            flow = model(model_in, timesteps, contexts, frame_offset=frame_offset, kv_cache=cache,
                         update_cache=keep).float()
        if guided:
            cond, uncond = flow.chunk(2)
            flow = uncond + cfg_scale * (cond - uncond)
        calls += 1
        if callback is not None:
            callback(SamplerProgress(calls, total_calls, chunk, num_chunks))
        sigmas = torch.tensor([timestep_to_sigma(t) for t in frame_timesteps], device=x.device)
        return x - sigmas[None, None, :, None, None] * flow

    def finish(chunk: int, x0: torch.Tensor) -> torch.Tensor:
        finished = x0.cpu()
        if not torch.isfinite(finished).all():
            raise NonFiniteOutput(chunk, num_chunks)
        if callback is not None:
            callback(SamplerProgress(calls, total_calls, chunk, num_chunks, finished_chunk=finished))
        return finished

    def keep(chunk: int, x0: torch.Tensor) -> None:
        if chunk + 1 < num_chunks:  # the last chunk is seen by nothing after it
            predict(x0, [context_noise] * chunk_frames, chunk * chunk_frames, True, chunk)

    first_rolled = 0
    if alone:
        x = draw_noise(shape, generators).to(model.device)
        for step, timestep in enumerate(plan.first):
            x0 = predict(x, [timestep] * chunk_frames, 0, False, 0)
            if step + 1 < len(plan.first):
                sigma = timestep_to_sigma(plan.first[step + 1])
                x = (1 - sigma) * x0 + sigma * draw_noise(shape, generators).to(model.device)
        yield finish(0, x0)
        keep(0, x0)
        first_rolled = 1

    noisy: dict[int, torch.Tensor] = {}  # chunk -> its latents at its next timestep
    for window in range(_rolling_windows(rolled, len(steps))):
        newest = min(first_rolled + window, num_chunks - 1)
        oldest = max(first_rolled, first_rolled + window - len(steps) + 1)
        if first_rolled + window < num_chunks:
            noisy[newest] = draw_noise(shape, generators).to(model.device)
        chunks = range(oldest, newest + 1)
        frame_timesteps = [steps[first_rolled + window - c] for c in chunks for _ in range(chunk_frames)]
        x0 = predict(torch.cat([noisy.pop(c) for c in chunks], dim=2), frame_timesteps, oldest * chunk_frames,
                     False, oldest)
        pieces = dict(zip(chunks, x0.split(chunk_frames, dim=2)))
        for c in chunks:
            step = first_rolled + window - c
            if step + 1 < len(steps):
                sigma = timestep_to_sigma(steps[step + 1])
                noisy[c] = (1 - sigma) * pieces[c] + sigma * draw_noise(shape, generators).to(model.device)
        if first_rolled + window - oldest == len(steps) - 1:  # the oldest chunk took its last step
            yield finish(oldest, pieces[oldest])
            keep(oldest, pieces[oldest])


def generate_rolling_latents(model, **kwargs) -> torch.Tensor:
    """All chunks of `sample_rolling_video` concatenated: (B, C, F, H, W)."""
    return torch.cat(list(sample_rolling_video(model, **kwargs)), dim=2)


def rolling_cache_for_video(model, *, batch: int, latent_height: int, latent_width: int, chunk_frames: int,
                            attention_frames: int = ATTENTION_FRAMES) -> RollingForcingCache:
    """The cache of one Rolling Forcing request; its anchor is the first chunk."""
    config = model.config
    return RollingForcingCache(
        num_layers=config.num_layers, batch_size=batch,
        tokens_per_frame=config.tokens_per_frame(latent_height, latent_width),
        num_heads=config.num_attention_heads, head_dim=config.attention_head_dim, anchor_frames=chunk_frames,
        attention_frames=attention_frames, frame_rope=frame_rope_of(model, latent_height, latent_width),
        dtype=model.dtype, device=model.device,
    )


def frame_rope_of(model, latent_height: int, latent_width: int):
    """The model's RoPE tables for `frames` latent frames placed at `first_frame` (shape only, no data)."""
    def frame_rope(frames: int, first_frame: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, model.config.in_channels, frames, latent_height, latent_width)
        return model.rope(torch.empty(shape, device="meta"), first_frame)

    return frame_rope


def _rolling_windows(num_chunks: int, num_steps: int) -> int:
    """Windows (denoising passes) that take `num_chunks` chunks through `num_steps` staggered steps."""
    return num_chunks + num_steps - 1 if num_chunks else 0


def _rolling_calls(num_chunks: int, num_steps: int) -> int:
    """Denoising passes plus one cache fill per rolled chunk."""
    return _rolling_windows(num_chunks, num_steps) + num_chunks
