"""What every stage shares: the Stage interface, one optimizer update, the EMA, the warmup
schedule, per-step seeds and the export of a trained transformer.

The loop (trainer/loop.py) drives a Stage and imports the stages; the stages import this
module and never the loop, so the arrows point one way: loop -> stages -> base.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from asd_core.checkpoint import save_checkpoint

from .. import dist
from ..config import RunConfig
from ..state import network_state

TEXT_ENCODER_FILE = "text_encoder.safetensors"  # the toy text encoder, shipped beside a model file


@dataclass
class StepResult:
    logs: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # names of updates skipped for non-finite values


def step_seed(seed: int, rank: int, step: int, salt: int = 0) -> int:
    """A 63-bit seed for one (run, rank, step, purpose): independent streams, exact on resume."""
    value = (seed * 1_000_003 + rank) * 1_000_033 + step
    value = value * 1_000_037 + salt
    return value % (2**63 - 1)


def apply_update(loss: torch.Tensor, parameters: list, optimizer: torch.optim.Optimizer, runtime: dist.Runtime,
                 grad_clip: float) -> tuple[bool, float]:
    """Backward, average gradients over ranks, clip, step; skip (zero grads) when anything is non-finite.

    Returns (applied, grad_norm). All ranks agree on skipping, so weights stay identical.
    Sharded (FSDP) parameters get their gradients averaged by FSDP in backward; only the
    replicated ones go through `dist.average_gradients`. The norm is always the global one.
    """
    optimizer.zero_grad(set_to_none=True)
    if dist.any_rank(not bool(torch.isfinite(loss.detach()).all()), runtime):
        return False, float("nan")
    loss.backward()
    dist.average_gradients(parameters, runtime)
    max_norm = grad_clip if grad_clip > 0 else float("inf")
    if any(dist.is_sharded(p) for p in parameters):
        norm = clip_sharded_grad_norm_(parameters, max_norm)
    else:
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    if not bool(torch.isfinite(norm)):
        optimizer.zero_grad(set_to_none=True)
        return False, float("nan")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return True, float(norm)


def clip_sharded_grad_norm_(parameters: list, max_norm: float) -> torch.Tensor:
    """`clip_grad_norm_` over a mix of sharded (DTensor) and replicated parameters; returns the global norm.

    The norm of the sharded gradients is a DTensor reduced over the ranks (`full_tensor` gives
    every rank the same value); the replicated gradients are identical on every rank after
    averaging, so their norm is added once, not summed over ranks. torch's clip cannot take
    both kinds in one list (it stacks per-tensor norms), hence two groups scaled by one norm.
    """
    groups = [[p for p in parameters if p.grad is not None and dist.is_sharded(p)],
              [p for p in parameters if p.grad is not None and not dist.is_sharded(p)]]
    norms = []
    for group in groups:
        if group:
            norm = torch.nn.utils.get_total_norm([p.grad for p in group])
            norms.append(norm.full_tensor() if dist.is_sharded(norm) else norm)
    total = torch.nn.utils.get_total_norm(norms)
    for group in groups:
        if group:
            torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int, start: int) -> None:
    """EMA of the weights; before `start` it tracks the weights exactly (Self Forcing starts at 200).

    Under fsdp the EMA is sharded exactly as the model (`dist.shard_transformer` on both), so
    each rank averages its own shard: no communication, and the shards line up element by element.
    """
    d = decay if step >= start else 0.0
    for e, p in zip(ema.parameters(), model.parameters()):
        if dist.is_sharded(e) != dist.is_sharded(p):
            raise RuntimeError("EMA and model must be sharded alike (shard both with dist.shard_transformer)")
        dist.local(e).lerp_(dist.local(p).detach().to(e.dtype), 1 - d)


def warmup_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int):
    """Linear warmup to the configured rate, then constant (Self Forcing uses a constant rate)."""
    if warmup_steps <= 0:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup_steps))


class Stage:
    """Base of the stage classes: networks to save, one step, samples, the final model."""

    name = ""

    def __init__(self, config: RunConfig, runtime: dist.Runtime):
        self.config = config
        self.runtime = runtime
        self.out_dir = Path(config.out_dir)

    # Filled by subclasses.
    def modules(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def schedulers(self) -> dict:
        raise NotImplementedError

    def generators(self) -> dict[str, torch.Generator]:
        return {}

    def checkpoint_extra(self) -> dict:
        """JSON-able facts the final model and `asd-train export --step` need, kept in every checkpoint."""
        return {}

    def train_step(self, step: int) -> StepResult:
        raise NotImplementedError

    def write_samples(self, step: int, directory: Path) -> list[Path]:
        """Sample videos; called on every rank (a sharded EMA needs all ranks for its forward), rank 0 writes."""
        return []

    def export(self, path: Path) -> Path:
        """The final model file; called on every rank (gathering a sharded EMA is a collective), rank 0 writes."""
        raise NotImplementedError


class TransformerStage(Stage):
    """A stage that ships a transformer (teacher, ode_init, distill): its EMA as our checkpoint.

    Subclasses set `ema` (the network shipped), `model_config`, `vae` (the VAE their latents
    belong to, "" when unknown) and `text_encoder` (a toy text encoder to ship beside the
    model, or None), and say which plan and metadata the file carries; the checkpoint record
    and the export are then the same for all three.
    """

    text_encoder: torch.nn.Module | None = None

    def export_plan(self) -> str:
        """The step plan written into the exported model (what the sampler runs by default)."""
        raise NotImplementedError

    def export_metadata(self) -> dict[str, str]:
        """`asd.*` metadata of the exported model: its role and how it was trained."""
        raise NotImplementedError

    def checkpoint_extra(self) -> dict:
        return {"model_config": self.model_config.to_json(), "plan": self.export_plan(), "vae": self.vae,
                "export_metadata": self.export_metadata()}

    def export(self, path: Path) -> Path:
        """The EMA network with its config, plan and metadata: the file the loader node reads; the
        toy text encoder beside it when the stage has one."""
        weights = network_state(self.ema)  # a collective when sharded
        if not self.runtime.is_main:
            return path
        save_checkpoint(path, weights, self.model_config, plan=self.export_plan(), extra=self.export_metadata())
        if self.text_encoder is not None:
            self.text_encoder.save(path.parent / TEXT_ENCODER_FILE)
        return path
