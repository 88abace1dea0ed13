"""Causal Wan2.1 transformer assembled from diffusers' Wan modules.

The submodules carry diffusers' names (`blocks.N.attn1.to_q`, `condition_embedder...`,
`proj_out`), so a diffusers-layout Wan state dict loads with no renaming. Two things are
added on top of the bidirectional Wan forward:

* block-causal self-attention: a latent frame sees every frame of its own chunk and of all
  earlier chunks (`config.chunk_frames` frames per chunk);
* a KV cache path: one chunk at a time, RoPE shifted by the chunk's frame offset, keys and
  values of earlier chunks read from a `KVCache` instead of being recomputed.

Both paths run the same weights; `tests/test_model.py` checks they agree.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import WanTimeTextImageEmbedding, WanTransformerBlock
from einops import rearrange
from torch.utils.checkpoint import checkpoint

from .attention import (
    AttentionRouting,
    CausalSelfAttention,
    OffsetRotaryEmbedding,
    TextCrossAttention,
    block_causal_block_mask,
    block_causal_mask,
)
from .config import CausalWanConfig
from .kv_cache import KVCache

# Parameters kept in float32 whatever the model dtype: upstream Wan computes norms and the
# timestep MLP / modulation in float32 (under a float32 autocast). Self Forcing's inference runs
# them in bf16; in bf16 either choice lands within 1% of float32.
FP32_PARAMETER_PATTERNS = ("time_embedder", "time_proj", "scale_shift_table", "norm1", "norm2", "norm3", "norm_q",
                           "norm_k")


def cast_for_inference(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast to `dtype` except the FP32_PARAMETER_PATTERNS parameters (the loader's convention)."""
    for name, param in model.named_parameters():
        keep_fp32 = any(pattern in name for pattern in FP32_PARAMETER_PATTERNS)
        param.data = param.data.to(torch.float32 if keep_fp32 else dtype)
    return model


