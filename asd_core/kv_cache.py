"""Preallocated per-layer key/value cache for chunk-by-chunk causal generation.

Keys are stored after RoPE, so a cached frame keeps the position it was generated at.
One tensor pair holds every layer (`(L, B, tokens, heads, head_dim)`): resetting is a
length change, never a reallocation, and rolling moves all layers in one copy.

Rolling mode (videos longer than the cache): the first `sink_frames` frames stay forever,
the oldest of the others are dropped to make room, as Self Forcing's rolling cache does, and
LongLive's (Wan2.1 version) whenever the sink fits in the first chunk, as its release (3 and 3)
does; with a larger sink LongLive attends to the sink's still-empty (zero) slots and, after a
chunk's first denoising step, no longer writes into the sink region (its later steps and cache
fill keep the first step's keys there). This cache does not copy that: with a 9-frame window
and 6 sink frames the two are 4e-2 (relative) apart from the first chunk on.

Re-cache (a prompt switch, LongLive's KV re-cache): `begin_rewrite(n)` recomputes the
last `n` held frames in place; `recache_frames()` says which frames LongLive recomputes.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(
        self,
        *,
        num_layers: int,
        batch_size: int,
        capacity_frames: int,
        tokens_per_frame: int,
        num_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        rolling: bool = False,
        sink_frames: int = 0,
    ):
        if capacity_frames < 1:
            raise ValueError(f"capacity_frames must be >= 1, got {capacity_frames}")
        if rolling and not 0 <= sink_frames < capacity_frames:
            raise ValueError(
                f"sink_frames ({sink_frames}) must be in [0, capacity_frames={capacity_frames}) for a rolling cache"
            )
        self.capacity_frames = capacity_frames
        self.tokens_per_frame = tokens_per_frame
        self.rolling = rolling
        self.sink_frames = sink_frames if rolling else 0
        shape = (num_layers, batch_size, capacity_frames * tokens_per_frame, num_heads, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.length_frames = 0  # committed frames now held
        self.evicted_frames = 0  # frames dropped by rolling, for bookkeeping and tests
        self._pending_frames = 0  # frames of the call in progress (written, maybe not committed)
        self._commit = False
        self._rewrite = False

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    def matches(self, *, batch_size: int, tokens_per_frame: int, dtype: torch.dtype, device) -> bool:
        """True when this cache can be reused (after `reset`) for a call of that shape."""
        return (
            self.batch_size == batch_size
            and self.tokens_per_frame == tokens_per_frame
            and self.keys.dtype == dtype
            and self.keys.device == torch.device(device)
        )

    def reset(self) -> None:
        """Forget everything; the storage is kept for the next video."""
        self.length_frames = 0
        self.evicted_frames = 0
        self._pending_frames = 0
        self._commit = self._rewrite = False

    def begin(self, num_frames: int, *, commit: bool) -> None:
        """Prepare a forward pass over `num_frames` new frames; roll first if they don't fit.

        With `commit=False` (a denoising step) the new keys are visible to the call itself but
        are overwritten by the next call; `commit=True` (the clean cache-filling pass) keeps them.
        """
        if num_frames > self.capacity_frames - self.sink_frames:
            raise ValueError(
                f"a chunk of {num_frames} frames does not fit a cache of {self.capacity_frames} frames "
                f"with {self.sink_frames} sink frames; use a larger cache"
            )
        overflow = self.length_frames + num_frames - self.capacity_frames
        if overflow > 0:
            if not self.rolling:
                raise ValueError(
                    f"the KV cache holds {self.capacity_frames} latent frames but this video needs "
                    f"{self.length_frames + num_frames}; size the cache for the whole video or enable rolling"
                )
            self._evict(overflow)
        self._pending_frames = num_frames
        self._commit = commit

    def begin_rewrite(self, num_frames: int) -> None:
        """Prepare a pass that recomputes the last `num_frames` held frames (a re-cache): their
        keys replace the old ones in place, and the pass sees every held frame, itself included."""
        if not 0 < num_frames <= self.length_frames:
            raise ValueError(f"cannot re-cache {num_frames} frames: the cache holds {self.length_frames}")
        self._pending_frames, self._commit, self._rewrite = num_frames, False, True

    def _evict(self, num_frames: int) -> None:
        tpf = self.tokens_per_frame
        shift = num_frames * tpf
        end = self.length_frames * tpf
        # Move the kept frames left in blocks no longer than the shift: a block's source and
        # destination never overlap, so no temporary copy of the window is needed (memory
        # stays flat however long the video runs).
        for dst in range(self.sink_frames * tpf, end - shift, shift):
            size = min(shift, end - shift - dst)
            for store in (self.keys, self.values):
                store[:, :, dst : dst + size] = store[:, :, dst + shift : dst + shift + size]
        self.length_frames -= num_frames
        self.evicted_frames += num_frames

    def update(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this layer's new keys/values (B, S, H, D) and return everything to attend to."""
        held = self.length_frames - (self._pending_frames if self._rewrite else 0)
        start = held * self.tokens_per_frame
        end = start + keys.shape[1]
        if keys.shape[1] != self._pending_frames * self.tokens_per_frame:
            raise RuntimeError("KVCache.update called with a token count that does not match begin()")
        self.keys[layer, :, start:end] = keys
        self.values[layer, :, start:end] = values
        return self.keys[layer, :, :end], self.values[layer, :, :end]

    def finish(self) -> None:
        """End the pass started by `begin`: commit its frames if it was a cache-filling pass."""
        if self._commit:
            self.length_frames += self._pending_frames
        self._pending_frames = 0
        self._commit = self._rewrite = False

    def recache_frames(self) -> int:
        """How many of the held frames a re-cache recomputes: all of them, or, once the rolling
        window has dropped frames, all but the sink (LongLive's `global_sink`: the sink keeps
        the keys it was first written with)."""
        return self.length_frames - (self.sink_frames if self.evicted_frames else 0)

    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() * 2
