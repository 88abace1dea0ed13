"""What the ratio benchmark runs: a small random-weight model, its video and its repeats.

The defaults are big enough for the transformer's matmuls and attention to take most of the
time (docs/performance.md says why 24x24 latents); `QUICK` is a tiny preset for the tests.
Settings travel as JSON to the fresh processes of the memory probes.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass

import torch

from ..config import CausalWanConfig
from ..model import CausalWanTransformer
from .timing import check_device

DEFAULTS = dict(layers=4, width=256, heads=2, ffn=1024, text_dim=64, latent="24x24", chunk_frames=3,
                chunks=7, repeats=3)
QUICK = dict(layers=2, width=64, heads=2, ffn=128, text_dim=16, latent="16x16", chunk_frames=2,
             chunks=3, repeats=1)
TEXT_TOKENS = 16  # length of the random text conditioning


@dataclass
class Settings:
    config: CausalWanConfig
    latent_height: int
    latent_width: int
    chunks: int  # chunks of the timed video
    long_chunks: int  # chunks of the long video in the memory test
    window_chunks: int  # rolling cache window, in chunks
    repeats: int
    device: str
    seed: int
    tolerance: float

    @property
    def chunk_frames(self) -> int:
        return self.config.chunk_frames

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Settings:
        values = json.loads(text)
        return cls(**{**values, "config": CausalWanConfig.from_dict(values["config"])})


def make_settings(*, quick: bool = False, device: str = "cpu", seed: int = 0, tolerance: float = 1e-3,
                  long_chunks: int | None = None, window_chunks: int | None = None, **sizes) -> Settings:
    """Fill unset sizes (None) from the preset and reject combinations the model or cache cannot run.

    `sizes`: the keys of DEFAULTS (layers, width, heads, ffn, text_dim, latent "HxW",
    chunk_frames, chunks, repeats). Errors are one-line ValueErrors naming the flag to fix.
    """
    unknown = sorted(set(sizes) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown benchmark sizes {unknown}; known: {sorted(DEFAULTS)}")
    values = {name: preset if sizes.get(name) is None else sizes[name]
              for name, preset in (QUICK if quick else DEFAULTS).items()}
    layers, width, heads, ffn, text_dim = (values[n] for n in ("layers", "width", "heads", "ffn", "text_dim"))
    chunk_frames, chunks, repeats = values["chunk_frames"], values["chunks"], values["repeats"]
    long_chunks = 4 * chunks if long_chunks is None else long_chunks
    window_chunks = chunks if window_chunks is None else window_chunks

    match = re.fullmatch(r"(\d+)(?:x(\d+))?", str(values["latent"]).strip().lower())
    if not match:
        raise ValueError(f"--latent must look like 16x16 (or 16 for square), got {values['latent']!r}")
    latent_h = int(match.group(1))
    latent_w = int(match.group(2) or match.group(1))
    for name, value in (("layers", layers), ("width", width), ("heads", heads), ("ffn", ffn),
                        ("text-dim", text_dim), ("chunk-frames", chunk_frames), ("chunks", chunks),
                        ("repeats", repeats)):
        if value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    if width % heads or (width // heads) % 2:
        raise ValueError(f"--width {width} must split into {heads} heads of an even size (e.g. --width {heads * 64})")
    if latent_h < 2 or latent_w < 2 or latent_h % 2 or latent_w % 2:
        raise ValueError(f"--latent {latent_h}x{latent_w} must be even on both sides (patch 2x2), e.g. 16x16")
    if long_chunks <= chunks:
        raise ValueError(f"--long-chunks ({long_chunks}) must be larger than --chunks ({chunks})")
    if window_chunks < 2:
        raise ValueError(f"--window-chunks must be >= 2 (one sink chunk + the chunk being made), got {window_chunks}")
    if tolerance <= 0:
        raise ValueError(f"--tolerance must be > 0, got {tolerance}")
    device = check_device(device)

    rope_len = max(1024, long_chunks * chunk_frames, latent_h, latent_w)
    config = CausalWanConfig(num_layers=layers, num_attention_heads=heads, attention_head_dim=width // heads,
                             ffn_dim=ffn, text_dim=text_dim, rope_max_seq_len=rope_len,
                             chunk_frames=chunk_frames)
    return Settings(config, latent_h, latent_w, chunks, long_chunks, window_chunks, repeats, device, seed, tolerance)


def build(settings: Settings) -> tuple[CausalWanTransformer, torch.Tensor]:
    """Random-weight float32 model and text conditioning, identical in every process for one seed."""
    torch.manual_seed(settings.seed)
    model = CausalWanTransformer(settings.config).to(settings.device).eval()
    context = torch.randn(1, TEXT_TOKENS, settings.config.text_dim).to(settings.device)  # (1, L, text_dim)
    return model, context
