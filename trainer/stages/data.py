"""Data for the stages: synthetic toy videos and their latent pool, or latent shards on disk.

Toy videos come from `asd_core.toy.domain` by (seed, index), so every process and every
resumed run draws the same clip for the same index; ranks take disjoint indices. Real data
is a folder of safetensors shards (`python -m trainer.prepare latents`), read by index too.
"""

from __future__ import annotations

import bisect
from pathlib import Path

import numpy as np
import safetensors
import safetensors.torch
import torch

from asd_core.toy.domain import render_video
from asd_core.vae import LatentCodec, video_to_pixels

TRAIN_STREAM = 11  # domain stream for training clips (evaluation references use other seeds)


def pixel_batch(indices: list[int], frames: int, height: int, width: int) -> tuple[torch.Tensor, list[str]]:
    """Videos (B, 3, T, H, W) in [-1, 1] and their captions."""
    videos, captions = [], []
    for index in indices:
        video, text = render_video(TRAIN_STREAM, index, frames=frames, height=height, width=width)
        videos.append(torch.from_numpy(np.ascontiguousarray(video)))
        captions.append(text)
    return video_to_pixels(torch.stack(videos)), captions


def rank_indices(step: int, batch: int, rank: int, world: int, pool: int | None = None) -> list[int]:
    """Clip indices of one step on one rank: disjoint across ranks, cycling through `pool` if set."""
    start = (step * world + rank) * batch
    indices = list(range(start, start + batch))
    return [i % pool for i in indices] if pool else indices


