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

from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import (
    WanRotaryPosEmbed,
    WanTimeTextImageEmbedding,
    WanTransformerBlock,
)
from einops import rearrange
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
from torch.utils.checkpoint import checkpoint

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


class OffsetRotaryEmbedding(WanRotaryPosEmbed):
    """Wan's 3-axis RoPE, with the frame axis starting at `frame_offset`.

    diffusers' version always starts at frame 0; a chunk generated after others needs the
    positions it would have in the full video. Buffers are not persistent, so no weights change.
    Returns compact (S, head_dim/2) cos/sin tables in float64 (as diffusers computes RoPE).
    """

    def forward(self, hidden_states: torch.Tensor, frame_offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, num_frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.patch_size
        frames, rows, cols = num_frames // p_t, height // p_h, width // p_w
        if frame_offset + frames > self.max_seq_len:
            raise ValueError(
                f"frames up to index {frame_offset + frames} exceed rope_max_seq_len={self.max_seq_len}; "
                "use a rolling cache window or a config with a larger rope_max_seq_len"
            )
        # Each table stores every frequency twice (interleaved real pairs): keep one of each.
        cos = self.freqs_cos[:, 0::2]
        sin = self.freqs_sin[:, 0::2]
        split = [self.t_dim // 2, self.h_dim // 2, self.w_dim // 2]
        tables = []
        for table in (cos, sin):
            t_part, h_part, w_part = table.split(split, dim=1)
            t_part = t_part[frame_offset : frame_offset + frames]  # (F, dt)
            h_part = h_part[:rows]  # (H, dh)
            w_part = w_part[:cols]  # (W, dw)
            full = torch.cat(
                [
                    t_part[:, None, None].expand(frames, rows, cols, -1),
                    h_part[None, :, None].expand(frames, rows, cols, -1),
                    w_part[None, None, :].expand(frames, rows, cols, -1),
                ],
                dim=-1,
            )
            tables.append(rearrange(full, "f h w d -> (f h w) d"))
        return tables[0], tables[1]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs of x (B, S, H, D) by per-token angles (S, D/2)."""
    pairs = rearrange(x.to(cos.dtype), "b s h (d two) -> b s h d two", two=2)
    x1, x2 = pairs.unbind(-1)
    cos, sin = cos[None, :, None], sin[None, :, None]
    rotated = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return rearrange(rotated, "b s h d two -> b s h (d two)").type_as(x)


class AttentionRouting:
    """What the self-attention layers of the current forward pass attend to.

    diffusers' blocks call `attn1` with no mask and no extra arguments, so the causal
    processor reads the block mask or the KV cache from this shared object instead.
    """

    def __init__(self):
        # Dense (S, S) bool (True = may attend) or flex attention's block-sparse BlockMask.
        self.mask: torch.Tensor | BlockMask | None = None
        self.cache: KVCache | None = None


class CausalSelfAttention:
    """`attn1` processor: block-causal masked attention, or attention against a KV cache."""

    def __init__(self, layer_index: int, routing: AttentionRouting):
        self.layer_index = layer_index
        self.routing = routing

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        # QK RMSNorm in float32 (its weights are kept float32): Wan normalises in full precision,
        # and matching dtypes keep torch on its fused kernel.
        query = _qk_norm(attn.norm_q, attn.to_q(hidden_states))
        key = _qk_norm(attn.norm_k, attn.to_k(hidden_states))
        value = attn.to_v(hidden_states)
        query, key, value = (rearrange(t, "b s (h d) -> b s h d", h=attn.heads) for t in (query, key, value))
        cos, sin = rotary_emb
        query = apply_rotary(query, cos, sin)
        key = apply_rotary(key, cos, sin)

        mask = self.routing.mask
        if self.routing.cache is not None:
            key, value = self.routing.cache.update(self.layer_index, key, value)
            mask = None  # the cache holds only earlier chunks plus this one: all visible

        query, key, value = (rearrange(t, "b s h d -> b h s d") for t in (query, key, value))
        if isinstance(mask, BlockMask):
            out = flex_attention_kernel(query.device)(query, key, value, block_mask=mask)
        else:
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        out = rearrange(out, "b h s d -> b s (h d)").type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


class TextCrossAttention:
    """`attn2` processor: attention to the text tokens, q/k normalised as `CausalSelfAttention` does.

    diffusers' processor normalises a bf16 query with the float32 norm weights, which torch
    can only run on its slow unfused path; this is the same computation for text-only Wan.
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        query = _qk_norm(attn.norm_q, attn.to_q(hidden_states))
        key = _qk_norm(attn.norm_k, attn.to_k(encoder_hidden_states))
        value = attn.to_v(encoder_hidden_states)
        query, key, value = (rearrange(t, "b s (h d) -> b h s d", h=attn.heads) for t in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value)
        out = rearrange(out, "b h s d -> b s (h d)").type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


def _qk_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply q/k RMSNorm in its weights' dtype (float32 as loaded), returning x's dtype."""
    weight = getattr(norm, "weight", None)
    return norm(x.to(torch.float32 if weight is None else weight.dtype)).type_as(x)


def block_causal_mask(num_frames: int, tokens_per_frame: int, chunk_frames: int, frame_offset: int, device) -> torch.Tensor:
    """(S, S) bool mask: a token sees tokens of its own chunk and of all earlier chunks."""
    chunk_of_token = _chunk_of_token(num_frames, tokens_per_frame, chunk_frames, frame_offset, device)  # (S,)
    return chunk_of_token[:, None] >= chunk_of_token[None, :]


@lru_cache(maxsize=16)  # one per training shape: building it costs a pass over every tile
def block_causal_block_mask(num_frames: int, tokens_per_frame: int, chunk_frames: int, frame_offset: int,
                            device) -> BlockMask:
    """The same rule as `block_causal_mask`, block-sparse for flex attention.

    At real size (21 frames x 1560 tokens) the dense mask is about 1 GB per forward and keeps
    SDPA off its fast kernels; the block mask stores one entry per 128x128 tile and lets the
    kernel skip every tile above the chunk diagonal.
    """
    chunk_of_token = _chunk_of_token(num_frames, tokens_per_frame, chunk_frames, frame_offset, device)

    def sees(batch, head, query_index, key_index):
        return chunk_of_token[query_index] >= chunk_of_token[key_index]

    length = chunk_of_token.shape[0]
    return create_block_mask(sees, B=None, H=None, Q_LEN=length, KV_LEN=length, device=device)


def _chunk_of_token(num_frames: int, tokens_per_frame: int, chunk_frames: int, frame_offset: int, device):
    chunk_of_frame = (torch.arange(num_frames, device=device) + frame_offset) // chunk_frames
    return chunk_of_frame.repeat_interleave(tokens_per_frame)  # (S,)


_compiled_flex_attention = None


def flex_attention_kernel(device: torch.device):
    """flex_attention compiled on CUDA (its fused kernel exists only compiled); eager elsewhere.

    Eager flex attention is a reference implementation that materialises the scores: right for
    the CPU tests, which check it against the dense path, not for speed.
    """
    global _compiled_flex_attention
    if device.type != "cuda":
        return flex_attention
    if _compiled_flex_attention is None:
        _compiled_flex_attention = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex_attention


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
        return_features: tuple[int, ...] = (),
    ):
        """Flow prediction (noise - x0) for latents x (B, C, F, H, W).

        timestep: scalar, (B,) or per-frame (B, F), in [0, 1000].
        Without `kv_cache`: the whole clip at once, block-causal over chunks (bidirectional
        when `chunk_frames >= F`). With `kv_cache`: x is the next chunk, placed at
        `frame_offset`; `update_cache=True` keeps its keys/values for later chunks.
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
