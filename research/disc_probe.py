"""Can an ASD discriminator tell a student's n-step outputs from its (n+1)-step ones?

    python -m research.disc_probe --teacher RUN --student RUN_OR_FILE [--min-t 0.02 --max-t 0.4 ...]

A diagnostic for the distill stage: the student is frozen, its rollout pairs (n-step output,
ASD's (n+1)-step real sample, by default the same rollout one step further) are made once with
the trainer's own rollout, and the distill stage's fresh D is trained on them by the stage's
own D step (its head, relativistic loss, R1/R2, optimizer) at the chosen noise levels, then
scored on held-out pairs. D reads the stage's critic, which the probe never trains: it keeps the
teacher's weights, so D's features stay fixed.
Prints one JSON line: held-out accuracy (how often D ranks the (n+1)-step branch higher; 0.5
is chance) and the mean logit gap. docs/results.md's "The discriminator" figures come from it.

Why it exists: inside training D sits on a moving backbone against a moving generator, so a
flat logit gap does not say whether the pairs are separable at all. Here they are fixed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from trainer import dist
from trainer.config import load_config
from trainer.rollout import noise_like
from trainer.stages.distill import DistillStage

CONFIG = Path(__file__).resolve().parents[1] / "trainer" / "configs" / "toy" / "distill.yaml"


def rollout_pairs(stage, batches: int, batch_size: int, generator: torch.Generator) -> list[tuple]:
    """(n-step video, (n+1)-step video, n, context) per batch; n cycles through 1..N-1."""
    pairs = []
    with torch.no_grad():
        for b in range(batches):
            context = stage.prompts.contexts(list(range(b * batch_size, (b + 1) * batch_size)))
            shape = (batch_size, stage.generator.config.in_channels, stage.frames, stage.height, stage.width)
            noise = noise_like(shape, generator, stage.runtime.device)
            exit_step = b % (stage.num_steps - 1)
            # The stage's own pair, so --set context_noise=... / plan=... shape the pairs as in training.
            video, real = stage.rollout_pair(noise, context, exit_step, generator, grad=False, with_real=True)
            pairs.append((video, real, exit_step + 1, context))
    return pairs


def train_discriminator(stage, step: int, pair, generator: torch.Generator) -> float:
    """One step of the stage's (fresh) D on one frozen pair batch, with the stage's own pieces."""
    fake, real, n, context = pair
    x, t = stage.disc_pair(fake, real, generator)
    with torch.no_grad():
        features = stage.disc_features(x, t, context)
    logs: dict[str, float] = {}
    stage.discriminator_step(step, x, t, features, context, n, generator, logs)
    return logs["discriminator_loss"]


@torch.no_grad()
def score(stage, pairs, generator: torch.Generator, repeats: int = 3) -> tuple[float, float]:
    """(accuracy, mean logit gap) of the stage's D over the pairs, each seen at `repeats` noise draws."""
    wins, gaps = [], []
    for _ in range(repeats):
        for fake, real, n, context in pairs:
            x, t = stage.disc_pair(fake, real, generator)
            d_fake, d_real = stage.disc_logits(stage.disc_features(x, t, context), n).chunk(2)
            wins += (d_real > d_fake).float().tolist()
            gaps += (d_real - d_fake).tolist()
    return sum(wins) / len(wins), sum(gaps) / len(gaps)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m research.disc_probe", description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, help="the teacher run (or file) the student was distilled from")
    p.add_argument("--student", required=True, help="the student run or file whose pairs are probed")
    p.add_argument("--config", default=str(CONFIG), help="distill config giving plan, video size and depths")
    p.add_argument("--batches", type=int, default=50, help="rollout batches of 4; 80%% train D, 20%% held out")
    p.add_argument("--steps", type=int, default=400, help="D training steps")
    p.add_argument("--min-t", type=float, default=0.02)
    p.add_argument("--max-t", type=float, default=0.4)
    p.add_argument("--shift", type=float, default=1.0, help="timestep warp of D's noise levels (1 = none)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--r1-weight", type=float, default=0.1)
    p.add_argument("--r1-every", type=int, default=4)
    p.add_argument("--r1-sigma", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more distill config overrides")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 <= args.min_t <= args.max_t <= 1:
        print(f"error: need 0 <= --min-t <= --max-t <= 1, got {args.min_t}, {args.max_t}", file=sys.stderr)
        return 2
    if args.batches < 2:
        print(f"error: --batches must be >= 2 (one to train D on, one held out), got {args.batches}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config, [
            f"teacher={args.teacher}", f"init={args.student}", "asd_weight=1", "out_dir=unused", "device=cpu",
            f"disc_min_t={args.min_t}", f"disc_max_t={args.max_t}",
            f"disc_timestep_shift={args.shift}", f"lr_discriminator={args.lr}", f"r1_weight={args.r1_weight}",
            f"r1_every={args.r1_every}", f"r1_sigma={args.r1_sigma}", f"seed={args.seed}", *args.set])
        stage = DistillStage(config, dist.init_runtime("cpu"))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if stage.num_steps < 2:
        print(f"error: the config's plan {config.plan!r} has one step: there is no (n+1)-step output", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    started = time.time()
    pairs = rollout_pairs(stage, args.batches, config.batch_size, generator)
    split = max(1, int(0.8 * len(pairs)))
    train, held_out = pairs[:split], pairs[split:]
    loss = float("nan")
    for step in range(args.steps):
        loss = train_discriminator(stage, step, train[step % len(train)], generator)
    accuracy, gap = score(stage, held_out, generator)
    print(json.dumps({"student": args.student, "min_t": args.min_t, "max_t": args.max_t, "shift": args.shift,
                      "steps": args.steps, "held_out_pairs": len(held_out) * config.batch_size,
                      "accuracy": round(accuracy, 4), "logit_gap": round(gap, 4), "last_loss": round(loss, 4),
                      "seconds": round(time.time() - started, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
