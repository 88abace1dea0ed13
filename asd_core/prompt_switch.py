"""Prompt switches in the chunk loop: which text conditions which chunk, and LongLive's KV re-cache.

A switch at generated latent frame `frame` conditions every chunk from that frame on with its
context. With re-cache (LongLive's interactive inference, `recache=True`), the frames the KV
cache holds are first recomputed under the new prompt, so the chunks after the switch do not
attend to keys and values written under the old one: one pass over their clean latents at
their own frame positions, labelled `context_noise`, in which every recomputed frame sees the
others and the sink (no causal mask, as LongLive's pass through its cache has none). Once a
rolling window has dropped frames the sink is kept as first written (LongLive's default,
`global_sink`); before that every held frame is recomputed. Without re-cache the old keys stay
and only the chunks after the switch read the new prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PromptSwitch:
    """From generated latent frame `frame` on (a chunk start), condition on `context` (B or 1, L, D);
    `negative_context` replaces the call's negative prompt from there (None keeps it)."""

    frame: int
    context: torch.Tensor
    negative_context: torch.Tensor | None = None


def check_prompt_switches(switches: Sequence[PromptSwitch], *, num_frames: int, chunk_frames: int, batch: int,
                          text_dim: int, guided: bool) -> tuple[PromptSwitch, ...]:
    """The switches as a tuple, or a one-line ValueError naming the first bad one and the fix."""
    switches = tuple(switches)
    previous = 0
    for switch in switches:
        if not isinstance(switch, PromptSwitch):
            raise ValueError(f"prompt_switches holds PromptSwitch(frame, context) entries, got {type(switch).__name__}")
        frame = switch.frame
        if isinstance(frame, bool) or not isinstance(frame, int):
            raise ValueError(f"a prompt switch's frame is a latent frame index (an int), got {frame!r}")
        if not 0 < frame < num_frames:
            raise ValueError(f"prompt switch at frame {frame} is outside the video: use a generated latent frame "
                             f"in 1..{num_frames - 1} (frame 0's prompt is `context`)")
        if frame % chunk_frames:
            lower = frame - frame % chunk_frames
            raise ValueError(f"prompt switch at frame {frame} is not at a chunk start: use a multiple of "
                             f"chunk_frames={chunk_frames} (e.g. {lower or chunk_frames})")
        if frame <= previous:
            raise ValueError(f"prompt switches must be in increasing frame order, got frame {frame} after {previous}")
        previous = frame
        for name, tensor in (("context", switch.context), ("negative_context", switch.negative_context)):
            if tensor is None:
                continue
            if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3 or tensor.shape[0] not in (1, batch) \
                    or tensor.shape[2] != text_dim:
                shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise ValueError(f"prompt switch at frame {frame}: {name} must be (B, L, {text_dim}) with B = 1 or "
                                 f"{batch}, got {shape}")
        if switch.negative_context is not None and not guided:
            raise ValueError(f"prompt switch at frame {frame} has a negative_context but the call is not guided: "
                             "pass negative_context and cfg_scale != 1 to the call too, or drop it")
    return switches


def largest_recache(switches: Sequence[PromptSwitch], *, prefix_frames: int, cached_frames: int) -> int:
    """Latent frames of the largest re-cache pass these switches cause (0 without switches)."""
    if not switches:
        return 0
    return min(cached_frames, prefix_frames + max(switch.frame for switch in switches))


class RecentFrames:
    """The clean latents (B, C, F, H, W) of the last `capacity` frames, on the CPU: the frames a
    re-cache can recompute (a rolling cache never holds more than its capacity)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.frames: torch.Tensor | None = None

    def add(self, latents: torch.Tensor) -> None:
        latents = latents.detach().to("cpu", torch.float32)
        joined = latents if self.frames is None else torch.cat([self.frames, latents], dim=2)
        self.frames = joined[:, :, -self.capacity:].contiguous()

    def last(self, count: int) -> torch.Tensor:
        if self.frames is None or count > self.frames.shape[2]:
            raise RuntimeError(f"re-cache asked for {count} frames, {0 if self.frames is None else self.frames.shape[2]} kept")
        return self.frames[:, :, self.frames.shape[2] - count:]
