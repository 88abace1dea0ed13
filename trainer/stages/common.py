"""Pieces the student stages (ode_init, distill) share: networks from checkpoints, prompts, plans.

Both stages are data-free: they need prompts only. Toy runs take captions of the synthetic
domain (or a prompts file) through the teacher run's frozen toy text encoder; real-size runs
read precomputed umT5 embeddings (`prompt_embeddings`, a safetensors file with `context`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import safetensors.torch
import torch

from asd_core.checkpoint import read_checkpoint
from asd_core.config import CausalWanConfig
from asd_core.defaults import TOY
from asd_core.model import CausalWanTransformer
from asd_core.schedule import parse_plan, warp_sigma
from asd_core.text import ToyTextEncoder
from asd_core.toy.domain import caption, sample_video_spec

from .data import TRAIN_STREAM
from .teacher import TEXT_ENCODER_FILE, resolve_model_file


def video_size(config) -> tuple[int, int, int]:
    """(latent frames, latent height, latent width); 0 in the config = the toy domain's size."""
    return (config.num_frames or TOY.latent_frames, config.latent_height or TOY.latent_height,
            config.latent_width or TOY.latent_width)


def load_network(path: str | Path, *, chunk_frames: int, device, trainable: bool) -> CausalWanTransformer:
    """A CausalWanTransformer from a run dir / model file, re-chunked (teacher and critic: bidirectional)."""
    checkpoint = read_checkpoint(resolve_model_file(str(path)))
    config = replace(checkpoint.config, chunk_frames=chunk_frames)
    model = CausalWanTransformer(config)
    model.load_state_dict(checkpoint.state_dict, strict=True)
    model = model.to(device)
    model.trained_plan = checkpoint.plan
    return model.train() if trainable else model.requires_grad_(False).eval()


def model_config_of(path: str | Path) -> CausalWanConfig:
    return read_checkpoint(resolve_model_file(str(path))).config


def training_plan(spec: str, first_spec: str = "") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(first-chunk timesteps, later-chunk timesteps) after the warp; `first_spec` = FFE's longer first plan."""
    plan = parse_plan(spec)
    first = parse_plan(first_spec).first if first_spec else plan.first
    return tuple(first), tuple(plan.rest)


def shifted_timesteps(batch: int, generator: torch.Generator, low: float, high: float, shift: float) -> torch.Tensor:
    """(B,) timesteps in [0, 1000]: u ~ U(low, high), warped by `shift` (more time at high noise)."""
    u = low + (high - low) * torch.rand(batch, generator=generator)
    return torch.tensor([warp_sigma(float(v), shift) * 1000.0 for v in u])


class PromptSource:
    """Prompt contexts by index (ranks take disjoint indices) and the unconditional context."""

    def __init__(self, config, teacher: str, device):
        self.device = device
        self.encoder = None
        self.embeddings = None
        if config.prompt_embeddings:
            path = Path(config.prompt_embeddings)
            if not path.is_file():
                raise ValueError(f"prompt_embeddings={path} not found (a safetensors file with `context` (N, L, D))")
            self.embeddings = safetensors.torch.load_file(str(path))["context"].float()
            self.prompts = None
            if config.uncond_file:
                self.uncond = safetensors.torch.load_file(config.uncond_file)["context"].float()[:1].to(device)
            else:
                self.uncond = torch.zeros_like(self.embeddings[:1]).to(device)
            return
        encoder_file = resolve_model_file(teacher).parent / TEXT_ENCODER_FILE
        if not encoder_file.is_file():
            raise ValueError(f"{encoder_file} not found: toy runs need the teacher run's text encoder "
                             "(or give prompt_embeddings=FILE for precomputed embeddings)")
        self.encoder = ToyTextEncoder.load(encoder_file, device=device).requires_grad_(False)
        self.prompts = None
        if config.prompts_file:
            path = Path(config.prompts_file)
            if not path.is_file():
                raise ValueError(f"prompts_file={path} not found (one prompt per line)")
            self.prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            if not self.prompts:
                raise ValueError(f"prompts_file={path} holds no prompts")
        with torch.no_grad():
            self.uncond = self.encoder.encode([""])  # the teacher's CFG dropout used the empty caption

    def text(self, index: int) -> str:
        if self.prompts is not None:
            return self.prompts[index % len(self.prompts)]
        return caption(sample_video_spec(TRAIN_STREAM, index))

    @torch.no_grad()
    def contexts(self, indices: list[int]) -> torch.Tensor:
        """(B, L, D) text contexts of these prompt indices."""
        if self.embeddings is not None:
            return self.embeddings[[i % len(self.embeddings) for i in indices]].to(self.device)
        return self.encoder.encode([self.text(i) for i in indices])
