"""The attention memory of Rolling Forcing: a first-chunk attention sink with re-indexed RoPE,
the latest clean frames, and a bounded attention span.

Rolling Forcing (TencentARC/RollingForcing) denoises a window of several chunks in one pass.
What that window attends to is not Self Forcing's rolling cache, so it has its own object with
the interface the model drives (`begin` / `update` / `finish`, as `KVCache`):

* denoising a window that starts at frame s > 0: keys = the anchor (the first chunk, clean)
  moved by RoPE to sit just before the working frames, then the working frames (the latest
  clean frames before s, as many as fit in `attention_frames` after the anchor and the
  window), then the window itself; every frame of the window sees every other (no causal mask
  inside the window). A window at s = 0 holds the anchor chunk itself and sees only itself.
* the cache-filling pass of a finished chunk: it sees the last `attention_frames` frames
  ending with itself, at the positions they were generated at (the anchor too, while it lies
  within that span), and is then kept.

Keys arrive after RoPE (the model's processor rotates them), so the anchor is moved by rotating
its time axis by the difference of positions; a rotation composes exactly, so this equals
rotating the un-rotated keys at the new position (the reference stores them un-rotated).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .attention import apply_rotary

# (frames, first frame) -> RoPE (cos, sin) tables of that many latent frames at that position
FrameRope = Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]


def time_shift(frame_rope: FrameRope, num_frames: int, from_frame: int, to_frame: int):
    """cos/sin that move keys of `num_frames` frames, rotated at `from_frame`, to `to_frame`
    (time axis only: the height/width angles cancel). Rotations compose exactly."""
    cos_a, sin_a = frame_rope(num_frames, from_frame)
    cos_b, sin_b = frame_rope(num_frames, to_frame)
    return cos_b * cos_a + sin_b * sin_a, sin_b * cos_a - cos_b * sin_a


class RollingForcingCache:
    def __init__(self, *, num_layers: int, batch_size: int, tokens_per_frame: int, num_heads: int, head_dim: int,
                 anchor_frames: int, attention_frames: int, frame_rope: FrameRope,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        if anchor_frames < 1 or attention_frames < anchor_frames:
            raise ValueError(f"attention_frames ({attention_frames}) must be at least the anchor's "
                             f"{anchor_frames} frames (one chunk)")
        self.tokens_per_frame = tokens_per_frame
        self.anchor_frames = anchor_frames
        self.attention_frames = attention_frames
        self.frame_rope = frame_rope
        # The latest clean frames after the anchor: no pass reads more than attention_frames of them.
        self.history_frames = attention_frames
        shape = (num_layers, batch_size, (anchor_frames + self.history_frames) * tokens_per_frame, num_heads, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.reset()

    def reset(self) -> None:
        self.committed_frames = 0  # clean frames kept so far (the anchor included)
        self.held_frames = 0  # of those, how many the storage still holds (anchor + latest)
        self._offset: int | None = None
        self._frames = 0
        self._commit = False
        self._anchor_rotation: tuple[torch.Tensor, torch.Tensor] | None = None

    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() * 2

    def place(self, frame_offset: int) -> None:
        """Say where the next model pass starts (the model tells the cache only its frame count)."""
        self._offset = frame_offset

    def begin(self, num_frames: int, *, commit: bool) -> None:
        if self._offset is None:
            raise RuntimeError("RollingForcingCache.place(frame_offset) must be called before each model pass")
        if commit and self._offset != self.committed_frames:
            raise RuntimeError(f"a cache fill at frame {self._offset} but {self.committed_frames} frames are kept: "
                               "chunks are kept in order, once each")
        if commit and self._offset == 0 and num_frames != self.anchor_frames:
            raise RuntimeError(f"the first chunk kept must be the {self.anchor_frames}-frame anchor")
        if not commit and self._offset not in (0, self.committed_frames):
            raise RuntimeError(f"a window at frame {self._offset} must start where the kept frames end "
                               f"({self.committed_frames})")
        self._frames, self._commit = num_frames, commit
        self._anchor_rotation = None
        if not commit and self._offset > 0:
            working = self._working_frames(num_frames)
            self._anchor_rotation = self._rotation_to(self._offset - working - self.anchor_frames)

    def update(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's keys/values (B, S, H, D) of the pass -> everything the pass attends to."""
        tpf = self.tokens_per_frame
        if keys.shape[1] != self._frames * tpf:
            raise RuntimeError("RollingForcingCache.update called with a token count that does not match begin()")
        if self._commit:
            return self._keep(layer, keys, values)
        if self._offset == 0:
            return keys, values
        anchor = slice(0, self.anchor_frames * tpf)
        cos, sin = self._anchor_rotation
        anchor_keys = apply_rotary(self.keys[layer, :, anchor], cos, sin)
        working = self._latest(self._working_frames(self._frames))
        return (torch.cat([anchor_keys, self.keys[layer, :, working], keys], dim=1),
                torch.cat([self.values[layer, :, anchor], self.values[layer, :, working], values], dim=1))

    def finish(self) -> None:
        if self._commit:
            self._advance(self._frames)
        self._offset, self._frames, self._commit = None, 0, False

    def _working_frames(self, window_frames: int) -> int:
        """Latest clean frames a window sees: what `attention_frames` leaves after anchor and window."""
        room = self.attention_frames - self.anchor_frames - window_frames
        return max(0, min(room, self.held_frames - self.anchor_frames))

    def _latest(self, frames: int) -> slice:
        end = self.held_frames * self.tokens_per_frame
        return slice(end - frames * self.tokens_per_frame, end)

    def _rotation_to(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin that move the anchor from frame 0 to `position`."""
        return time_shift(self.frame_rope, self.anchor_frames, 0, position)

    def _keep(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write a finished chunk after the kept frames (room made by `_advance`'s rolling) and
        return the last `attention_frames` frames ending with it."""
        tpf, frames = self.tokens_per_frame, self._frames
        if layer == 0:
            self._make_room(frames)
        start = self.held_frames * tpf
        self.keys[layer, :, start : start + frames * tpf] = keys
        self.values[layer, :, start : start + frames * tpf] = values
        end_frame = self.held_frames + frames
        span = min(self.attention_frames, self.committed_frames + frames)
        first = end_frame - span
        return self.keys[layer, :, first * tpf : end_frame * tpf], self.values[layer, :, first * tpf : end_frame * tpf]

    def _make_room(self, frames: int) -> None:
        """Drop the oldest frames after the anchor so that `frames` more fit (storage order = time order)."""
        capacity = self.anchor_frames + self.history_frames
        overflow = self.held_frames + frames - capacity
        if overflow <= 0:
            return
        tpf = self.tokens_per_frame
        keep_from, keep_to = (self.anchor_frames + overflow) * tpf, self.held_frames * tpf
        for store in (self.keys, self.values):
            store[:, :, self.anchor_frames * tpf : keep_to - overflow * tpf] = store[:, :, keep_from:keep_to].clone()
        self.held_frames -= overflow

    def _advance(self, frames: int) -> None:
        self.committed_frames += frames
        self.held_frames += frames
