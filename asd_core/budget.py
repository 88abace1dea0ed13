"""Memory budget of a causal Wan model, computed from its config (no model is run).

Why computed: the real-size figures must be known before a GPU is at hand (will the 1.3B
model fit 12 GB at 832x480x81?), and `asd-inspect` reports them for any checkpoint. The GPU
benchmark (`asd-bench --real-size`) measures the same quantities when a GPU is available.

Parts, for batch 1 (a distilled student samples without CFG; CFG doubles cache and activations):
* weights: every parameter in the model dtype except the float32 ones that the loader keeps
  (`FP32_PARAMETER_PATTERNS`: norms, modulation tables, timestep MLP);
* KV cache: layers x 2 (keys, values) x tokens x heads x head_dim x dtype bytes, in the model
  dtype. Only self-attention is cached: cross-attention keys/values over the text are
  recomputed by every call (diffusers' `attn2`), so they take no cache memory;
* activations of one chunk forward without gradients: the largest transient of a block
  (see `chunk_activation_bytes`), plus the hidden states and text embedding that live
  through the whole pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import CausalWanConfig

VAE_TIME_FACTOR = 4  # Wan 2.1 VAE: 4x in time (first frame alone), 8x in space
VAE_SPACE_FACTOR = 8
TEXT_TOKENS = 512  # umt5-xxl context length that ComfyUI and Self Forcing pad to


@dataclass(frozen=True)
class VideoSize:
    """A video in latent frames; `pixel_frames` etc. follow the Wan 2.1 VAE factors."""

    latent_frames: int
    latent_height: int
    latent_width: int

    @property
    def pixel_frames(self) -> int:
        return (self.latent_frames - 1) * VAE_TIME_FACTOR + 1

    @property
    def height(self) -> int:
        return self.latent_height * VAE_SPACE_FACTOR

    @property
    def width(self) -> int:
        return self.latent_width * VAE_SPACE_FACTOR

    def describe(self) -> str:
        latent = f"{self.latent_frames}x{self.latent_height}x{self.latent_width}"
        return f"{self.pixel_frames} frames of {self.width}x{self.height} ({latent} latent)"


REAL_VIDEO = VideoSize(21, 60, 104)  # 81 frames of 832x480, Self Forcing's and Wan2.1's size
WINDOW_CHUNKS = 3  # a rolling cache of one sink chunk + the previous chunk + the chunk being made


def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def kv_cache_bytes(config: CausalWanConfig, frames: int, latent_height: int, latent_width: int,
                   dtype: torch.dtype = torch.bfloat16, batch: int = 1) -> int:
    """Keys + values of every layer for `frames` latent frames (the cache is in the model dtype)."""
    tokens = frames * config.tokens_per_frame(latent_height, latent_width)
    return (config.num_layers * 2 * batch * tokens * config.num_attention_heads * config.attention_head_dim
            * dtype_bytes(dtype))


def weight_bytes(config: CausalWanConfig, dtype: torch.dtype = torch.bfloat16) -> dict:
    """Parameter count and bytes as the loader holds them (float32 exceptions kept float32).

    The model is built on the meta device: no memory, a fraction of a second even at 1.3B.
    """
    from .model import FP32_PARAMETER_PATTERNS, CausalWanTransformer

    with torch.device("meta"):
        model = CausalWanTransformer(config)
    total = fp32 = 0
    for name, param in model.named_parameters():
        total += param.numel()
        if any(pattern in name for pattern in FP32_PARAMETER_PATTERNS):
            fp32 += param.numel()
    return {"parameters": total, "fp32_parameters": fp32,
            "bytes": (total - fp32) * dtype_bytes(dtype) + fp32 * dtype_bytes(torch.float32)}


def chunk_activation_bytes(config: CausalWanConfig, latent_height: int, latent_width: int,
                           dtype: torch.dtype = torch.bfloat16, text_tokens: int = TEXT_TOKENS) -> dict:
    """Estimated peak activations of one chunk forward without gradients (batch 1).

    S = chunk tokens, D = width, F = ffn width, b = dtype bytes. Live through the pass: the
    hidden states (S D b) and the embedded text (T D b). Inside a block the larger of
    * feed-forward: the normed input (S D b) + the up-projection and its GELU (2 S F b);
    * self-attention: normed input + q, k, v (4 S D b) + RoPE's float64 rotation of q or k
      (3 S D 8: the float64 copy, its rotated pairs, the result; RoPE runs in float64 as
      diffusers and Self Forcing compute it).
    SDPA's flash / memory-efficient kernels (no mask in the cached path) keep no (S x keys)
    score matrix; a math-kernel fallback would add heads x S x keys x b.
    """
    b, fp64 = dtype_bytes(dtype), 8
    s = config.chunk_frames * config.tokens_per_frame(latent_height, latent_width)
    d, f = config.width, config.ffn_dim
    persistent = s * d * b + text_tokens * d * b
    feed_forward = s * d * b + 2 * s * f * b
    attention = 4 * s * d * b + 3 * s * d * fp64
    return {"chunk_tokens": s, "persistent": persistent, "block_peak": max(feed_forward, attention),
            "bytes": persistent + max(feed_forward, attention)}


def memory_budget(config: CausalWanConfig, video: VideoSize, dtype: torch.dtype = torch.bfloat16,
                  window_frames: int | None = None) -> dict:
    """Computed peak of the transformer while it samples `video`: weights + cache + activations.

    `window_frames`: a rolling cache of that many frames (one sink chunk + the rest), else
    the whole-video cache only.
    """
    weights = weight_bytes(config, dtype)["bytes"]
    activations = chunk_activation_bytes(config, video.latent_height, video.latent_width, dtype)["bytes"]
    whole = kv_cache_bytes(config, video.latent_frames, video.latent_height, video.latent_width, dtype)
    budget = {
        "video": video.describe(),
        "dtype": str(dtype).removeprefix("torch."),
        "weights_bytes": weights,
        "activations_bytes": activations,
        "kv_cache_bytes_whole_video": whole,
        "peak_bytes_whole_video": weights + whole + activations,
    }
    if window_frames is not None:
        window = kv_cache_bytes(config, min(window_frames, video.latent_frames), video.latent_height,
                                video.latent_width, dtype)
        budget |= {"window_frames": window_frames, "kv_cache_bytes_window": window,
                   "peak_bytes_window": weights + window + activations}
    return budget


def kv_cache_report(config: CausalWanConfig, video: VideoSize, dtype: torch.dtype = torch.bfloat16,
                    window_chunks: int = WINDOW_CHUNKS) -> dict:
    """KV cache bytes for `video`: the whole-video cache and a rolling window (one sink chunk)."""
    window = min(window_chunks * config.chunk_frames, video.latent_frames)
    h, w = video.latent_height, video.latent_width
    return {"video": video.describe(),
            "tokens_per_frame": config.tokens_per_frame(h, w),
            "whole_video_bytes": kv_cache_bytes(config, video.latent_frames, h, w, dtype),
            "window_frames": window,
            "window_bytes": kv_cache_bytes(config, window, h, w, dtype)}
