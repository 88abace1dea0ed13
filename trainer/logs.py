"""What a run shows: a tqdm bar with the losses, TensorBoard scalars, sample files, a summary line.

Only rank 0 prints or writes; other ranks get a logger that does nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm import tqdm

from .config import RunConfig
from .dist import Runtime


class RunLogger:
    def __init__(self, config: RunConfig, runtime: Runtime, start_step: int = 0):
        self.config = config
        self.active = runtime.is_main
        self.bar = None
        self.writer = None
        self.window: dict[str, tuple[float, int]] = {}  # scalar -> (sum, count) since the last write
        if not self.active:
            return
        if config.progress:
            self.bar = tqdm(total=config.max_steps, initial=start_step, desc=config.stage, dynamic_ncols=True,
                            file=sys.stderr)
        if config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(config.out_dir) / "tensorboard"), purge_step=start_step or None)

    def log(self, step: int, logs: dict[str, float], optimizers: dict) -> None:
        if not self.active:
            return
        if self.bar is not None:
            shown = {k: f"{v:.4g}" for k, v in logs.items() if "loss" in k or k in ("logit_gap",)}
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)
        if self.writer is None:
            return
        # Each scalar is the mean over the steps since the last write that logged it: a loss
        # that only some steps have (the generator's, every gen_update_ratio-th) still shows.
        for key, value in logs.items():
            total, count = self.window.get(key, (0.0, 0))
            self.window[key] = (total + value, count + 1)
        if step % self.config.log_every == 0 or step == self.config.max_steps:
            for key, (total, count) in self.window.items():
                self.writer.add_scalar(key, total / count, step)
            self.window = {}
            for name, optimizer in optimizers.items():
                self.writer.add_scalar(f"lr/{name}", optimizer.param_groups[0]["lr"], step)

    def warn(self, message: str) -> None:
        if self.active:
            tqdm.write(f"warning: {message}", file=sys.stderr)

    def samples(self, paths: list[Path]) -> None:
        if self.active and paths:
            tqdm.write(f"samples: {', '.join(str(p) for p in paths)}", file=sys.stderr)

    def summary(self, summary: dict) -> None:
        if not self.active:
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        losses = " ".join(f"{k}={v:.4g}" for k, v in summary["losses"].items())
        state = f"stopped by {summary['stopped_by']} (resume with --resume)" if summary["stopped_by"] else "done"
        print(
            f"[{summary['stage']}] {state}: step {summary['step']} ({summary['steps_this_run']} this run, "
            f"{summary['sec_per_step']} s/step) {losses} checkpoint={summary['checkpoint']} model={summary['model']}",
            flush=True,
        )
        print("summary " + json.dumps(summary), flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
