"""Train the built-in default end to end and ship it: `python -m trainer.default_model RUNS [--ship]`.

The stages run in order, each with its toy config (trainer/configs/toy/), which holds the
shipped recipe and the reasons for its values; this driver only says where each run reads
the runs it builds on. Sized to train on 2 CPU cores in a few sessions (docs/default_model.md
gives each stage's time):

    vae -> vae_full -> vae_decoder (the whole VAE on 33-frame videos, then its decoder alone;
        the encoder, hence the latent space, fixed after `vae_full`)
    vae_decoder -> teacher -> ode_init -> distill_asd (alpha > 0) and distill_dmd (alpha = 0, the ablation)

Every stage is resumable: a finished stage (its model.safetensors exists) is skipped, an
interrupted one resumes from its latest checkpoint. `--ship` copies the results into
asd_core/toy/weights/, where `load_default_pipeline`, `asd-generate`, `asd-eval` and the nodes
find them. `--only STAGE` runs one stage (e.g. the two distills in two shells at once).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from asd_core.atomic import atomic_path
from asd_core.toy.defaults import DEFAULT_FILES, WEIGHTS_DIR

from .config import load_config
from .loop import run_training
from .run_files import CHECKPOINTS, FINAL_MODEL
from .stages.base import TEXT_ENCODER_FILE

CONFIGS = Path(__file__).resolve().parent / "configs" / "toy"

# (run name, config file, the runs it reads); {runs} is the runs folder.
STUDENT_RUNS = ["teacher={runs}/teacher", "init={runs}/ode_init"]
STAGES = [
    ("vae", "vae.yaml", []),
    ("vae_full", "vae_full.yaml", ["init={runs}/vae"]),
    ("vae_decoder", "vae_decoder.yaml", ["init={runs}/vae_full"]),
    ("teacher", "teacher.yaml", ["vae={runs}/vae_decoder"]),
    ("ode_init", "ode_init.yaml", ["teacher={runs}/teacher"]),
    ("distill_asd", "distill.yaml", STUDENT_RUNS),
    ("distill_dmd", "distill_dmd_only.yaml", STUDENT_RUNS),
]
SHIPPED = {  # weights file -> (run, file in the run)
    DEFAULT_FILES["vae"]: ("vae_decoder", FINAL_MODEL),
    DEFAULT_FILES["teacher"]: ("teacher", FINAL_MODEL),
    DEFAULT_FILES["text_encoder"]: ("teacher", TEXT_ENCODER_FILE),
    DEFAULT_FILES["student"]: ("distill_asd", FINAL_MODEL),
    "student_dmd_only.safetensors": ("distill_dmd", FINAL_MODEL),  # the ablation row of docs/results.md
}


def run_stage(runs: Path, name: str, config_file: str, overrides: list[str]) -> None:
    out_dir = runs / name
    if (out_dir / FINAL_MODEL).is_file():
        print(f"[{name}] done already: {out_dir / FINAL_MODEL}")
        return
    resume = (out_dir / CHECKPOINTS).is_dir() and any((out_dir / CHECKPOINTS).iterdir())
    words = [w.format(runs=runs) for w in overrides] + [f"out_dir={out_dir}"]
    config = load_config(CONFIGS / config_file, words)
    print(f"[{name}] {'resuming' if resume else 'starting'}: asd-train {CONFIGS / config_file} {' '.join(words)}"
          f"{' --resume' if resume else ''}", flush=True)
    summary = run_training(config, resume=resume)
    if summary["stopped_by"]:
        raise SystemExit(f"[{name}] stopped by {summary['stopped_by']}; run the same command again to resume")


def ship(runs: Path) -> None:
    """Copy the finished runs' files into asd_core/toy/weights (atomic per file)."""
    WEIGHTS_DIR.mkdir(exist_ok=True)
    for target, (run, file) in SHIPPED.items():
        source = runs / run / file
        if not source.is_file():
            raise SystemExit(f"cannot ship {target}: {source} is missing (finish the {run} stage first)")
        with atomic_path(WEIGHTS_DIR / target, suffix=".tmp") as temp:
            shutil.copyfile(source, temp)
        print(f"shipped {source} -> {WEIGHTS_DIR / target} ({source.stat().st_size / 2**20:.1f} MiB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.default_model", description=__doc__.splitlines()[0])
    parser.add_argument("runs", help="folder for the stage runs, e.g. runs/toy")
    parser.add_argument("--only", choices=[s[0] for s in STAGES], help="run this stage only")
    parser.add_argument("--ship", action="store_true", help="copy the results into asd_core/toy/weights/")
    args = parser.parse_args(argv)
    runs = Path(args.runs)
    for name, config_file, overrides in STAGES:
        if args.only in (None, name):
            run_stage(runs, name, config_file, overrides)
    if args.ship:
        ship(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
