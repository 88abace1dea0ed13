"""Toy-domain data for the stages: synthetic videos as pixels, and a pool of their latents.

Videos come from `asd_core.toy.domain` by (seed, index), so every process and every resumed
run draws the same clip for the same index; ranks take disjoint indices.
"""

from __future__ import annotations

import numpy as np
import torch

from asd_core.toy.domain import sample_video
from asd_core.vae import LatentCodec, video_to_pixels

TRAIN_STREAM = 11  # domain stream for training clips (evaluation references use other seeds)


def pixel_batch(indices: list[int], frames: int, height: int, width: int) -> tuple[torch.Tensor, list[str]]:
    """Videos (B, 3, T, H, W) in [-1, 1] and their captions."""
    videos, captions = [], []
    for index in indices:
        video, text = sample_video(TRAIN_STREAM, index, frames=frames, height=height, width=width)
        videos.append(torch.from_numpy(np.ascontiguousarray(video)))
        captions.append(text)
    return video_to_pixels(torch.stack(videos)), captions


def rank_indices(step: int, batch: int, rank: int, world: int, pool: int | None = None) -> list[int]:
    """Clip indices of one step on one rank: disjoint across ranks, cycling through `pool` if set."""
    start = (step * world + rank) * batch
    indices = list(range(start, start + batch))
    return [i % pool for i in indices] if pool else indices


@torch.no_grad()
def encode_pool(codec: LatentCodec, size: int, frames: int, height: int, width: int,
                chunk: int = 16) -> tuple[torch.Tensor, list[str]]:
    """Latents (N, 16, F, h, w) of the first `size` training clips, encoded once (the VAE is frozen)."""
    latents, captions = [], []
    for start in range(0, size, chunk):
        pixels, texts = pixel_batch(list(range(start, min(size, start + chunk))), frames, height, width)
        latents.append(codec.encode(pixels).cpu())
        captions += texts
    return torch.cat(latents), captions
