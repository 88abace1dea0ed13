"""Model configuration: one dataclass for the real Wan2.1-T2V-1.3B and tiny test models.

Field names follow diffusers' `WanTransformer3DModel` so a diffusers config maps over
directly; `chunk_frames` is the only causal addition. The config travels inside every
checkpoint we write (safetensors metadata), so a file alone rebuilds its model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

WAN_TEXT_LEN = 512  # umt5 tokens Wan2.1 pads every prompt to
# Upper bounds far above any Wan model (1.3B: 30 layers, 12 heads of 128, ffn 8960, 1024 RoPE
# positions; 14B: 40 layers, 40 heads, ffn 13824) that keep a crafted file from asking for a
# model no machine could build (num_layers: 10000000 used to hang every reader).
_INT_RANGES = {
    "num_layers": (1, 1000),
    "num_attention_heads": (1, 1024),
    "attention_head_dim": (2, 4096),
    "ffn_dim": (1, 1 << 20),
    "in_channels": (1, 4096),
    "out_channels": (1, 4096),
    "text_dim": (1, 1 << 16),
    "freq_dim": (1, 1 << 16),
    "rope_max_seq_len": (1, 1 << 16),
    "chunk_frames": (1, 1 << 16),
}
MAX_PATCH = 64
MAX_TOKENS = 1 << 16


def _check_int(name: str, value, low: int, high: int, what: str | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        kind = "" if isinstance(value, int) and not isinstance(value, bool) else f" ({type(value).__name__})"
        raise ValueError(f"{name} must be {what or f'a whole number in [{low}, {high}]'}, got {shown}{kind}")


@dataclass
class CausalWanConfig:
    num_layers: int = 30  # transformer blocks
    num_attention_heads: int = 12
    attention_head_dim: int = 128  # width = heads * head_dim (1536 for 1.3B)
    ffn_dim: int = 8960
    in_channels: int = 16  # Wan 2.1 VAE latent channels
    out_channels: int = 16
    text_dim: int = 4096  # umt5-xxl hidden size
    freq_dim: int = 256  # sinusoidal timestep embedding size
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (frames, height, width)
    cross_attn_norm: bool = True
    qk_norm: str = "rms_norm_across_heads"
    eps: float = 1e-6
    rope_max_seq_len: int = 1024  # longest RoPE axis, in patches/frames
    chunk_frames: int = 3  # latent frames per autoregressive chunk (block-causal unit)
    # Text tokens the context is zero-padded to before the text embedding, as Wan does (512 for
    # umt5): the padding tokens embed to the MLP's bias and take part in cross-attention, so a
    # model trained padded must sample padded. None: the context as given (the toy models).
    text_len: int | None = None

    def __post_init__(self):
        """Type- and range-check every field: a config arrives from file metadata or user JSON, and a
        wrong one must fail here in one line, not hang or crash deep inside the model build."""
        for name, (low, high) in _INT_RANGES.items():
            _check_int(name, getattr(self, name), low, high)
        if self.attention_head_dim % 2:
            raise ValueError(f"attention_head_dim must be even for RoPE, got {self.attention_head_dim}")
        patch = self.patch_size
        if not isinstance(patch, (list, tuple)) or len(patch) != 3:
            raise ValueError(f"patch_size must be 3 whole numbers (frames, height, width), got {patch!r}")
        for value in patch:
            _check_int("patch_size", value, 1, MAX_PATCH)
        self.patch_size = tuple(patch)
        if self.chunk_frames % self.patch_size[0]:
            raise ValueError(f"chunk_frames ({self.chunk_frames}) must be a multiple of the temporal patch "
                             f"size ({self.patch_size[0]})")
        if self.text_len is not None:
            _check_int("text_len", self.text_len, 1, MAX_TOKENS, what="a positive number of tokens or None")
        if not isinstance(self.cross_attn_norm, bool):
            raise ValueError(f"cross_attn_norm must be true or false, got {self.cross_attn_norm!r}")
        if self.qk_norm is not None and (not isinstance(self.qk_norm, str) or not 0 < len(self.qk_norm) <= 64):
            raise ValueError(f"qk_norm must be a norm name such as 'rms_norm_across_heads' or None, "
                             f"got {str(self.qk_norm)[:40]!r}")
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not 0 < self.eps < 1:
            raise ValueError(f"eps must be a number in (0, 1), got {str(self.eps)[:40]!r}")

    @property
    def width(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def tokens_per_frame(self, latent_height: int, latent_width: int) -> int:
        """Tokens one latent frame becomes after patchify (1560 for 60x104 at patch 1,2,2)."""
        _, ph, pw = self.patch_size
        return (latent_height // ph) * (latent_width // pw)

    def diffusers_kwargs(self) -> dict:
        """Arguments for diffusers' `WanTransformer3DModel` with the same weights layout."""
        kwargs = dataclasses.asdict(self)
        kwargs.pop("chunk_frames")
        kwargs.pop("text_len")  # diffusers pads in its pipeline, not in the transformer
        return kwargs

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> CausalWanConfig:
        if not isinstance(values, dict):
            raise ValueError(f"a model config is a JSON object of fields, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> CausalWanConfig:
        return cls.from_dict(json.loads(text))


def wan21_t2v_1_3b(chunk_frames: int = 3) -> CausalWanConfig:
    """The real Wan2.1-T2V-1.3B transformer (Self Forcing's causal student uses the same)."""
    return CausalWanConfig(chunk_frames=chunk_frames, text_len=WAN_TEXT_LEN)


def tiny_config(**overrides) -> CausalWanConfig:
    """A few-hundred-K-parameter config for tests: 2 layers, width 64, text_dim 32."""
    values = dict(
        num_layers=2,
        num_attention_heads=2,
        attention_head_dim=32,
        ffn_dim=128,
        text_dim=32,
        freq_dim=32,
        rope_max_seq_len=256,
        chunk_frames=2,
    )
    values.update(overrides)
    return CausalWanConfig(**values)
