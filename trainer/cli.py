"""`asd-train CONFIG.yaml [key=value ...] [--resume]`, `asd-train export RUN_DIR [--step N] [--raw] --out FILE`,
`asd-train prepare {latents,prompts} ...` (= `python -m trainer.prepare`, see trainer/prepare.py).

Every error a user can act on (a bad config, a full disk, a refused resume) is one line on
stderr and exit status 2, not a traceback."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from .config import load_config
from .loop import TrainingError, run_training
from .run_files import FINAL_MODEL


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] == "export":
            return _export(argv[1:])
        if argv and argv[0] == "prepare":
            from .prepare import main as prepare

            return prepare(argv[1:])
        parser = argparse.ArgumentParser(prog="asd-train", description="Train one stage of the ASD pipeline.")
        parser.add_argument("config", help="stage config, e.g. trainer/configs/toy/teacher.yaml")
        parser.add_argument("overrides", nargs="*", help="key=value overrides (max_steps=10 out_dir=runs/x seed=1)")
        parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in out_dir")
        parser.add_argument("--allow-changes", action="store_true",
                            help="with --resume: apply config changes since the checkpoint (learning rates, ...) "
                                 "instead of refusing; run.json records them")
        args = parser.parse_intermixed_args(argv)  # overrides may follow --resume too
        if args.allow_changes and not args.resume:
            parser.error("--allow-changes goes with --resume")
        config = load_config(args.config, args.overrides)
        summary = run_training(config, resume=args.resume, allow_changes=args.allow_changes)
    except (ValueError, FileNotFoundError, TrainingError) as error:
        print(f"asd-train: error: {error}", file=sys.stderr)
        return 2
    return 0 if summary["stopped_by"] is None else 130


def _export(argv: list[str]) -> int:
    """Copy a finished run's exported model (EMA weights, config + plan in metadata) to --out,
    or with --step write the same from the checkpoint at that step (any stage, the VAE's too),
    or with --raw the trained network instead of its EMA (trainer/export.py)."""
    parser = argparse.ArgumentParser(prog="asd-train export")
    parser.add_argument("run_dir")
    parser.add_argument("--out", required=True, help="destination .safetensors")
    parser.add_argument("--step", type=int, help="export the checkpoint at this step instead of the finished model "
                                                 "(a run part-way, or one that was stopped)")
    parser.add_argument("--raw", action="store_true", help="the trained network, not its EMA: what ema_decay=0 "
                                                           "exports (default step: the run's last checkpoint)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must end in .safetensors, got {out.name!r}")
    if not Path(args.run_dir).is_dir():  # not "has not finished": there is no run there at all
        raise ValueError(f"{args.run_dir}: no such run (not a folder); give the out_dir of an asd-train run")
    if args.step is not None or args.raw:
        from .export import export_step, last_step

        step = args.step if args.step is not None else last_step(args.run_dir)
        export_step(args.run_dir, step, out, raw=args.raw)
        print(f"exported {args.run_dir} at step {step}{' (raw, no EMA)' if args.raw else ''} -> {out}")
        return 0
    source = Path(args.run_dir) / FINAL_MODEL
    if not source.is_file():
        raise ValueError(f"{source} not found: the run has not finished (resume it with --resume, "
                         "or export one of its checkpoints with --step N)")
    from asd_core.atomic import atomic_path

    with atomic_path(out, suffix=".tmp") as temp:
        shutil.copyfile(source, temp)
    print(f"exported {source} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
