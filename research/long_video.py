"""Long video on the toy domain: drift per chunk with and without sinks.

    OMP_NUM_THREADS=1 python -m research.long_video --num 32 --out docs/long_video.json
    python -m research.long_video --table docs/long_video.json     # docs/results.md's tables

Every row is one `asd-eval` run on videos 4x the trained length (141 pixel frames = 36 latent
frames = 12 chunks of 3), the same captions and noise in every row (evaluation seed 0): the
ground truth as rendered and after the shipped VAE's round trip, then the shipped student at
its trained plan `1*`, the rows differing only in the KV cache the sampler keeps. Results
are written after each row, and rows already in --out are kept, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from asd_core.atomic import atomic_path
from asd_core.cli.evaluate import build_parser as eval_parser
from asd_core.cli.evaluate import evaluate

FRAMES = 141  # 4x the trained 33 pixel frames (9 -> 36 latent frames)
# (row name, asd-eval arguments beyond --frames/--num/--seed), in table order.
ROWS = (
    ("ground truth (same shapes, rendered longer)", ["--model", "real"]),
    ("ground truth, VAE round trip", ["--model", "real-vae"]),
    ("whole-video cache", []),
    ("window 3, sink 0 (each chunk alone)", ["--window", "3", "--sink", "0"]),
    ("window 6, sink 0", ["--window", "6", "--sink", "0"]),
    ("window 9, sink 0", ["--window", "9", "--sink", "0"]),
    ("window 6, sink 3", ["--window", "6", "--sink", "3"]),
    ("window 9, sink 3", ["--window", "9", "--sink", "3"]),
)
TABLE_KEYS = ("colour", "semantic", "quality")


def eval_args(name: str, num: int, seed: int) -> list[str]:
    """The asd-eval command line of a row (what docs/results.md quotes)."""
    return ["--frames", str(FRAMES), "--num", str(num), "--seed", str(seed), *dict(ROWS)[name]]


def run(out: Path, num: int, seed: int, names: list[str]) -> dict:
    results = json.loads(out.read_text()) if out.is_file() else {"num": num, "seed": seed, "rows": {}}
    if (results["num"], results["seed"]) != (num, seed):
        raise SystemExit(f"{out} holds --num {results['num']} --seed {results['seed']}: use another --out")
    for name in names:
        if name in results["rows"]:
            continue
        args = eval_args(name, num, seed)
        print(f"asd-eval {' '.join(args)}", file=sys.stderr)
        results["rows"][name] = evaluate(eval_parser().parse_args(args))
        with atomic_path(out) as tmp:
            Path(tmp).write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return results


def markdown_tables(results: dict) -> str:
    """One table per key of TABLE_KEYS: a row per setting, a column per chunk, and the mean of the last 3."""
    rows = [name for name, _ in ROWS if name in results["rows"]]
    chunks = len(results["rows"][rows[0]]["chunks"]["pixel_frames"])
    parts = []
    for key in TABLE_KEYS:
        head = f"| {key} per chunk | " + " | ".join(str(i + 1) for i in range(chunks)) + " | last 3 | video |"
        lines = [head, "|---" * (chunks + 3) + "|"]
        for name in rows:
            result = results["rows"][name]
            values = result["chunks"][key]
            cells = [f"{v:.2f}" for v in values] + [f"{sum(values[-3:]) / 3:.2f}", f"{result[key]:.2f}"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num", type=int, default=32, help="videos per row (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed (default %(default)s)")
    p.add_argument("--out", type=Path, default=Path("docs/long_video.json"), help="results file (resumed)")
    p.add_argument("--rows", nargs="+", choices=[name for name, _ in ROWS], help="only these rows")
    p.add_argument("--table", type=Path, help="print the markdown tables of a results file and exit")
    args = p.parse_args(argv)
    if args.table:
        print(markdown_tables(json.loads(args.table.read_text())))
        return 0
    results = run(args.out, args.num, args.seed, args.rows or [name for name, _ in ROWS])
    print(markdown_tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
