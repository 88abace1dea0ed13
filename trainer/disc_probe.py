"""Can an ASD discriminator tell a student's n-step outputs from its (n+1)-step ones?

    python -m trainer.disc_probe --teacher RUN --student RUN_OR_FILE [--min-t 0.02 --max-t 0.4 ...]

A diagnostic for the distill stage: the student is frozen, its rollout pairs (n-step output,
the same rollout one step further) are made once with the trainer's own rollout, and a fresh
D (the trainer's head, the trainer's relativistic loss and R1/R2) is trained on features of a
frozen backbone (the teacher) at the chosen noise levels, then scored on held-out pairs.
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

from asd_core.discriminator import ASDDiscriminator
from asd_core.losses import add_noise, asd_discriminator_loss, finite_difference_penalty

from . import dist
from .config import load_config
from .rollout import noise_like, self_forcing_rollout
from .stages.common import shifted_timesteps

CONFIG = Path(__file__).resolve().parent / "configs" / "toy" / "distill.yaml"


def rollout_pairs(stage, batches: int, batch_size: int, generator: torch.Generator) -> list[tuple]:
    """(n-step video, (n+1)-step video, n, context) per batch; n cycles through 1..N-1."""
    pairs = []
    with torch.no_grad():
        for b in range(batches):
            context = stage.prompts.contexts(list(range(b * batch_size, (b + 1) * batch_size)))
            shape = (batch_size, stage.generator.config.in_channels, stage.frames, stage.height, stage.width)
            noise = noise_like(shape, generator, stage.runtime.device)
            exit_step = b % (stage.num_steps - 1)
            rollout = self_forcing_rollout(
                stage.generator, noise, context, first_steps=stage.first_steps, rest_steps=stage.rest_steps,
                exit_first=min(exit_step, len(stage.first_steps) - 1), exit_rest=exit_step, generator=generator,
                grad=False, one_more_step=True)
            pairs.append((rollout.video, rollout.next_video, exit_step + 1, context))
    return pairs


class FrozenBackboneProbe:
    """A fresh D on the teacher's features at noise levels u ~ U(min_t, max_t) warped by shift."""

    def __init__(self, stage, args):
        self.stage, self.args = stage, args
        width = stage.teacher.config.width
        heads = next(h for h in (4, 2, 1) if width % h == 0)
        self.discriminator = ASDDiscriminator(width, len(stage.depths), stage.num_steps - 1, heads=heads)
        self.optimizer = torch.optim.AdamW(self.discriminator.parameters(), lr=args.lr, betas=(0.0, 0.999))

    def branches(self, fake, real, context, generator):
        """Both branches noised independently (own noise, own timesteps), batched: (x, t, features)."""
        a, stage = self.args, self.stage
        x = torch.cat([fake, real])
        t = shifted_timesteps(x.shape[0], generator, a.min_t, a.max_t, a.shift).to(x.device)
        x_t = add_noise(x, noise_like(x.shape, generator, x.device), t / 1000.0)
        with torch.no_grad():
            _, features = stage.teacher(x_t, t, torch.cat([context, context]), return_features=stage.depths)
        return x_t, t, features

    def train_step(self, step: int, pair, generator) -> float:
        fake, real, n, context = pair
        x_t, t, features = self.branches(fake, real, context, generator)
        logits = self.discriminator(features, n)
        loss = asd_discriminator_loss(*logits.chunk(2))
        if self.args.r1_weight > 0 and step % self.args.r1_every == 0:  # the trainer's lazy R1/R2
            sigma = self.args.r1_sigma
            with torch.no_grad():
                _, perturbed = self.stage.teacher(x_t + sigma * noise_like(x_t.shape, generator, x_t.device), t,
                                                  torch.cat([context, context]), return_features=self.stage.depths)
            penalty = finite_difference_penalty(self.discriminator(perturbed, n), logits, sigma)
            loss = loss + self.args.r1_weight * self.args.r1_every * 2 * penalty.mean()  # r1 + r2 = 2 x mean
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.discriminator.parameters(), 10.0)
        self.optimizer.step()
        return loss.item()

    @torch.no_grad()
    def score(self, pairs, generator, repeats: int = 3) -> tuple[float, float]:
        """(accuracy, mean logit gap) over the pairs, each seen at `repeats` noise draws."""
        wins, gaps = [], []
        for _ in range(repeats):
            for fake, real, n, context in pairs:
                _, _, features = self.branches(fake, real, context, generator)
                d_fake, d_real = self.discriminator(features, n).chunk(2)
                wins += (d_real > d_fake).float().tolist()
                gaps += (d_real - d_fake).tolist()
        return sum(wins) / len(wins), sum(gaps) / len(gaps)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer.disc_probe", description=__doc__.splitlines()[0])
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
    from .stages.distill import DistillStage

    args = build_parser().parse_args(argv)
    if not 0 <= args.min_t <= args.max_t <= 1:
        print(f"error: need 0 <= --min-t <= --max-t <= 1, got {args.min_t}, {args.max_t}", file=sys.stderr)
        return 2
    if args.batches < 2:
        print(f"error: --batches must be >= 2 (one to train D on, one held out), got {args.batches}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config, [f"teacher={args.teacher}", f"init={args.student}", "asd_weight=1",
                                           "out_dir=unused", "device=cpu", *args.set])
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
    probe = FrozenBackboneProbe(stage, args)
    loss = float("nan")
    for step in range(args.steps):
        loss = probe.train_step(step, train[step % len(train)], generator)
    accuracy, gap = probe.score(held_out, generator)
    print(json.dumps({"student": args.student, "min_t": args.min_t, "max_t": args.max_t, "shift": args.shift,
                      "steps": args.steps, "held_out_pairs": len(held_out) * config.batch_size,
                      "accuracy": round(accuracy, 4), "logit_gap": round(gap, 4), "last_loss": round(loss, 4),
                      "seconds": round(time.time() - started, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
