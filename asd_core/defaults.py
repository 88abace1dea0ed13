"""The built-in default: a small model of the synthetic shapes domain that runs anywhere.

The trained files ship in `asd_core/weights/` (produced by `trainer/`, issue "built-in
default"): `student.safetensors` (the ASD student), `teacher.safetensors`,
`vae.safetensors`, `text_encoder.safetensors`. Until they are there, `load_default_pipeline`
builds the same architecture with random weights and labels it UNTRAINED everywhere it is
shown, so nobody mistakes its output for the real thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .config import CausalWanConfig

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_FILES = {
    "student": "student.safetensors",
    "teacher": "teacher.safetensors",
    "vae": "vae.safetensors",
    "text_encoder": "text_encoder.safetensors",
}
UNTRAINED_LABEL = "UNTRAINED random model: the trained default is not shipped yet"
UNTRAINED_SEED = 20251102


@dataclass(frozen=True)
class ToyDomainSizes:
    """Video sizes of the toy domain: 33 frames of 64x64 -> 9 latent frames of 8x8 = 3 chunks."""

    pixel_frames: int = 33
    height: int = 64
    width: int = 64
    latent_frames: int = 9
    latent_height: int = 8
    latent_width: int = 8
    chunk_frames: int = 3
    text_dim: int = 64
    fps: int = 8


TOY = ToyDomainSizes()


def toy_model_config() -> CausalWanConfig:
    """4 layers, 2 heads x 64 (width 128): a few hundred K parameters, trains on 2 CPU cores."""
    return CausalWanConfig(num_layers=4, num_attention_heads=2, attention_head_dim=64, ffn_dim=256,
                           text_dim=TOY.text_dim, freq_dim=64, rope_max_seq_len=256, chunk_frames=TOY.chunk_frames)


def default_file(name: str) -> Path:
    return WEIGHTS_DIR / DEFAULT_FILES[name]


def default_pipeline_files() -> dict[str, Path]:
    """The shipped default files that exist."""
    return {name: default_file(name) for name in DEFAULT_FILES if default_file(name).exists()}


@dataclass
class DefaultPipeline:
    model: torch.nn.Module
    text_encoder: torch.nn.Module
    codec: object  # vae.LatentCodec
    trained: bool
    label: str
    sizes: ToyDomainSizes = TOY


def load_default_pipeline(device="cpu", dtype: torch.dtype = torch.float32, allow_untrained: bool = True,
                          which: str = "student") -> DefaultPipeline:
    """The built-in default model with its text encoder and VAE (untrained stand-in if not shipped)."""
    from .checkpoint import load_model
    from .model import CausalWanTransformer
    from .text import ToyTextEncoder, ToyTextConfig
    from .vae import LatentCodec

    files = default_pipeline_files()
    needed = (which, "vae", "text_encoder")
    if all(name in files for name in needed):
        model = load_model(files[which], device=device, dtype=dtype)
        text_encoder = ToyTextEncoder.load(files["text_encoder"], device=device)
        codec = LatentCodec.load(files["vae"], device=device)
        label = f"built-in default ({which}, trained plan {model.trained_plan})"
        return DefaultPipeline(model, text_encoder, codec, True, label)
    if not allow_untrained:
        missing = [DEFAULT_FILES[name] for name in needed if name not in files]
        raise FileNotFoundError(f"the built-in default is not shipped in {WEIGHTS_DIR}: missing {missing}")

    torch.manual_seed(UNTRAINED_SEED)
    model = CausalWanTransformer(toy_model_config()).eval().requires_grad_(False).to(device, dtype)
    text_encoder = ToyTextEncoder(ToyTextConfig(width=TOY.text_dim)).eval().requires_grad_(False).to(device)
    codec = LatentCodec.tiny_random(seed=UNTRAINED_SEED)
    codec.vae.to(device)
    return DefaultPipeline(model, text_encoder, codec, False, UNTRAINED_LABEL)
