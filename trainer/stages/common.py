"""Pieces the stages share: networks from checkpoints, prompts, plans, sample videos.

The student stages (ode_init, distill) are data-free: they need prompts only. Toy runs take
captions of the synthetic domain (or a prompts file) through the teacher run's frozen toy text
encoder; real-size runs read precomputed umT5 embeddings (`prompt_embeddings`, a safetensors
file with `context`). Sample videos are decoded by the VAE the teacher's latents came from,
which each run records in its run.json.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import safetensors.torch
import torch
from tqdm import tqdm

from asd_core.checkpoint import read_checkpoint
from asd_core.config import CausalWanConfig
from asd_core.model import CausalWanTransformer
from asd_core.schedule import parse_plan, sigma_to_timestep, warp_sigma
from asd_core.toy.defaults import TOY
from asd_core.toy.domain import caption, sample_video_spec
from asd_core.toy.text_encoder import ToyTextEncoder
from asd_core.vae import SPATIAL_FACTOR, LatentCodec, load_codec, pixels_to_video

from ..run_files import RUN_FILE
from .base import TEXT_ENCODER_FILE
from .data import TRAIN_STREAM, read_uncond

SAMPLE_COUNT = 2  # sample videos per sample step: prompts 0..1, seeds 0..1, the same at every step
TEACHER_SAMPLE_PLAN = "20"  # enough Euler steps to judge the teacher, cheap next to a save
STUDENT_VAE_HINT = "set vae=RUN_DIR_OR_FILE (the VAE the teacher's latents came from) to get sample videos"


def resolve_model_file(path: str) -> Path:
    """A run directory (its exported model.safetensors) or a file."""
    candidate = Path(path)
    if candidate.is_dir():
        candidate = candidate / "model.safetensors"
    if not candidate.is_file():
        raise ValueError(f"{path!r}: no such file or run directory with a model.safetensors (run that stage first)")
    return candidate


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


def training_plan(spec: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(first-chunk timesteps, later-chunk timesteps) of a plan, after the warp."""
    plan = parse_plan(spec)
    return tuple(plan.first), tuple(plan.rest)


def shifted_timesteps(batch: int, generator: torch.Generator, low: float, high: float, shift: float) -> torch.Tensor:
    """(B,) timesteps in [0, 1000]: u ~ U(low, high), warped by `shift` (more time at high noise)."""
    u = low + (high - low) * torch.rand(batch, generator=generator)
    return torch.tensor([sigma_to_timestep(warp_sigma(float(v), shift)) for v in u])


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
            self.embeddings = safetensors.torch.load_file(str(path)).get("context")
            if self.embeddings is None or self.embeddings.ndim != 3:
                raise ValueError(f"prompt_embeddings={path} must hold `context` (N, L, D); "
                                 "`python -m trainer.prepare prompts` writes one")
            self.embeddings = self.embeddings.float()
            self.prompts = None
            self.uncond = read_uncond(config.uncond_file, *self.embeddings.shape[1:]).to(device)
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


# -- sample videos ---------------------------------------------------------------------------


def vae_source(path: str) -> str:
    """A VAE given as a vae-stage run dir (its model.safetensors), a file or a diffusers folder."""
    candidate = Path(path)
    if candidate.is_dir() and (candidate / "model.safetensors").is_file():
        return str(candidate / "model.safetensors")
    if not candidate.exists():
        raise ValueError(f"vae={path!r}: no such VAE file, vae run directory or diffusers folder")
    return str(candidate)


def recorded_vae(*runs: str) -> str:
    """The VAE the first of these run dirs recorded in its run.json ("" for model files or none recorded)."""
    for run in runs:
        record = Path(run) / RUN_FILE if run else None
        if record is None or not record.is_file():
            continue
        values = json.loads(record.read_text())
        vae = values.get("vae") or values.get("config", {}).get("vae") or ""
        if vae:
            return vae
    return ""


def student_vae(config, *runs: str) -> str:
    """The VAE a student stage records and samples with: its own `vae`, else the one its runs name."""
    if config.vae:
        return str(Path(vae_source(config.vae)).resolve())
    return recorded_vae(*runs)


def sample_codec(config, *, given: str, recorded: str, channels: int, device, is_main: bool,
                 hint: str = STUDENT_VAE_HINT) -> LatentCodec | None:
    """The VAE that decodes sample videos, loaded only when the run writes them (sample_every > 0).

    `given` (the config's vae) must exist; `recorded` (named by an earlier run or the shards)
    may have moved: then, or with neither, sampling is skipped with one warning.
    """
    if not config.sample_every:
        return None
    source = vae_source(given) if given else recorded
    if source and not given and not Path(source).exists():
        source, hint = "", f"the recorded VAE {recorded!r} is gone; {hint}"
    if not source:
        if is_main:
            tqdm.write(f"warning: sample_every={config.sample_every} but no VAE to decode samples, so none are "
                       f"written: {hint}", file=sys.stderr)
        return None
    codec = load_codec(vae_source(source), device=device)
    if codec.latent_channels != channels:
        raise ValueError(f"the VAE {source} makes {codec.latent_channels}-channel latents but the model works on "
                         f"{channels}: give vae= the VAE the training latents came from")
    return codec


def sample_format(height: int, width: int) -> tuple[str, float]:
    """(suffix, fps): toy-sized videos as GIF at the toy fps, larger ones as H.264 .mp4 at Wan's 16 fps."""
    if height <= 4 * TOY.height and width <= 4 * TOY.width:
        return ".gif", float(TOY.fps)
    return ".mp4", 16.0


def samples_wanted(stage) -> bool:
    """Whether this rank samples now: a VAE to decode with, and rank 0 (every rank when the
    model is sharded, since its forward passes need all of them)."""
    return stage.sample_codec is not None and (stage.runtime.is_main or stage.runtime.sharded)


@torch.no_grad()
def write_sample_videos(stage, model, directory: Path, step: int, *, plan: str, context: torch.Tensor,
                        uncond: torch.Tensor | None = None, cfg_scale: float = 1.0) -> list[Path]:
    """One video per row of `context` (seed = row), sampled with the causal sampler, decoded, written.

    The stage gives the video size (`frames`, `height`, `width` in latents), the VAE
    (`sample_codec`), the precision and the rank. Files: directory/step_XXXXXXX_k.gif (or
    .mp4). The model's KV cache is freed afterwards: the training step needs that memory more
    than the next sample call needs the speed. Ranks other than 0 (a sharded model) sample
    only and return []: decoding and writing are rank 0's.
    """
    from asd_core.sampler import sample_video
    from asd_core.video_io import write_video

    device, height, width = model.device, stage.height, stage.width
    chunks = []
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=stage.config.precision == "bf16"):
            for chunk in sample_video(model, plan=parse_plan(plan), context=context.to(device).float(),
                                      negative_context=None if uncond is None else uncond.to(device).float(),
                                      cfg_scale=cfg_scale, num_frames=stage.frames, latent_height=height,
                                      latent_width=width, seeds=list(range(context.shape[0]))):
                chunks.append(chunk.float())
    finally:
        model._reusable_kv_cache = None  # the sampler keeps its cache on the model between videos
    if not stage.runtime.is_main:
        return []
    with stage.sample_codec.decode_stream() as stream:
        pixels = torch.cat([stream.push(chunk).cpu() for chunk in chunks], dim=2)
    suffix, fps = sample_format(height * SPATIAL_FACTOR, width * SPATIAL_FACTOR)
    return [write_video(directory / f"step_{step:07d}_{k}{suffix}", video, fps=fps)
            for k, video in enumerate(pixels_to_video(pixels))]