class LatentPool:
    """Latents of the first `size` training clips, encoded by the frozen VAE when first used.

    Clips are encoded in fixed chunks of `chunk` (clip k in chunk k // chunk), so a clip's
    latent is the same whichever step asks for it first, and a short run encodes only the
    chunks it reads instead of the whole pool up front (a 3-step run of the shipped teacher:
    2 chunks of 64).
    """

    def __init__(self, codec: LatentCodec, size: int, frames: int, height: int, width: int, chunk: int = 16):
        self.codec, self.size, self.chunk = codec, size, chunk
        self.frames, self.height, self.width = frames, height, width
        self.chunks: dict[int, tuple[torch.Tensor, list[str]]] = {}  # chunk index -> (latents, captions)

    def __len__(self) -> int:
        return self.size

    @torch.no_grad()
    def _chunk(self, k: int) -> tuple[torch.Tensor, list[str]]:
        if k not in self.chunks:
            indices = list(range(k * self.chunk, min(self.size, (k + 1) * self.chunk)))
            pixels, texts = pixel_batch(indices, self.frames, self.height, self.width)
            with torch.autocast(self.codec.device.type, enabled=False):  # called inside a (bf16) training step
                self.chunks[k] = (self.codec.encode(pixels).cpu(), texts)
        return self.chunks[k]

    def latents(self, indices: list[int]) -> torch.Tensor:
        """(B, 16, F, h, w) latents of these clip indices (each < size)."""
        return torch.stack([self._chunk(i // self.chunk)[0][i % self.chunk] for i in indices])

    def captions(self, indices: list[int]) -> list[str]:
        return [self._chunk(i // self.chunk)[1][i % self.chunk] for i in indices]


# -- latent shards (data=latents) ------------------------------------------------------------

SHARD_PATTERN = "*.safetensors"
VAE_METADATA = "asd.vae"  # shard metadata: the VAE the latents were encoded with (for sample videos)


class LatentShards:
    """Samples of a folder of latent shards, read row by row (memory-mapped), never all at once.

    Each shard holds `latents` (N, C, F, H, W) and `context` (N, L, D) with the same N; every
    shard must have the same per-sample shapes. Sample i is a global index over the shards in
    file-name order, so ranks and resumed runs see the same sample for the same index.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ValueError(f"latent_dir={folder!r} is not a folder; make one with "
                             "`python -m trainer.prepare latents VIDEO_DIR --vae VAE --text-encoder TE --out DIR`")
        self.paths = sorted(self.folder.glob(SHARD_PATTERN))
        if not self.paths:
            raise ValueError(f"latent_dir={folder!r} holds no {SHARD_PATTERN} shards; make them with "
                             "`python -m trainer.prepare latents ...`")
        self.counts: list[int] = []
        self.latent_shape: tuple[int, ...] = ()
        self.context_shape: tuple[int, ...] = ()
        self.metadata: dict[str, str] = {}
        for path in self.paths:
            self._check_shard(path)
        self.starts = np.cumsum([0, *self.counts]).tolist()

    def _check_shard(self, path: Path) -> None:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            keys = set(handle.keys())
            if not {"latents", "context"} <= keys:
                raise ValueError(f"shard {path} needs tensors `latents` (N,C,F,H,W) and `context` (N,L,D), "
                                 f"has {sorted(keys)}")
            latents = tuple(handle.get_slice("latents").get_shape())
            context = tuple(handle.get_slice("context").get_shape())
            metadata = handle.metadata() or {}
        if len(latents) != 5 or len(context) != 3 or latents[0] != context[0] or latents[0] < 1:
            raise ValueError(f"shard {path}: expected latents (N,C,F,H,W) and context (N,L,D) with the same N >= 1, "
                             f"got {latents} and {context}")
        if not self.counts:
            self.latent_shape, self.context_shape, self.metadata = latents[1:], context[1:], metadata
        elif (latents[1:], context[1:]) != (self.latent_shape, self.context_shape):
            raise ValueError(f"shard {path} holds samples of latents {latents[1:]} / context {context[1:]}, but "
                             f"{self.paths[0].name} holds {self.latent_shape} / {self.context_shape}; every shard "
                             "of a latent_dir must have one size (prepare them with the same --frames/--height/--width "
                             "and text encoder)")
        self.counts.append(latents[0])

    def __len__(self) -> int:
        return self.starts[-1]

    def check_fits(self, *, channels: int, text_dim: int, frames: int, height: int, width: int) -> None:
        """Shard sizes against the model and the config; 0 in the config = take the shards' size."""
        c, f, h, w = self.latent_shape
        wanted = {"model.in_channels": (channels, c), "model.text_dim": (text_dim, self.context_shape[1]),
                  "num_frames": (frames, f), "latent_height": (height, h), "latent_width": (width, w)}
        for name, (want, have) in wanted.items():
            if want and want != have:
                raise ValueError(f"latent_dir={str(self.folder)!r} holds latents (C,F,H,W)={self.latent_shape} and "
                                 f"context (L,D)={self.context_shape}, but {name}={want} (shards have {have}); set "
                                 f"{name}={have} or prepare the shards at the model's size")

    def read(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (B, C, F, H, W) and contexts (B, L, D), float32, of these global sample indices."""
        latents, contexts = [], []
        for index in indices:
            shard = bisect.bisect_right(self.starts, index) - 1
            row = index - self.starts[shard]
            with safetensors.safe_open(str(self.paths[shard]), framework="pt") as handle:
                latents.append(handle.get_slice("latents")[row : row + 1].float())
                contexts.append(handle.get_slice("context")[row : row + 1].float())
        return torch.cat(latents), torch.cat(contexts)


def read_uncond(path: str | Path, length: int, dim: int) -> torch.Tensor:
    """The (1, length, dim) context of a dropped prompt: a file's `context`, or zeros when `path` is ""."""
    if not path:
        return torch.zeros(1, length, dim)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"uncond_file={str(path)!r} not found (a safetensors file with `context` (1, L, D); "
                         "`python -m trainer.prepare prompts` writes one), or leave it empty for zeros")
    context = safetensors.torch.load_file(str(path)).get("context")
    if context is None or context.ndim != 3 or context.shape[-1] != dim:
        shape = None if context is None else tuple(context.shape)
        raise ValueError(f"uncond_file={str(path)!r} must hold `context` (1, L, {dim}), got {shape}")
    context = context[:1].float()[:, :length]
    return torch.nn.functional.pad(context, (0, 0, 0, length - context.shape[1]))  # padding = zeros, as umt5's