class CausalWanTransformer(nn.Module):
    """Wan2.1 text-to-video transformer with block-causal attention and a KV-cache path."""

    def __init__(self, config: CausalWanConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.rope = OffsetRotaryEmbedding(config.attention_head_dim, config.patch_size, config.rope_max_seq_len)
        self.patch_embedding = nn.Conv3d(config.in_channels, width, kernel_size=config.patch_size, stride=config.patch_size)
        self.condition_embedder = WanTimeTextImageEmbedding(
            dim=width, time_freq_dim=config.freq_dim, time_proj_dim=width * 6, text_embed_dim=config.text_dim
        )
        self.blocks = nn.ModuleList(
            WanTransformerBlock(
                width, config.ffn_dim, config.num_attention_heads, config.qk_norm, config.cross_attn_norm, config.eps
            )
            for _ in range(config.num_layers)
        )
        self.norm_out = FP32LayerNorm(width, config.eps, elementwise_affine=False)
        self.proj_out = nn.Linear(width, config.out_channels * config.patch_size[0] * config.patch_size[1] * config.patch_size[2])
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, width) / width**0.5)

        self.routing = AttentionRouting()
        for index, block in enumerate(self.blocks):
            block.attn1.set_processor(CausalSelfAttention(index, self.routing))
            block.attn2.set_processor(TextCrossAttention())
        self.gradient_checkpointing = False
        # The block-causal full-sequence pass (training): "flex" (block-sparse), "dense" (an (S, S)
        # mask to SDPA) or "auto" = flex on CUDA, dense elsewhere. Cached sampling needs no mask.
        self.attention_backend = "auto"
        self.trained_plan: str | None = None  # set by the checkpoint loader
        self.checkpoint_layout: str | None = None
        self.family = None  # families.Family the file was recognised as (sampling defaults); set by the loader
        self.family_basis = ""
        self.lora_file: str | None = None

    @property
    def device(self) -> torch.device:
        return self.patch_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embedding.weight.dtype

    def new_kv_cache(self, *, batch_size: int, capacity_frames: int, latent_height: int, latent_width: int,
                     rolling: bool = False, sink_frames: int = 0) -> KVCache:
        """A cache shaped for this model; sizes derive from the config, never hard-coded."""
        return KVCache(
            num_layers=self.config.num_layers,
            batch_size=batch_size,
            capacity_frames=capacity_frames,
            tokens_per_frame=self.config.tokens_per_frame(latent_height, latent_width),
            num_heads=self.config.num_attention_heads,
            head_dim=self.config.attention_head_dim,
            dtype=self.dtype,
            device=self.device,
            rolling=rolling,
            sink_frames=sink_frames,
        )

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor | float,
        context: torch.Tensor,
        *,
        frame_offset: int = 0,
        kv_cache: KVCache | None = None,
        update_cache: bool = False,
        recache: bool = False,
        return_features: tuple[int, ...] = (),
    ):
        """Flow prediction (noise - x0) for latents x (B, C, F, H, W).

        timestep: scalar, (B,) or per-frame (B, F), in [0, 1000].
        Without `kv_cache`: the whole clip at once, block-causal over chunks (bidirectional
        when `chunk_frames >= F`). With `kv_cache`: x is the next chunk, placed at
        `frame_offset`; `update_cache=True` keeps its keys/values for later chunks;
        `recache=True`: x is the cache's last held frames, recomputed in place (a prompt switch).
        With `return_features`: also the hidden states (B, S, D) after those block indices.
        """
        # The boundary: whatever device and float type the caller holds (ComfyUI hands float32
        # conditioning to a bf16 model), the weights' own are used inside.
        x = x.to(self.device, self.dtype)
        batch, _, num_frames, height, width = x.shape
        p_t, p_h, p_w = self.config.patch_size
        if num_frames % p_t or height % p_h or width % p_w:
            raise ValueError(f"latent shape {tuple(x.shape[2:])} is not divisible by the patch size {self.config.patch_size}")
        frames, tokens_per_frame = num_frames // p_t, (height // p_h) * (width // p_w)
        frame_timesteps, uniform = self._frame_timesteps(timestep, batch, frames, x.device)  # (B, F)

        cos, sin = self.rope(x, frame_offset)
        hidden = rearrange(self.patch_embedding(x), "b d f h w -> b (f h w) d").contiguous()
        temb, modulation, context = self._embed_conditions(frame_timesteps, uniform, context, tokens_per_frame)

        if kv_cache is None:
            mask = None
            if self.config.chunk_frames < frames or frame_offset % self.config.chunk_frames:
                build = block_causal_block_mask if self._use_flex(x.device) else block_causal_mask
                mask = build(frames, tokens_per_frame, self.config.chunk_frames, frame_offset, x.device)
            self.routing.mask, self.routing.cache = mask, None
        else:
            if recache:
                kv_cache.begin_rewrite(frames)
            else:
                kv_cache.begin(frames, commit=update_cache)
            self.routing.mask, self.routing.cache = None, kv_cache

        features = []
        try:
            for index, block in enumerate(self.blocks):
                if self.gradient_checkpointing and torch.is_grad_enabled() and kv_cache is None:
                    hidden = checkpoint(self._run_block, block, hidden, context, modulation, (cos, sin), self.routing.mask,
                                        use_reentrant=False)
                else:
                    hidden = block(hidden, context, modulation, (cos, sin))
                if index in return_features:
                    features.append(hidden)
        finally:
            if kv_cache is not None:
                kv_cache.finish()
            self.routing.mask, self.routing.cache = None, None

        if temb.ndim == 3:  # per-token (B, S, D)
            shift, scale = (self.scale_shift_table[:, None] + temb[:, :, None]).unbind(2)
        else:  # (B, D)
            shift, scale = (self.scale_shift_table + temb[:, None]).unbind(1)
            shift, scale = shift[:, None], scale[:, None]
        hidden = (self.norm_out(hidden.float()) * (1 + scale) + shift).type_as(hidden)
        out = self.proj_out(hidden)
        out = rearrange(
            out, "b (f h w) (pt ph pw c) -> b c (f pt) (h ph) (w pw)",
            f=frames, h=height // p_h, w=width // p_w, pt=p_t, ph=p_h, pw=p_w,
        )
        if return_features:
            return out, features
        return out

    def _use_flex(self, device: torch.device) -> bool:
        if self.attention_backend not in ("auto", "flex", "dense"):
            raise ValueError(f"attention_backend must be auto, flex or dense, got {self.attention_backend!r}")
        use = self.attention_backend == "flex" or (self.attention_backend == "auto" and device.type == "cuda")
        if use and device.type == "cpu" and torch.is_grad_enabled():
            raise ValueError("flex attention has no CPU backward in torch; set model.attention_backend='dense' "
                             "(or 'auto') to train on the CPU")
        return use

    def _run_block(self, block, hidden, context, modulation, rotary, mask):
        """One block with its mask re-installed: activation checkpointing replays it in backward."""
        self.routing.mask = mask
        return block(hidden, context, modulation, rotary)

    @staticmethod
    def _frame_timesteps(timestep, batch: int, frames: int, device) -> tuple[torch.Tensor, bool]:
        """(B, F) float32 timesteps, and whether every frame of a sample shares one.

        Uniformity is read from the argument's shape where it can be (a number or (B,) always
        is), so a sampling call never waits on the device to compare values.
        """
        if isinstance(timestep, (int, float)):  # made on the device: no host-to-device copy per call
            t = torch.full((), float(timestep), device=device)
        else:
            t = torch.as_tensor(timestep).to(device, torch.float32)
        if t.ndim == 0:
            return t.expand(batch, frames), True
        if t.ndim == 1 and t.shape[0] == batch:
            return t[:, None].expand(batch, frames), True
        if t.ndim == 2 and t.shape == (batch, frames):
            return t, bool((t == t[:, :1]).all())
        raise ValueError(
            f"timestep of shape {tuple(t.shape)} does not fit batch {batch} and {frames} frames; "
            "pass a scalar, (B,) or per-frame (B, F)"
        )

    def _embed_conditions(self, frame_timesteps: torch.Tensor, uniform: bool, context: torch.Tensor,
                          tokens_per_frame: int):
        """Timestep and text embeddings; per-token modulation only when frames differ in t.

        A uniform timestep (every inference call) keeps the (B, 6, D) modulation that Wan
        uses; mixed per-frame timesteps (diffusion forcing in training) expand to (B, S, 6, D).
        The timestep path runs in its parameters' float32 (as Wan's float32 autocast does); the
        context is cast to the text embedder's dtype and padded to `config.text_len`.
        """
        embedder = self.condition_embedder
        context = self._pad_context(context.to(self.device, embedder.text_embedder.linear_1.weight.dtype))
        frames = frame_timesteps.shape[1]
        timesteps = frame_timesteps[:, 0] if uniform else frame_timesteps.flatten()
        frequencies = embedder.timesteps_proj(timesteps)  # (N, freq_dim), float32
        temb = embedder.time_embedder(frequencies.to(embedder.time_embedder.linear_1.weight.dtype))
        proj = embedder.time_proj(embedder.act_fn(temb).to(embedder.time_proj.weight.dtype))
        context = embedder.text_embedder(context)
        if uniform:
            return temb, rearrange(proj, "b (six d) -> b six d", six=6), context
        temb = rearrange(temb, "(b f) d -> b f d", f=frames).repeat_interleave(tokens_per_frame, dim=1)  # (B, S, D)
        proj = rearrange(proj, "(b f) (six d) -> b f six d", f=frames, six=6).repeat_interleave(tokens_per_frame, dim=1)
        return temb, proj, context

    def _pad_context(self, context: torch.Tensor) -> torch.Tensor:
        """Zero-pad (B, L, D) to `config.text_len` tokens as Wan does; longer prompts keep their
        first text_len tokens, which is where Wan's tokenizer cuts them."""
        text_len = self.config.text_len
        if context.ndim != 3 or context.shape[-1] != self.config.text_dim:
            raise ValueError(
                f"text context of shape {tuple(context.shape)} does not fit this model: it needs (batch, tokens, "
                f"{self.config.text_dim}); use the text encoder the checkpoint was trained with"
            )
        if text_len is None or context.shape[1] == text_len:
            return context
        if context.shape[1] > text_len:
            return context[:, :text_len]
        return F.pad(context, (0, 0, 0, text_len - context.shape[1]))
