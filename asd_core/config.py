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
        self.patch_size = tuple(int(p) for p in self.patch_size)
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {self.chunk_frames}")
        if self.text_len is not None and (isinstance(self.text_len, bool) or not isinstance(self.text_len, int)
                                          or self.text_len < 1):
            raise ValueError(f"text_len must be a positive number of tokens or None, got {self.text_len!r}")
        if self.attention_head_dim % 2:
            raise ValueError(f"attention_head_dim must be even for RoPE, got {self.attention_head_dim}")

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
