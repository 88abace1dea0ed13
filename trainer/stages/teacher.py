"""Stage 1: the many-step flow-matching teacher, bidirectional Wan, plus the toy text encoder.

The teacher is our `CausalWanTransformer` with `chunk_frames >= num_frames`, which is
exactly the bidirectional Wan forward. Text is dropped to the unconditional (all-zero)
context with probability `cfg_dropout`, so the teacher supports CFG (the real score of DMD).
Training timesteps: u ~ U(0, 1) warped by `timestep_shift` (more time at high noise).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from asd_core.checkpoint import save_checkpoint
from asd_core.config import CausalWanConfig
from asd_core.defaults import toy_model_config
from asd_core.losses import add_noise, flow_matching_loss
from asd_core.model import CausalWanTransformer
from asd_core.schedule import warp_sigma
from asd_core.text import ToyTextConfig, ToyTextEncoder
from asd_core.vae import LatentCodec

from .. import dist
from ..loop import Stage, StepResult, apply_update, step_seed, update_ema
from .data import encode_pool, rank_indices

TEACHER_PLAN = "50"  # the teacher's many-step plan, written into its checkpoint
TEXT_ENCODER_FILE = "text_encoder.safetensors"


def resolve_model_file(path: str) -> Path:
    """A run directory (its exported model.safetensors) or a file."""
    candidate = Path(path)
    if candidate.is_dir():
        candidate = candidate / "model.safetensors"
    if not candidate.is_file():
        raise ValueError(f"{path!r}: no such file or run directory with a model.safetensors (run that stage first)")
    return candidate


class TeacherStage(Stage):
    name = "teacher"

    def __init__(self, config, runtime):
        super().__init__(config, runtime)
        if config.data != "synthetic":
            raise ValueError("this release trains the teacher on the synthetic toy domain only (data=synthetic); "
                             "latent shards are the next milestone")
        if not config.vae:
            raise ValueError("the teacher needs vae=RUN_DIR_OR_FILE (the vae stage's output) to encode its clips")
        torch.manual_seed(config.seed)
        self.codec = LatentCodec.load(resolve_model_file(config.vae), device=runtime.device)
        frames = config.num_frames or 9
        pixel_frames = (frames - 1) * 4 + 1
        height, width = (config.latent_height or 8) * 8, (config.latent_width or 8) * 8
        self.pool, self.captions = encode_pool(self.codec, config.pool_size, pixel_frames, height, width)

        values = {**toy_model_config().__dict__, **config.model, "chunk_frames": max(frames, 1)}
        self.model_config = CausalWanConfig.from_dict(values)
        self.model = CausalWanTransformer(self.model_config).to(runtime.device)
        self.text_encoder = ToyTextEncoder(ToyTextConfig(width=self.model_config.text_dim,
                                                         **config.text_encoder)).to(runtime.device)
        for module in (self.model, self.text_encoder):
            dist.broadcast_module(module, runtime)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            [{"params": self.model.parameters(), "lr": config.lr},
             {"params": self.text_encoder.parameters(), "lr": config.text_lr}],
            betas=tuple(config.betas), weight_decay=config.weight_decay)
        warmup = config.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0)

    def modules(self):
        return {"model": self.model, "ema": self.ema, "text_encoder": self.text_encoder}

    def optimizers(self):
        return {"teacher": self.optimizer}

    def schedulers(self):
        return {"teacher": self.scheduler}

    def checkpoint_extra(self):
        return {"model_config": self.model_config.to_json(), "plan": TEACHER_PLAN}

    def train_step(self, step: int) -> StepResult:
        c, rt = self.config, self.runtime
        generator = torch.Generator().manual_seed(step_seed(c.seed, rt.rank, step))
        indices = rank_indices(step, c.batch_size, rt.rank, rt.world_size, pool=len(self.pool))
        x0 = self.pool[indices].to(rt.device)
        texts = [self.captions[i] if torch.rand((), generator=generator) >= c.cfg_dropout else "" for i in indices]
        u = torch.rand(len(indices), generator=generator)
        sigma = torch.tensor([warp_sigma(float(v), c.timestep_shift) for v in u])
        noise = torch.randn(x0.shape, generator=generator).to(rt.device)
        x_t = add_noise(x0, noise, sigma.to(rt.device))
        context = self.text_encoder.encode(texts)
        pred = self.model(x_t, (sigma * 1000).to(rt.device), context)
        loss = flow_matching_loss(pred, x0, noise)
        parameters = list(self.model.parameters()) + list(self.text_encoder.parameters())
        applied, norm = apply_update(loss, parameters, self.optimizer, rt, c.grad_clip)
        if applied:
            self.scheduler.step()
            update_ema(self.ema, self.model, c.ema_decay, step, c.ema_start)
        return StepResult({"loss": loss.item(), "grad_norm": norm}, [] if applied else ["teacher"])

    def export(self, path: Path) -> Path:
        """EMA teacher as our checkpoint (config + plan), its text encoder beside it."""
        save_checkpoint(path, self.ema.state_dict(), self.model_config, plan=TEACHER_PLAN,
                        extra={"asd.role": "teacher"})
        self.text_encoder.save(path.parent / TEXT_ENCODER_FILE)
        return path
