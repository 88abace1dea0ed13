"""The built-in default: a small model of the synthetic shapes domain that runs anywhere.

The trained files ship in `asd_core/toy/weights/` (produced by `trainer/`, issue "built-in
default"): `student.safetensors` (the ASD student), `teacher.safetensors`,
`vae.safetensors`, `text_encoder.safetensors`. Until they are there, `load_default_pipeline`
builds the same architecture with random weights and labels it UNTRAINED everywhere it is
shown, so nobody mistakes its output for the real thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import CausalWanConfig

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_FILES = {
    "student": "student.safetensors",
    "teacher": "teacher.safetensors",
    "vae": "vae.safetensors",
    "text_encoder": "text_encoder.safetensors",
}
# The guidance the shipped teacher is sampled with (`asd-eval --model teacher`) and the real score
# the shipped students were distilled toward: picked among 1.5, 2, 2.5 and 3 by a rule fixed before
# the sweep (docs/results.md, "Where the quality goes", item 5). One constant, so the two cannot drift apart.
TEACHER_CFG = 2.0
# The prompt asd-generate and the ASD Text Encode node start from: at the student's own plan, 1*,
# it draws one circle reliably and squares as rounded blobs (workflows/README.md has the scores).
DEFAULT_PROMPT = "a red circle"
UNTRAINED_LABEL = "UNTRAINED random model: the trained default is not shipped yet"
UNTRAINED_SEED = 20251102


@dataclass(frozen=True)
class ToyDomainSizes:
    """Every size of the toy domain in one place: 33 frames of 64x64 -> 9 latent frames of 8x8 = 3 chunks."""

    # videos
    pixel_frames: int = 33
    height: int = 64
    width: int = 64
    fps: int = 8
    # latents (Wan VAE: 4x time, 8x space, 16 channels)
    latent_channels: int = 16
    latent_frames: int = 9
    latent_height: int = 8
    latent_width: int = 8
    # transformer base: 4 layers, 2 heads x 64 = width 128 (about 1.2M parameters). The shipped
    # default is larger (trainer/configs/toy/teacher.yaml: 6 layers, 4 heads, FFN 512, 5.3M) and its
    # files carry their own config; this base is the untrained fallback's and the benchmarks'.
    num_layers: int = 4
    num_heads: int = 2
    head_dim: int = 64
    ffn_dim: int = 256
    text_dim: int = 64
    freq_dim: int = 64
    chunk_frames: int = 3
    patch_size: tuple[int, int, int] = (1, 2, 2)
    # toy text encoder
    text_length: int = 16

    @property
    def num_chunks(self) -> int:
        return self.latent_frames // self.chunk_frames


TOY = ToyDomainSizes()


def toy_model_config() -> CausalWanConfig:
    """The toy base architecture (see TOY): what the teacher stage starts from before its config's `model`."""
    return CausalWanConfig(num_layers=TOY.num_layers, num_attention_heads=TOY.num_heads,
                           attention_head_dim=TOY.head_dim, ffn_dim=TOY.ffn_dim,
                           in_channels=TOY.latent_channels, out_channels=TOY.latent_channels,
                           text_dim=TOY.text_dim, freq_dim=TOY.freq_dim, patch_size=TOY.patch_size,
                           rope_max_seq_len=256, chunk_frames=TOY.chunk_frames)


def default_file(name: str) -> Path:
    return WEIGHTS_DIR / DEFAULT_FILES[name]


def default_pipeline_files() -> dict[str, Path]:
    """The shipped default files that exist, by role ("student", "teacher", "vae", "text_encoder")."""
    return {name: default_file(name) for name in DEFAULT_FILES if default_file(name).exists()}


@dataclass
class DefaultPipeline:
    model: torch.nn.Module  # CausalWanTransformer
    text_encoder: torch.nn.Module  # text_encoder.ToyTextEncoder
    codec: object  # vae.LatentCodec
    trained: bool
    label: str  # shown with every output: says UNTRAINED when it is
    sizes: ToyDomainSizes = TOY


def load_default_pipeline(device="cpu", dtype: torch.dtype = torch.float32, allow_untrained: bool = True,
                          which: str = "student") -> DefaultPipeline:
    """The built-in default model with its text encoder and VAE (an untrained stand-in if not shipped).

    `which`: "student" (the few-step ASD model) or "teacher" (many-step). Text encoder and
    VAE stay float32 whatever `dtype` (they are small and run once per video).
    """
    from ..checkpoint import load_model
    from ..model import CausalWanTransformer, cast_for_inference
    from ..vae import LatentCodec
    from .text_encoder import ToyTextConfig, ToyTextEncoder

    if which not in ("student", "teacher"):
        raise ValueError(f"which must be 'student' or 'teacher', got {which!r}")
    files = default_pipeline_files()
    needed = (which, "vae", "text_encoder")
    if all(name in files for name in needed):
        model = load_model(files[which], device=device, dtype=dtype)
        text_encoder = ToyTextEncoder.load(files["text_encoder"], device=device)
        codec = LatentCodec.load(files["vae"], device=device)
        plan = f", trained plan {model.trained_plan}" if model.trained_plan else ""
        return DefaultPipeline(model, text_encoder, codec, True, f"built-in default {which}{plan}")
    if not allow_untrained:
        missing = [DEFAULT_FILES[name] for name in needed if name not in files]
        raise FileNotFoundError(f"the built-in default is not shipped in {WEIGHTS_DIR}: missing {missing}")

    with torch.random.fork_rng(devices=[]):  # fixed weights, and the caller's RNG state is left alone
        torch.manual_seed(UNTRAINED_SEED)
        model = CausalWanTransformer(toy_model_config())
        text_encoder = ToyTextEncoder(ToyTextConfig(width=TOY.text_dim, max_length=TOY.text_length))
    model = cast_for_inference(model.eval().requires_grad_(False).to(device), dtype)
    text_encoder = text_encoder.eval().requires_grad_(False).to(device)
    codec = LatentCodec.tiny_random(seed=UNTRAINED_SEED)
    codec.vae.to(device)
    return DefaultPipeline(model, text_encoder, codec, False, UNTRAINED_LABEL)
