"""Stage 2: ODE initialisation of the causal student (the CausVid / Self Forcing protocol).

The frozen teacher (with CFG) integrates its probability-flow ODE from noise; the states it
passes through at the student's plan timesteps are recorded, with the clean end point. The
student (the teacher's weights, block-causal with `chunk_frames`) then learns to map the
recorded state of each chunk, at a timestep drawn per chunk from the plan, to the end point
in one block-causal pass: x0 regression (MSE). Trajectories are generated per process,
deterministically from the seed, as many as the run reads, and cached in out_dir (also while
they are being made, every few minutes) so a resumed or interrupted run reuses them and makes
only the rest.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F
from tqdm import tqdm

from asd_core.atomic import atomic_path

from .. import dist
from ..rollout import noise_like, predict_x0, teacher_trajectory
from .base import StepResult, TransformerStage, apply_update, step_seed, update_ema, warmup_scheduler
from .common import (
    SAMPLE_COUNT,
    PromptSource,
    load_network,
    sample_codec,
    samples_wanted,
    student_vae,
    training_plan,
    video_size,
    write_sample_videos,
)
from .data import rank_indices

TRAJECTORY_SALT = 7  # step_seed salt of the trajectory noise (distinct from the per-step streams)
# Making the trajectories of a CPU run takes tens of minutes: what is made is written at least
# this often, so a stopped run loses minutes, not the lot (each write rewrites the whole file).
TRAJECTORY_SAVE_SECONDS = 300.0


def trajectory_batch(config) -> int:
    """Trajectories the teacher integrates at once (fixed per run: a trajectory's numbers may
    depend on its batch)."""
    return max(1, min(config.batch_size, 16))


class OdeInitStage(TransformerStage):
    name = "ode_init"

    def __init__(self, config, runtime):
        super().__init__(config, runtime)
        torch.manual_seed(config.seed)
        self.frames, self.height, self.width = video_size(config)
        if self.frames % config.chunk_frames:
            raise ValueError(f"num_frames={self.frames} must be a multiple of chunk_frames={config.chunk_frames}")
        self.first_steps, self.rest_steps = training_plan(config.plan)
        self.teacher = load_network(config.teacher, chunk_frames=self.frames, device=runtime.device, trainable=False)
        self.prompts = PromptSource(config, config.teacher, runtime.device)
        self.text_encoder = self.prompts.encoder  # toy runs ship the teacher's encoder beside the student
        self.trajectories = self._load_or_make_trajectories()

        self.model = load_network(config.init or config.teacher, chunk_frames=config.chunk_frames,
                                  device=runtime.device, trainable=True)
        self.model.gradient_checkpointing = config.gradient_checkpointing
        self.model_config = self.model.config
        dist.broadcast_module(self.model, runtime)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        # fsdp: student and EMA sharded alike. The frozen teacher stays replicated: it only makes
        # the trajectories, per rank, before training, and is never part of an update.
        for module in (self.model, self.ema):
            dist.shard_transformer(module, runtime)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, betas=tuple(config.betas),
                                           weight_decay=config.weight_decay)
        self.scheduler = warmup_scheduler(self.optimizer, config.warmup_steps)
        self.vae = student_vae(config, config.teacher)
        self.sample_codec = sample_codec(config, given=config.vae, recorded=self.vae,
                                         channels=self.model_config.in_channels, device=runtime.device,
                                         is_main=runtime.is_main)

    def record_at(self) -> tuple[float, ...]:
        return tuple(sorted(set(self.first_steps) | set(self.rest_steps), reverse=True))

    def trajectories_needed(self) -> int:
        """How many trajectories this run reads: max_steps x batch_size (indices cycle through
        num_trajectories), in whole generation batches. A 3-step smoke run makes a few, not the
        whole set; a longer resumed run makes the rest of the same sequence."""
        c = self.config
        per_batch = trajectory_batch(c)
        used = min(c.num_trajectories, c.max_steps * c.batch_size)
        return min(c.num_trajectories, -(-used // per_batch) * per_batch)

    def _load_or_make_trajectories(self) -> dict[str, torch.Tensor]:
        """{"states": (N, K, C, F, H, W) at record_at(), "x0": (N, C, F, H, W), "context": (N, L, D)}.

        The first N of this rank's num_trajectories, N = trajectories_needed(). Trajectory i is
        the same whatever N is: the noise of every generation batch is drawn in order (also for
        the batches already on disk, and discarded), and the batches are always the same.
        """
        c, rt = self.config, self.runtime
        path = Path(c.out_dir) / f"trajectories_rank{rt.rank}.safetensors"
        per_batch, need = trajectory_batch(c), self.trajectories_needed()
        have: dict[str, torch.Tensor] = {}
        if path.is_file():
            with safetensors.safe_open(str(path), "pt") as f:
                batched_alike = (f.metadata() or {}).get("per_batch") == str(per_batch)
            have = safetensors.torch.load_file(str(path))
            if have["x0"].shape[0] >= need:
                return have
            if not batched_alike:  # made with another batch size (or by an older trainer): start over
                have = {}
        done = have["x0"].shape[0] if have else 0
        generator = torch.Generator().manual_seed(step_seed(c.seed, rt.rank, 0, TRAJECTORY_SALT))
        record = self.record_at()
        channels = self.teacher.config.in_channels
        made: dict[str, list[torch.Tensor]] = {"states": [], "x0": [], "context": []}
        last_save = time.monotonic()
        bar = tqdm(total=need - done, desc="teacher trajectories", unit="traj", dynamic_ncols=True,
                   disable=not (c.progress and rt.is_main))
        for start in range(0, need, per_batch):
            count = min(per_batch, c.num_trajectories - start)
            noise = noise_like((count, channels, self.frames, self.height, self.width), generator, rt.device)
            if start < done:
                continue  # on disk already; its noise was drawn to keep the stream in step
            indices = [(rt.rank * c.num_trajectories + start + i) for i in range(count)]
            context = self.prompts.contexts(indices)
            recorded, x0 = teacher_trajectory(self.teacher, noise, context, self.prompts.uncond, c.cfg_scale,
                                              record, c.ode_steps, c.ode_shift)
            made["states"].append(torch.stack([recorded[round(float(t), 6)] for t in record], dim=1).cpu())
            made["x0"].append(x0.cpu())
            made["context"].append(context.float().cpu())
            bar.update(count)
            if time.monotonic() - last_save >= TRAJECTORY_SAVE_SECONDS and start + per_batch < need:
                self._save_trajectories(path, have, made, per_batch)
                last_save = time.monotonic()
        bar.close()
        return self._save_trajectories(path, have, made, per_batch)

    @staticmethod
    def _save_trajectories(path: Path, have: dict[str, torch.Tensor], made: dict[str, list[torch.Tensor]],
                           per_batch: int) -> dict[str, torch.Tensor]:
        """Write the trajectories on disk before this run plus those it made so far (atomically)."""
        data = {k: torch.cat(([have[k]] if have else []) + made[k]) for k in made}
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".tmp") as temp:
            safetensors.torch.save_file({k: v.contiguous() for k, v in data.items()}, str(temp),
                                        metadata={"per_batch": str(per_batch)})
        return data

    def modules(self):
        return {"model": self.model, "ema": self.ema}

    def optimizers(self):
        return {"student": self.optimizer}

    def schedulers(self):
        return {"student": self.scheduler}

    def export_plan(self) -> str:
        return self.config.plan

    def export_metadata(self) -> dict[str, str]:
        return {"asd.role": "ode_init"}

    def train_step(self, step: int) -> StepResult:
        c, rt = self.config, self.runtime
        generator = torch.Generator().manual_seed(step_seed(c.seed, rt.rank, step))
        # the pool itself is per rank; a run holds the first trajectories_needed() of it, all it reads
        indices = rank_indices(step, c.batch_size, 0, 1, pool=c.num_trajectories)
        states = self.trajectories["states"][indices].to(rt.device)  # (B, K, C, F, H, W)
        x0 = self.trajectories["x0"][indices].to(rt.device)
        context = self.trajectories["context"][indices].to(rt.device)

        # One plan timestep per chunk (CausVid: independent per block), repeated over its frames.
        record = self.record_at()
        chunk, batch = c.chunk_frames, len(indices)
        slot = torch.empty(batch, self.frames, dtype=torch.long)
        timesteps = torch.empty(batch, self.frames)
        for k in range(self.frames // chunk):
            steps = self.first_steps if k == 0 else self.rest_steps
            pick = torch.randint(len(steps), (batch,), generator=generator).tolist()
            frames = slice(k * chunk, (k + 1) * chunk)
            timesteps[:, frames] = torch.tensor([steps[j] for j in pick], dtype=torch.float32)[:, None]
            slot[:, frames] = torch.tensor([record.index(steps[j]) for j in pick])[:, None]
        # x_t: per frame, the trajectory state at that frame's timestep.
        gather = slot.to(rt.device)[:, None, None, :, None, None].expand(-1, 1, *states.shape[2:])
        x_t = states.gather(1, gather).squeeze(1)  # (B, C, F, H, W)
        pred = predict_x0(self.model, x_t, timesteps.to(rt.device), context)
        loss = F.mse_loss(pred, x0.float())
        applied, norm = apply_update(loss, list(self.model.parameters()), self.optimizer, rt, c.grad_clip)
        if applied:
            self.scheduler.step()
            update_ema(self.ema, self.model, c.ema_decay, step, c.ema_start)
        return StepResult({"loss": loss.item(), "grad_norm": norm}, [] if applied else ["student"])

    def write_samples(self, step: int, directory: Path) -> list[Path]:
        """The EMA student at its plan on the first prompts (fixed seeds), no CFG: what export ships."""
        if not samples_wanted(self):
            return []
        return write_sample_videos(self, self.ema, directory, step, plan=self.config.plan,
                                   context=self.prompts.contexts(list(range(SAMPLE_COUNT))))
