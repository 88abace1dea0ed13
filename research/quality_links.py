"""Where along the chain (ground truth -> VAE -> teacher -> students) the evaluator's score is lost.

    python -m research.quality_links [--num 32] [--seed 0]

Scores each link with `asd-eval`'s own code path (same captions and noise per link), with the
per-chunk profile, and prints one table: total, quality, semantic, the semantic sub-scores,
empty frames and per chunk colour / empty frames. Issue 24, item 1: the students are capped
by the teacher and the teacher by the VAE, so the per-link drop says which link to fix first.
About 4 minutes at --num 32 on one thread (the teacher's 50 steps are most of it). `--ode-init FILE`
adds the students' starting point, which is not shipped.
"""

from __future__ import annotations

import argparse

import torch

from asd_core.cli.evaluate import build_parser, evaluate
from asd_core.toy.defaults import TEACHER_CFG

LINKS = [
    ("ground truth", ["--model", "real"]),
    ("VAE round trip", ["--model", "real-vae"]),
    (f"teacher, 50 steps, CFG {TEACHER_CFG:g}", ["--model", "teacher"]),
    ("ASD student 1*", ["--model", "student", "--plan", "1*"]),
    ("DMD-only student 1*", ["--checkpoint", "asd_core/toy/weights/student_dmd_only.safetensors", "--plan", "1*"]),
]


def links(ode_init: str | None = None) -> list[tuple[str, list[str]]]:
    """The chain's links in order; ode_init is not shipped, so it is a link only when its export is given."""
    if not ode_init:
        return list(LINKS)
    between = [(f"ode_init {plan}", ["--checkpoint", ode_init, "--plan", plan]) for plan in ("4", "1*")]
    return LINKS[:3] + between + LINKS[3:]


KEYS = ("total", "quality", "semantic", "colour", "object_class", "multiple_objects", "empty_frames")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ode-init", help="an ode_init run's model.safetensors (its text encoder beside it), "
                   "scored at plans 4 and 1* between the teacher and the students")
    args = p.parse_args()
    torch.set_num_threads(1)
    print("| link | " + " | ".join(KEYS) + " | colour per chunk | empty per chunk |")
    print("|---" * (len(KEYS) + 3) + "|")
    for name, extra in links(args.ode_init):
        r = evaluate(build_parser().parse_args(extra + ["--num", str(args.num), "--seed", str(args.seed),
                                                        "--per-chunk"]))
        chunks = r["chunks"]
        cells = [f"{r[k]:.3f}" for k in KEYS]
        cells += ["/".join(f"{v:.2f}" for v in chunks["colour"]), "/".join(f"{v:.2f}" for v in chunks["empty_frames"])]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
