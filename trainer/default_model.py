"""Train the built-in default end to end and ship it: `python -m trainer.default_model RUNS [--ship]`.

The stages run in order, each with the committed toy config (trainer/configs/toy/) and the
overrides below, which size the default to train on 2 CPU cores in about two and a half hours:

    vae -> vae_decoder -> vae_decoder_long -> vae_decoder_full (decoder fine-tunes on 5-, 9- and
        33-frame clips; the encoder, hence the latent space, fixed after `vae`)
    vae -> teacher -> ode_init -> distill_asd (alpha > 0) and distill_dmd (alpha = 0, the ablation)

Every stage is resumable: a finished stage (its model.safetensors exists) is skipped, an
interrupted one resumes from its latest checkpoint. `--ship` copies the results into
asd_core/weights/, where `load_default_pipeline`, `asd-generate`, `asd-eval` and the nodes
find them. `--only STAGE` runs one stage (e.g. the two distills in two shells at once).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from asd_core.atomic import atomic_path
from asd_core.defaults import DEFAULT_FILES, TEACHER_CFG, WEIGHTS_DIR

from .config import load_config
from .loop import CHECKPOINTS, FINAL_MODEL, run_training
from .stages.teacher import TEXT_ENCODER_FILE

CONFIGS = Path(__file__).resolve().parent / "configs" / "toy"

# (run name, config file, overrides); {runs} is the runs folder. The sizes that differ from the
# config files are the CPU budget of the shipped default (docs/default_model.md has the logs).
# D: lr 4x the others and a light R1/R2 (0.1): at 5e-5 with R1 1.0 an offline probe's D learned
# half as fast (trainer/disc_probe.py; docs/results.md, "The discriminator").
# Real score guidance TEACHER_CFG (1.5), not 3: the teacher scores higher at 1.5 (its 50-step videos move more
# smoothly), and the students distilled toward it gain most at `1*` (+0.026 over three training
# seeds: the 4-step first chunk no longer empties frames; `1` and `2` +0.005 to +0.022), which
# makes FFE beat plain one-step sampling (docs/results.md, "The real score's guidance").
# The 1-step exit drawn 3x as often as each other one (exit_weights, half the iterations instead
# of a quarter): ahead of the uniform draw at `1` and `1*` in three training seeds of three
# (docs/results.md, "The 1-step exit drawn more often"); [5,1,1,1] and [8,1,1,1] gained more at
# `1*` in seed 1 and nothing or less in seed 2 (two seeds each, no DMD-only twins: not shipped). The DMD-only
# twins gain as much, so ASD's lead at `2` narrows across training seeds (+0.006 +- 0.016, seed 2
# behind; uniform draw +0.022 +- 0.008); the shipped pair (seed 1) leads there by +0.022.
# No EMA (ema_decay=0): the shipped students are the generators at iteration 3000 themselves, and
# this makes STAGES re-make those files. A snapshot choice, not a lever: the generator's `1*`
# swings by 0.01-0.05 between checkpoints 50 iterations apart and its snapshots average what the
# EMA scores; iteration 3000 was a high point in all three ASD runs (seed 1's: `1*` 0.5059 on
# fresh evaluation seeds, 95.9% of the teacher; docs/results.md, "The trained generator without its EMA").
DISTILL = ["teacher={runs}/teacher", "init={runs}/ode_init", "max_steps=3000", "gen_update_ratio=2",
           "lr_generator=5e-5", "lr_critic=5e-5", "lr_discriminator=2e-4", "r1_weight=0.1",
           "save_every=50", f"cfg_scale={TEACHER_CFG}", "exit_weights=[3,1,1,1]", "ema_decay=0"]
STAGES = [
    # 5-frame clips (1 + 4: one causal step of the VAE's temporal compression) halve the step time.
    # (A whole second chain with the VAE on 9-frame clips from the start, 1100 steps, scored lower
    # everywhere: round trip 0.51 vs 0.57; docs/default_model.md, "The 9-frame chain".)
    ("vae", "vae.yaml", ["max_steps=1000", "clip_frames=5", "save_every=100"]),
    # Decoder fine-tuning: the encoder (the latent space every later stage lives in) is frozen,
    # so it runs beside the teacher and ode_init on the other core; the shipped VAE is this one.
    # (Shipped: 400 steps, then resumed to 1400 when the round trip still scored 0.36.)
    ("vae_decoder", "vae.yaml", ["init={runs}/vae", "freeze_encoder=true", "clip_frames=5", "lr=2e-4",
                                 "max_steps=1400", "save_every=100"]),
    # Then 9-frame clips (3 latent frames): 5-frame clips never show the causal decoder a cache
    # carried over from a previous chunk, and videos fell apart after their 5th frame. Still
    # the same frozen encoder, so the teacher and students trained meanwhile stay valid.
    ("vae_decoder_long", "vae.yaml", ["init={runs}/vae_decoder", "freeze_encoder=true", "clip_frames=9", "lr=2e-4",
                                      "max_steps=600", "save_every=50"]),
    # Then the domain's whole 33-frame videos: 9-frame clips still never show the decoder the
    # cache of a third chunk, and the round trip lost colours and counts from frame 9 on (the
    # second and third chunks; docs/default_model.md). Same frozen encoder; the shipped VAE.
    ("vae_decoder_full", "vae.yaml", ["init={runs}/vae_decoder_long", "freeze_encoder=true", "clip_frames=33",
                                      "lr=2e-4", "max_steps=400", "save_every=25"]),
    # sample_cfg: the guidance its export records (asd.cfg), which asd-eval and asd-generate sample
    # it with; TEACHER_CFG, its best of a sweep run after it was trained (docs/results.md).
    ("teacher", "teacher.yaml", ["vae={runs}/vae", "max_steps=10000", "pool_size=1024", "ema_start=500",
                                 "warmup_steps=200", "save_every=250", f"sample_cfg={TEACHER_CFG}"]),
    # The teacher's trajectories at TEACHER_CFG too, the guidance DMD's real score pulls toward:
    # from trajectories at CFG 3 the ASD student led DMD only at `2` by +0.013 over three
    # training seeds, from these by +0.022, ahead in every seed (docs/results.md, "ode_init at
    # the real score's guidance").
    ("ode_init", "ode_init.yaml", ["teacher={runs}/teacher", "max_steps=1500", "num_trajectories=384",
                                   "save_every=200", f"cfg_scale={TEACHER_CFG}"]),
    # The two students differ only in ASD (alpha): the ablation of docs/results.md. ASD's
    # gradient at the generator's output is held at alpha = 1 x DMD's (asd_weighting=relative):
    # unweighted it grew from 3-6x to 10-52x DMD's as D learned, and with a fixed alpha the
    # students collapsed to empty frames; relative 2 collapsed too. ASD on 1-step vs 2-step
    # pairs only (asd_counts=[1]): with every n it cost ~0.008 at 2 steps in all five seed pairs.
    # Training seed 1: the shipped pair's (docs/results.md, "ASD at n = 1 only").
    ("distill_asd", "distill.yaml", [*DISTILL, "seed=1", "asd_weight=1", "asd_weighting=relative",
                                     "asd_counts=[1]"]),
    ("distill_dmd", "distill.yaml", [*DISTILL, "seed=1", "asd_weight=0"]),
]
SHIPPED = {  # weights file -> (run, file in the run)
    DEFAULT_FILES["vae"]: ("vae_decoder_full", FINAL_MODEL),
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
    """Copy the finished runs' files into asd_core/weights (atomic per file)."""
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
    parser.add_argument("--ship", action="store_true", help="copy the results into asd_core/weights/")
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
