"""Attention for the causal Wan transformer: RoPE with a frame offset, and the processors
that diffusers' Wan blocks call for self- and cross-attention.

diffusers' blocks call `attn1` / `attn2` with no mask and no extra arguments, so the causal
self-attention reads what to attend to (a block-causal mask for the full pass, or the KV
cache for a chunk) from a shared `AttentionRouting` the model sets per forward.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
from einops import rearrange
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from .kv_cache import KVCache


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
