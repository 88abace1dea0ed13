"""The training loop every stage shares: resume, step, skip non-finite updates, log, save, stop.

A stage (trainer/stages/*) owns its networks and says what one step does; this module owns
everything around it. Randomness inside a step comes from generators the stage re-seeds from
(seed, rank, step), so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from asd_core.atomic import atomic_path

from . import dist
from .config import RunConfig, to_dict
from .logs import RunLogger
from .state import Checkpointer

CHECKPOINTS = "checkpoints"
FINAL_MODEL = "model.safetensors"
RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"  # the last run's summary line (a resumed run: that part only)


class NonFiniteAbort(RuntimeError):
    """Raised after `max_nonfinite` consecutive steps whose loss (or gradient) was not finite."""


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
        """JSON-able facts the final model / export need (model config, plan)."""
        return {}

    def train_step(self, step: int) -> StepResult:
        raise NotImplementedError

    def write_samples(self, step: int, directory: Path) -> list[Path]:
        """Sample videos; called on every rank (a sharded EMA needs all ranks for its forward), rank 0 writes."""
        return []

    def export(self, path: Path) -> Path:
        """The final model file; called on every rank (gathering a sharded EMA is a collective), rank 0 writes."""
        raise NotImplementedError


@contextmanager
def stop_on_signals():
    """SIGTERM / SIGINT set a flag the loop checks after each step (save, then exit cleanly)."""
    requested = {"signal": None}

    def handler(signum, frame):
        if requested["signal"] is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        requested["signal"] = signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_training(config: RunConfig, *, resume: bool = False, stage_factory=None) -> dict:
    """Train one stage to `max_steps` (or until a signal); returns the summary dict."""
    from .stages import build_stage

    runtime = dist.init_runtime(config.device, config.parallel)
    try:
        stage = (stage_factory or build_stage)(config, runtime)
        return _run(stage, config, runtime, resume)
    finally:
        dist.shutdown(runtime)


def _run(stage: Stage, config: RunConfig, runtime: dist.Runtime, resume: bool) -> dict:
    out_dir = Path(config.out_dir)
    checkpointer = Checkpointer(out_dir / CHECKPOINTS, config.keep_last)
    step = 0
    state = dict(modules=stage.modules(), optimizers=stage.optimizers(), schedulers=stage.schedulers(),
                 generators=stage.generators())
    existing = checkpointer.latest()
    if resume:
        if existing is None:
            raise ValueError(f"--resume: no checkpoint in {checkpointer.directory}; start without --resume")
        step, extra = Checkpointer.load(existing, **state)
        nonfinite_run = int(extra.get("nonfinite_run", 0))
    else:
        if existing is not None:
            raise ValueError(
                f"{out_dir} already holds checkpoints ({existing.name}); pass --resume to continue it "
                "or choose another out_dir=..."
            )
        nonfinite_run = 0
    if runtime.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / RUN_FILE).write_text(json.dumps({"config": to_dict(config), **stage.checkpoint_extra()}, indent=2))

    def save(at_step: int) -> Path | None:
        # Every rank enters: sharded networks are gathered to rank 0 first (a collective).
        extra = {**stage.checkpoint_extra(), "nonfinite_run": nonfinite_run, "config": to_dict(config)}
        path = checkpointer.save(at_step, extra=extra, write=runtime.is_main, **state)
        dist.barrier(runtime)
        return path

    logger = RunLogger(config, runtime, start_step=step)
    start_time, start_step = time.perf_counter(), step
    stopped_by = None
    last_logs: dict[str, float] = {}
    with stop_on_signals() as requested:
        while step < config.max_steps:
            t0 = time.perf_counter()
            # bf16: autocast around forward and backward; weights, optimizer states and EMA stay fp32.
            # Sharded runs turn autocast's cast cache off. It keys bf16 copies by tensor identity while
            # FSDP swaps and re-gathers the weights between forwards; with it on, the sharded generator's
            # block linears got no gradient on a distill generator step (bf16, 2 ranks). It would also
            # keep a bf16 copy of every gathered weight alive for the whole step, undoing the sharding.
            with torch.autocast(runtime.device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16",
                                cache_enabled=not runtime.sharded):
                result = stage.train_step(step)
            step += 1
            if result.skipped:
                nonfinite_run += 1
                logger.warn(f"step {step}: non-finite value, update(s) {result.skipped} skipped "
                            f"({nonfinite_run} in a row, abort at {config.max_nonfinite})")
                if nonfinite_run >= config.max_nonfinite:
                    logger.close()
                    raise NonFiniteAbort(
                        f"{nonfinite_run} consecutive steps had non-finite losses or gradients (last: step {step}, "
                        f"updates {result.skipped}); lower the learning rate, check the data, or resume from "
                        f"{checkpointer.latest() or 'the start'}"
                    )
            else:
                nonfinite_run = 0
            result.logs["nonfinite_skips"] = float(len(result.skipped))
            result.logs["sec_per_step"] = time.perf_counter() - t0
            last_logs = result.logs
            logger.log(step, result.logs, stage.optimizers())
            if config.sample_every and step % config.sample_every == 0:
                written = stage.write_samples(step, out_dir / "samples")  # every rank: see Stage.write_samples
                if runtime.is_main:
                    logger.samples(written)
            stop = requested["signal"] is not None
            if dist.any_rank(stop, runtime):
                stopped_by = requested["signal"] or "signal on another rank"
                break
            if step % config.save_every == 0 and step < config.max_steps:
                save(step)
        path = save(step)
        final = None
        if stopped_by is None:
            final = stage.export(out_dir / FINAL_MODEL)  # every rank: see Stage.export
            final = final if runtime.is_main else None
        dist.barrier(runtime)

    elapsed = time.perf_counter() - start_time
    done = step - start_step
    summary = {
        "stage": config.stage,
        "step": step,
        "steps_this_run": done,
        "seconds": round(elapsed, 2),
        "sec_per_step": round(elapsed / done, 4) if done else None,  # JSON has no NaN
        "checkpoint": str(path) if path else None,
        "model": str(final) if final else None,
        "stopped_by": stopped_by,
        "losses": {k: round(v, 5) for k, v in last_logs.items() if "loss" in k and math.isfinite(v)},
    }
    logger.summary(summary)
    logger.close()
    if runtime.is_main:  # kept beside run.json for `python -m trainer.log_figures` (the figures of docs/)
        with atomic_path(out_dir / SUMMARY_FILE, suffix=".tmp") as temp:
            Path(temp).write_text(json.dumps(summary, indent=1))
    return summary
