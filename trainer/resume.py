"""Resuming a run: the checkpoint to continue from, and a config that changed since it was saved.

A resumed run continues the saved optimizer and scheduler, whose learning rates are the ones
the run started with. So a changed config would silently not apply (the lr of the saved
scheduler wins) while run.json recorded the new value. Hence a resume with changed training
keys is refused, listing them; with `--allow-changes` the new values are applied to the
optimizers and schedulers, and run.json and every later checkpoint record what changed at
which step. Keys that only steer the run (its length, saving, logging) may change freely.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .state import Checkpointer, CorruptCheckpoint

RUN_CONTROL = frozenset({"out_dir", "max_steps", "save_every", "keep_last", "log_every", "sample_every",
                         "max_nonfinite", "progress", "tensorboard", "parallel"})


def config_changes(saved: dict, now: dict) -> dict[str, tuple]:
    """{key: (saved value, new value)} of the training keys that differ. Keys one side lacks (a
    checkpoint from before an option existed or after it was removed) are not compared."""
    return {key: (saved[key], now[key]) for key in sorted(set(saved) & set(now))
            if key not in RUN_CONTROL and saved[key] != now[key]}


def describe(changes: dict[str, tuple]) -> str:
    return ", ".join(f"{key} {was!r} -> {now!r}" for key, (was, now) in changes.items())


def load_newest_readable(checkpointer: Checkpointer, state: dict, warn, check) -> tuple[Path, int, dict]:
    """Load the newest checkpoint that can be read into `state`; (path, step, extra).

    An unreadable one (a truncated file after a crash or a full disk) is skipped with a warning
    naming it and the one used instead. `check(path, extra)` runs before anything is restored
    (the config comparison), so a refusal leaves the networks as built.
    """
    candidates = checkpointer.newest_first()
    if not candidates:
        raise ValueError(f"--resume: no checkpoint in {checkpointer.directory}; start without --resume")
    for index, path in enumerate(candidates):
        try:
            tensors, meta = Checkpointer.read(path)
        except CorruptCheckpoint as error:
            fallback = candidates[index + 1].name if index + 1 < len(candidates) else None
            if fallback is None:
                raise ValueError(f"--resume: {error}, and no earlier complete checkpoint is left; "
                                 "start again without --resume in a new out_dir") from None
            warn(f"warning: {error}; resuming from the earlier {fallback} instead")
            continue
        check(path, meta["extra"])
        step, extra = Checkpointer.restore(path, tensors, meta, **state)
        return path, step, extra
    raise AssertionError("unreachable")


def optimizer_settings(optimizers: dict[str, torch.optim.Optimizer], schedulers: dict) -> dict:
    """The hyperparameters of freshly built optimizers and schedulers (from the current config)."""
    return {"groups": {name: [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
                       for name, optimizer in optimizers.items()},
            "base_lrs": {name: list(scheduler.base_lrs) for name, scheduler in schedulers.items()}}


def apply_optimizer_settings(settings: dict, optimizers: dict[str, torch.optim.Optimizer], schedulers: dict) -> None:
    """Put the current config's hyperparameters back into restored optimizers and schedulers.

    The moments, step counts and scheduler positions stay the checkpoint's; rates, betas and
    weight decay become the new ones, each rate at the scheduler's current position (warmup
    factors come from the new config's schedule functions, which a checkpoint never holds).
    """
    for name, optimizer in optimizers.items():
        for group, fresh in zip(optimizer.param_groups, settings["groups"][name]):
            group.update(fresh)
    for name, scheduler in schedulers.items():
        scheduler.base_lrs = list(settings["base_lrs"][name])
        rates = [base * factor(scheduler.last_epoch) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
        for group, rate in zip(scheduler.optimizer.param_groups, rates):
            group["lr"] = rate
        scheduler._last_lr = rates  # what get_last_lr() reports (and the logs show)
