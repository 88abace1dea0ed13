"""Sinks that move with the window: Infinite Forcing's V-sink and Reward Forcing's EMA-Sink.

Both sample with Self Forcing's chunk loop and a rolling KV cache whose first `sink_frames`
stay (Infinite Forcing's release: a 6-frame window with 1 sink frame; Reward Forcing's: 9 with
3). Both differ from Self Forcing's rolling cache (`KVCache` with `rolling=True`) by RoPE
re-indexing: the references store keys before RoPE and rotate the sink and the window at
positions 0, 1, ... on every pass, so the sink always sits just before the oldest kept frame
(positions never exceed the window, however long the video). `RepositionedSinkCache` does that
alone (Infinite Forcing). Reward Forcing adds EMA-Sink (`EmaSinkCache`): when frames drop out of
the window, the sink's keys and values become alpha * sink + (1 - alpha) * evicted (alpha
0.999); when the evicted block is not the sink's size, its first frames replace the sink's.

Keys here arrive after RoPE at their absolute positions, as the model gives them; attention
depends only on the difference of query and key positions, so moving the sink to sit just
before the oldest kept frame (a time-axis rotation) is the references' re-indexing. The sink is
held as if rotated at positions 0.. so that averaging keys of different frames is the
reference's averaging of un-rotated keys (rotation is linear).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import torch

from .attention import apply_rotary
from .kv_cache import KVCache
from .rolling_cache import FrameRope, time_shift
from .rolling_forcing import frame_rope_of
from .sampler import sample_video

EMA_ALPHA = 0.999  # the reference's compression_alpha


class RepositionedSinkCache(KVCache):
    """A rolling cache whose sink sits just before the oldest kept frame (Infinite Forcing's V-sink)."""

    def __init__(self, *, frame_rope: FrameRope, **kv_cache_arguments):
        super().__init__(rolling=True, **kv_cache_arguments)
        if self.sink_frames < 1:
            raise ValueError("a moving sink needs sink_frames >= 1")
        self.frame_rope = frame_rope
        self._sink_rotation: tuple[torch.Tensor, torch.Tensor] | None = None

    def begin(self, num_frames: int, *, commit: bool) -> None:
        super().begin(num_frames, commit=commit)  # may evict (and, in a subclass, fold into the sink)
        moved = self.evicted_frames  # the sink sits just before the oldest kept frame
        self._sink_rotation = time_shift(self.frame_rope, self.sink_frames, 0, moved) if moved else None

    def update(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = super().update(layer, keys, values)
        if self._sink_rotation is None:
            return keys, values  # nothing dropped yet: the sink is where it was generated
        sink = self.sink_frames * self.tokens_per_frame
        cos, sin = self._sink_rotation
        return torch.cat([apply_rotary(keys[:, :sink], cos, sin), keys[:, sink:]], dim=1), values


class EmaSinkCache(RepositionedSinkCache):
    """The moving sink that also absorbs what the window evicts (Reward Forcing's EMA-Sink)."""

    def __init__(self, *, frame_rope: FrameRope, alpha: float = EMA_ALPHA, **kv_cache_arguments):
        super().__init__(frame_rope=frame_rope, **kv_cache_arguments)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"the EMA weight alpha must lie in [0, 1] (the reference's 0.999), got {alpha}")
        self.alpha = alpha

    def _evict(self, num_frames: int) -> None:
        """Blend the frames about to drop into the sink, then roll as `KVCache` does."""
        tpf, sink = self.tokens_per_frame, self.sink_frames
        frames = min(num_frames, sink)
        first = self.sink_frames + self.evicted_frames  # absolute frame of the oldest non-sink frame
        cos, sin = time_shift(self.frame_rope, frames, first, 0)
        evicted = slice(sink * tpf, (sink + frames) * tpf)
        keys = self.keys[:, :, evicted]
        moved = apply_rotary(keys.flatten(0, 1), cos, sin).view_as(keys)
        sink_tokens = slice(0, frames * tpf)
        if num_frames == sink:
            self.keys[:, :, sink_tokens] = self.alpha * self.keys[:, :, sink_tokens] + (1 - self.alpha) * moved
            self.values[:, :, sink_tokens] = (self.alpha * self.values[:, :, sink_tokens]
                                              + (1 - self.alpha) * self.values[:, :, evicted])
        else:
            self.keys[:, :, sink_tokens] = moved
            self.values[:, :, sink_tokens] = self.values[:, :, evicted]
        super()._evict(num_frames)


def sample_ema_sink_video(model, *, window_frames: int, sink_frames: int, alpha: float = EMA_ALPHA,
                          **sample_video_arguments) -> Iterator[torch.Tensor]:
    """`asd_core.sampler.sample_video` with Reward Forcing's EMA-Sink window (same arguments, and
    `window_frames` / `sink_frames` / `alpha` for the cache)."""
    return _sample_with_moving_sink(model, partial(EmaSinkCache, alpha=alpha), window_frames=window_frames,
                                    sink_frames=sink_frames, **sample_video_arguments)


def sample_repositioned_sink_video(model, *, window_frames: int, sink_frames: int,
                                   **sample_video_arguments) -> Iterator[torch.Tensor]:
    """`asd_core.sampler.sample_video` with Infinite Forcing's V-sink window: the sink stays the
    first frames, re-positioned just before the oldest kept frame."""
    return _sample_with_moving_sink(model, RepositionedSinkCache, window_frames=window_frames,
                                    sink_frames=sink_frames, **sample_video_arguments)


def _sample_with_moving_sink(model, make_cache, *, window_frames: int, sink_frames: int, num_frames: int,
                             latent_height: int, latent_width: int, seeds, negative_context=None,
                             cfg_scale: float = 1.0, **sample_video_arguments) -> Iterator[torch.Tensor]:
    """A video that fits the window never evicts, so it is Self Forcing's full-cache sampling."""
    seeded = [sample_video_arguments.get(name) for name in ("prefix", "start_latents")]
    video_frames = num_frames + sum(latents.shape[2] for latents in seeded if latents is not None)
    common = dict(num_frames=num_frames, latent_height=latent_height, latent_width=latent_width, seeds=seeds,
                  negative_context=negative_context, cfg_scale=cfg_scale, max_cache_frames=window_frames,
                  sink_frames=sink_frames, **sample_video_arguments)
    if video_frames <= window_frames:
        return sample_video(model, **common)
    config = model.config
    guided = negative_context is not None and cfg_scale != 1.0
    cache = make_cache(
        frame_rope=frame_rope_of(model, latent_height, latent_width), num_layers=config.num_layers,
        batch_size=2 * len(seeds) if guided else len(seeds), capacity_frames=window_frames,
        tokens_per_frame=config.tokens_per_frame(latent_height, latent_width), num_heads=config.num_attention_heads,
        head_dim=config.attention_head_dim, dtype=model.dtype, device=model.device, sink_frames=sink_frames,
    )
    return sample_video(model, cache=cache, **common)
