"""Key figures of finished runs, from their TensorBoard logs: `python -m research.log_figures RUN [RUN ...]`.

Prints one markdown table: per run its stage, steps, seconds per step (from the run's
summary.json: the last part when it was resumed), and for each chosen scalar the mean over
the first and the last tenth of the logged points (single points are noisy: a GAN's losses
jump from step to step). This is how docs/default_model.md's figures were made.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from trainer.run_files import RUN_FILE, SUMMARY_FILE

# The scalars worth a line per stage (others are in TensorBoard).
KEY_SCALARS = {
    "vae": ["loss", "l1", "mse"],
    "teacher": ["loss"],
    "ode_init": ["loss"],
    "distill": ["dmd_loss", "critic_loss", "asd_generator_loss", "discriminator_loss", "logit_gap", "asd_grad_ratio"],
}


def read_scalars(run: Path) -> dict[str, np.ndarray]:
    """{tag: (N, 2) array of (step, value)} from every event file of the run's tensorboard/ folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = run / "tensorboard"
    if not folder.is_dir():
        raise SystemExit(f"{run}: no tensorboard/ folder (was the run started with tensorboard=false?)")
    # A resumed run logs again from its checkpoint's step; the accumulator then drops the older
    # file's points from that step on (what we want) and warns about each: keep the table clean.
    logging.getLogger("tensorboard").setLevel(logging.ERROR)
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0 = keep every point
    accumulator.Reload()
    return {tag: np.array([(e.step, e.value) for e in accumulator.Scalars(tag)])
            for tag in accumulator.Tags()["scalars"]}


def first_last(points: np.ndarray) -> tuple[float, float]:
    """Means of the first and last tenth of the points (at least one point each)."""
    tenth = max(1, len(points) // 10)
    return float(points[:tenth, 1].mean()), float(points[-tenth:, 1].mean())


def run_rows(run: Path) -> list[str]:
    config = json.loads((run / RUN_FILE).read_text())["config"]
    stage = config["stage"]
    summary = json.loads((run / SUMMARY_FILE).read_text()) if (run / SUMMARY_FILE).is_file() else {}
    pace = f"{summary['sec_per_step']:.3g}" if summary.get("sec_per_step") else "?"
    scalars = read_scalars(run)
    rows = []
    for tag in KEY_SCALARS.get(stage, []):
        if tag in scalars and len(scalars[tag]):
            start, end = first_last(scalars[tag])
            rows.append(f"| {run.name} | {stage} | {config['max_steps']} | {pace} | {tag} | {start:.4g} | {end:.4g} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.log_figures", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (with run.json and tensorboard/)")
    args = parser.parse_args(argv)
    not_runs = [run for run in args.runs if not (Path(run) / RUN_FILE).is_file()]
    if not_runs:  # e.g. a shell glob that also caught the runs' log files
        parser.error(f"not a run directory (no {RUN_FILE}): {', '.join(not_runs)}; give the runs' out_dir folders")
    try:
        print("| run | stage | steps | s/step | scalar | first 10% | last 10% |")
        print("|---|---|---|---|---|---|---|")
        for run in args.runs:
            for row in run_rows(Path(run)):
                print(row)
            sys.stdout.flush()  # a closed pipe shows up here, inside the try
    except BrokenPipeError:  # the reader left early (`... | head`): stop quietly, as `cat` does
        # stdout onto /dev/null, else the interpreter's exit-time flush raises the same error again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
