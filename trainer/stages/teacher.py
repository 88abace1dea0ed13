"""Stage 1: the many-step flow-matching teacher, bidirectional Wan (plus the toy text encoder).

The teacher is our `CausalWanTransformer` with `chunk_frames >= num_frames`, which is
exactly the bidirectional Wan forward. Text is dropped to the unconditional context with
probability `cfg_dropout`, so the teacher supports CFG (the real score of DMD).
Training timesteps: u ~ U(0, 1) warped by `timestep_shift` (more time at high noise).

Data: `synthetic` encodes toy-domain clips once with the frozen VAE and trains the toy text
encoder jointly (dropped text = the empty caption); `latents` reads precomputed shards
(`python -m trainer.prepare latents`) with their frozen text embeddings, trains the
transformer only, and drops text to `uncond_file`'s context (zeros when not given).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from asd_core.checkpoint import GUIDANCE_METADATA
from asd_core.config import CausalWanConfig
from asd_core.losses import add_noise, flow_matching_loss
from asd_core.model import CausalWanTransformer
from asd_core.schedule import sigma_to_timestep, warp_sigma
from asd_core.toy.defaults import toy_model_config
from asd_core.toy.text_encoder import ToyTextConfig, ToyTextEncoder
from asd_core.vae import LatentCodec

from .. import dist
from .base import StepResult, TransformerStage, apply_update, step_seed, update_ema, warmup_scheduler
from .common import (
    SAMPLE_COUNT,
    TEACHER_SAMPLE_PLAN,
    resolve_model_file,
    sample_codec,
    samples_wanted,
    vae_source,
    write_sample_videos,
)
from .data import VAE_METADATA, LatentPool, LatentShards, rank_indices, read_uncond

TEACHER_PLAN = "50"  # the teacher's many-step plan, written into its checkpoint


class TeacherStage(TransformerStage):
    name = "teacher"

    def __init__(self, config, runtime):
        super().__init__(config, runtime)
        torch.manual_seed(config.seed)
        self.codec = self.shards = self.text_encoder = None
        if config.data == "latents":
            self.shards = LatentShards(config.latent_dir)
            self.frames, self.height, self.width = (config.num_frames or self.shards.latent_shape[1],
                                                    config.latent_height or self.shards.latent_shape[2],
                                                    config.latent_width or self.shards.latent_shape[3])
        else:
            if not config.vae:
                raise ValueError("the teacher needs vae=RUN_DIR_OR_FILE (the vae stage's output) to encode its clips")
            self.codec = LatentCodec.load(resolve_model_file(config.vae), device=runtime.device)
            self.frames = config.num_frames or 9
            self.height, self.width = config.latent_height or 8, config.latent_width or 8
            self.pool = LatentPool(self.codec, config.pool_size, (self.frames - 1) * 4 + 1, self.height * 8,
                                   self.width * 8)

        values = {**toy_model_config().__dict__, **config.model, "chunk_frames": max(self.frames, 1)}
        self.model_config = CausalWanConfig.from_dict(values)
        self.model = CausalWanTransformer(self.model_config).to(runtime.device)
        self.model.gradient_checkpointing = config.gradient_checkpointing
        if self.shards is not None:
            self.shards.check_fits(channels=self.model_config.in_channels, text_dim=self.model_config.text_dim,
                                   frames=self.frames, height=self.height, width=self.width)
            self.uncond = read_uncond(config.uncond_file, *self.shards.context_shape).to(runtime.device)
        else:
            self.text_encoder = ToyTextEncoder(ToyTextConfig(width=self.model_config.text_dim,
                                                             **config.text_encoder)).to(runtime.device)
        for module in (self.model, self.text_encoder):
            if module is not None:
                dist.broadcast_module(module, runtime)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        # fsdp: the transformer and its EMA sharded alike; the toy text encoder (small) stays replicated.
        for module in (self.model, self.ema):
            dist.shard_transformer(module, runtime)
        groups = [{"params": list(self.model.parameters()), "lr": config.lr}]
        if self.text_encoder is not None:
            groups.append({"params": list(self.text_encoder.parameters()), "lr": config.text_lr})
        self.optimizer = torch.optim.AdamW(groups, betas=tuple(config.betas), weight_decay=config.weight_decay)
        self.scheduler = warmup_scheduler(self.optimizer, config.warmup_steps)
        self.vae = self._vae_path()
        self.sample_codec = self.codec if config.sample_every else None
        if self.shards is not None:
            self.sample_codec = sample_codec(
                config, given=config.vae, recorded=self.shards.metadata.get(VAE_METADATA, ""),
                channels=self.model_config.in_channels, device=runtime.device, is_main=runtime.is_main,
                hint="set vae=THE_VAE_THE_SHARDS_WERE_ENCODED_WITH")

    def _vae_path(self) -> str:
        """The VAE this teacher's latents belong to, recorded in run.json for the students' samples."""
        if self.shards is None:
            return str(resolve_model_file(self.config.vae).resolve())
        if self.config.vae:
            return str(Path(vae_source(self.config.vae)).resolve())
        return self.shards.metadata.get(VAE_METADATA, "")

    def modules(self):
        networks = {"model": self.model, "ema": self.ema}
        return networks if self.text_encoder is None else {**networks, "text_encoder": self.text_encoder}

    def optimizers(self):
        return {"teacher": self.optimizer}

    def schedulers(self):
        return {"teacher": self.scheduler}

    def export_plan(self) -> str:
        return TEACHER_PLAN

    def export_metadata(self) -> dict[str, str]:
        return {"asd.role": "teacher", GUIDANCE_METADATA: str(self.config.sample_cfg)}

    def batch(self, indices: list[int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean latents (B, C, F, H, W) and text contexts (B, L, D), each text dropped with p = cfg_dropout."""
        c, device = self.config, self.runtime.device
        drop = [bool(torch.rand((), generator=generator) < c.cfg_dropout) for _ in indices]
        if self.shards is None:
            x0 = self.pool.latents(indices).to(device)
            texts = ["" if dropped else text for text, dropped in zip(self.pool.captions(indices), drop)]
            return x0, self.text_encoder.encode(texts)
        x0, context = self.shards.read(indices)
        context = context.to(device)
        context[torch.tensor(drop, device=device)] = self.uncond
        return x0.to(device), context

    def train_step(self, step: int) -> StepResult:
        c, rt = self.config, self.runtime
        generator = torch.Generator().manual_seed(step_seed(c.seed, rt.rank, step))
        pool = len(self.pool) if self.shards is None else len(self.shards)
        indices = rank_indices(step, c.batch_size, rt.rank, rt.world_size, pool=pool)
        x0, context = self.batch(indices, generator)
        u = torch.rand(len(indices), generator=generator)
        sigma = torch.tensor([warp_sigma(float(v), c.timestep_shift) for v in u])
        noise = torch.randn(x0.shape, generator=generator).to(rt.device)
        x_t = add_noise(x0, noise, sigma.to(rt.device))
        pred = self.model(x_t, sigma_to_timestep(sigma).to(rt.device), context)
        loss = flow_matching_loss(pred, x0, noise)
        parameters = [p for module in (self.model, self.text_encoder) if module is not None
                      for p in module.parameters()]
        applied, norm = apply_update(loss, parameters, self.optimizer, rt, c.grad_clip)
        if applied:
            self.scheduler.step()
            update_ema(self.ema, self.model, c.ema_decay, step, c.ema_start)
        return StepResult({"loss": loss.item(), "grad_norm": norm}, [] if applied else ["teacher"])

    @torch.no_grad()
    def write_samples(self, step: int, directory: Path) -> list[Path]:
        """The EMA teacher at a short plan with CFG, on the first training prompts (fixed seeds)."""
        if not samples_wanted(self):
            return []
        count = SAMPLE_COUNT
        if self.shards is None:
            context = self.text_encoder.encode(self.pool.captions(list(range(count))))
            uncond = self.text_encoder.encode([""])
        else:
            context = self.shards.read([i % len(self.shards) for i in range(count)])[1]
            uncond = self.uncond
        return write_sample_videos(self, self.ema, directory, step, plan=TEACHER_SAMPLE_PLAN, context=context,
                                   uncond=uncond, cfg_scale=self.config.sample_cfg)
