"""The training loop every stage shares: resume, step, skip non-finite updates, log, save, stop.

A stage (trainer/stages/*) owns its networks and says what one step does; this module owns
everything around it. Randomness inside a step comes from generators the stage re-seeds from
(seed, rank, step), so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from asd_core.atomic import atomic_path

from . import dist
from .config import RunConfig, to_dict
from .logs import RunLogger
from .resume import apply_optimizer_settings, config_changes, describe, load_newest_readable, optimizer_settings
from .run_files import CHECKPOINTS, FINAL_MODEL, RUN_FILE, SUMMARY_FILE, check_out_dir, remove_leftovers
from .stages import build_stage
from .stages.base import Stage
from .state import Checkpointer


class TrainingError(RuntimeError):
    """A run stopped for a reason its user can act on; `asd-train` prints the one-line message."""


class NonFiniteAbort(TrainingError):
    """Raised after `max_nonfinite` consecutive steps whose loss (or gradient) was not finite."""


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


def run_training(config: RunConfig, *, resume: bool = False, allow_changes: bool = False, stage_factory=None) -> dict:
    """Train one stage to `max_steps` (or until a signal); returns the summary dict.

    `allow_changes`: resume although training keys of the config changed since the checkpoint
    (trainer/resume.py); without it such a resume is refused, naming the keys.
    """
    check_out_dir(config.out_dir)  # before any work: building a stage can take minutes
    runtime = dist.init_runtime(config.device, config.parallel)
    try:
        stage = (stage_factory or build_stage)(config, runtime)
        return _run(stage, config, runtime, resume, allow_changes)
    finally:
        dist.shutdown(runtime)


def _run(stage: Stage, config: RunConfig, runtime: dist.Runtime, resume: bool, allow_changes: bool = False) -> dict:
    out_dir = Path(config.out_dir)
    checkpointer = Checkpointer(out_dir / CHECKPOINTS, config.keep_last)
    if runtime.is_main:
        checkpointer.remove_leftovers()
        remove_leftovers(out_dir)
    step = 0
    state = dict(modules=stage.modules(), optimizers=stage.optimizers(), schedulers=stage.schedulers(),
                 generators=stage.generators())
    fresh_settings = optimizer_settings(state["optimizers"], state["schedulers"])
    changes_so_far: list[dict] = []  # [{"step", "changes"}]: config changes applied on resume, for the records

    def warn(message: str) -> None:
        if runtime.is_main:
            print(message, file=sys.stderr, flush=True)

    def refuse_changes(path: Path, extra: dict) -> None:
        changes = config_changes(extra.get("config", {}), to_dict(config))
        if changes and not allow_changes:
            raise ValueError(f"--resume: the config differs from {path.name}'s in {describe(changes)}; the restored "
                             "optimizers would keep training with the old values. Resume with the old values, or "
                             "pass --allow-changes to apply the new ones from here on")

    existing = checkpointer.latest()
    if resume:
        existing, step, extra = load_newest_readable(checkpointer, state, warn, refuse_changes)
        nonfinite_run = int(extra.get("nonfinite_run", 0))
        changes_so_far = list(extra.get("config_changes", []))
        changes = config_changes(extra.get("config", {}), to_dict(config))
        if changes:
            apply_optimizer_settings(fresh_settings, state["optimizers"], state["schedulers"])
            changes_so_far.append({"step": step, "changes": {k: {"was": a, "now": b} for k, (a, b) in changes.items()}})
            warn(f"resuming at step {step} with config changes: {describe(changes)}")
    else:
        if existing is not None:
            raise ValueError(
                f"{out_dir} already holds checkpoints ({existing.name}); pass --resume to continue it "
                "or choose another out_dir=..."
            )
        nonfinite_run = 0
    if runtime.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        changed = {"config_changes": changes_so_far} if changes_so_far else {}
        (out_dir / RUN_FILE).write_text(json.dumps({"config": to_dict(config), **stage.checkpoint_extra(), **changed},
                                                   indent=2))

    def save(at_step: int) -> Path | None:
        # Every rank enters: sharded networks are gathered to rank 0 first (a collective).
        extra = {**stage.checkpoint_extra(), "nonfinite_run": nonfinite_run, "config": to_dict(config)}
        if changes_so_far:
            extra["config_changes"] = changes_so_far
        try:
            path = checkpointer.save(at_step, extra=extra, write=runtime.is_main, **state)
        except OSError as error:  # a full disk, most often: the previous checkpoint is untouched
            logger.close()
            raise TrainingError(f"could not write the checkpoint of step {at_step} into {checkpointer.directory} "
                                f"({error.strerror or error}); free space, then resume with --resume (from "
                                f"{checkpointer.latest() or 'the start'})") from None
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
            try:
                final = stage.export(out_dir / FINAL_MODEL)  # every rank: see Stage.export
            except OSError as error:
                logger.close()
                raise TrainingError(f"could not write {out_dir / FINAL_MODEL} ({error.strerror or error}); the "
                                    f"checkpoint {path} is saved: free space, then `asd-train export {out_dir} "
                                    f"--step {step} --out FILE`") from None
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
    if runtime.is_main:  # kept beside run.json for `python -m research.log_figures` (the figures of docs/)
        with atomic_path(out_dir / SUMMARY_FILE, suffix=".tmp") as temp:
            Path(temp).write_text(json.dumps(summary, indent=1))
    return summary
