"""Table 2 of the paper on the toy domain: `python -m research.results --num 64 --seeds 0 1 2`.

Rows: the domain's real videos (and after the VAE round trip), the many-step teacher at CFG 3
and at its own guidance (TEACHER_CFG, 2), and the ASD (alpha > 0) and DMD-only (alpha = 0) students distilled
from the same init, each at the paper's `1`, `1*`, `2`, `2*`, `4` and at `1*2` (FFE with a
2-step first chunk). Every row sees the same captions and noise (asd-eval's seeds).
Writes docs/results.json (every figure of every seed), docs/results.md's table and
docs/results.png (total score per plan, mean and spread over seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from asd_core.atomic import atomic_path
from asd_core.cli.evaluate import build_parser as eval_parser
from asd_core.cli.evaluate import evaluate
from asd_core.toy.defaults import TEACHER_CFG, WEIGHTS_DIR

PLANS = ("1", "1*", "1*2", "2", "2*", "4")  # 1*2: a 2-step first chunk (the CFG-3 student's best one-step plan)
KEYS = ("total", "quality", "semantic", "fd")
# The teacher's rows, as (CFG, plot line style): 3, the paper's real-score guidance (the students'
# before 2026-12-03), and TEACHER_CFG (2), the teacher's and the shipped students' real score.
TEACHER_ROWS = (("3", "--"), (f"{TEACHER_CFG:g}", "-."))


def teacher_row(cfg: str) -> str:
    return f"teacher, 50 steps, CFG {cfg}"


def rows(weights: Path) -> list[tuple[str, list[str]]]:
    """(row name, asd-eval arguments) in table order."""
    table = [("ground truth", ["--model", "real"]),
             ("ground truth, VAE round trip", ["--model", "real-vae", "--vae", str(weights / "vae.safetensors")])]
    table += [(teacher_row(cfg), ["--checkpoint", str(weights / "teacher.safetensors"), "--cfg-scale", cfg])
              for cfg, _ in TEACHER_ROWS]
    for name, file in (("ASD", "student.safetensors"), ("DMD only", "student_dmd_only.safetensors")):
        table += [(f"{name} {plan}", ["--checkpoint", str(weights / file), "--plan", plan]) for plan in PLANS]
    common = ["--vae", str(weights / "vae.safetensors"), "--text-encoder", str(weights / "text_encoder.safetensors")]
    return [(name, args + (common if "--checkpoint" in args else [])) for name, args in table]


def run(num: int, seeds: list[int], weights: Path, names: list[str] | None = None) -> dict:
    results = {}
    for name, args in rows(weights):
        if names is not None and name not in names:
            continue
        per_seed = []
        for seed in seeds:
            figures = evaluate(eval_parser().parse_args([*args, "--num", str(num), "--seed", str(seed)]))
            per_seed.append(figures)
            print(f"{name:<32} seed {seed}: total {figures['total']:.4f} fd {figures['fd']:.3f} "
                  f"({figures['seconds']:.0f} s)", file=sys.stderr, flush=True)
        results[name] = per_seed
    return {"num": num, "seeds": seeds, "rows": results}


def summary(results: dict) -> dict[str, dict[str, tuple[float, float]]]:
    """Row -> key -> (mean over seeds, std over seeds)."""
    out = {}
    for name, per_seed in results["rows"].items():
        out[name] = {k: (float(np.mean([r[k] for r in per_seed])), float(np.std([r[k] for r in per_seed])))
                     for k in (*KEYS, "sharpness", "subject_consistency", "motion_smoothness", "flicker")}
    return out


def markdown_table(results: dict) -> str:
    stats = summary(results)
    head = "| row | total | quality | semantic | FD (lower is better) |\n|---|---|---|---|---|\n"
    lines = [f"| {name} | " + " | ".join(f"{m:.4f} ± {s:.4f}" if k != "fd" else f"{m:.2f} ± {s:.2f}"
                                        for k, (m, s) in ((k, stats[name][k]) for k in KEYS)) + " |"
             for name in stats]
    return head + "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = summary(results)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    x = np.arange(len(PLANS))
    for offset, name in ((-0.18, "ASD"), (0.18, "DMD only")):
        means = [stats[f"{name} {p}"]["total"][0] for p in PLANS]
        spread = [stats[f"{name} {p}"]["total"][1] for p in PLANS]
        ax.bar(x + offset, means, width=0.34, yerr=spread, capsize=3, label=f"{name} student")
    lines = [(teacher_row(cfg), style) for cfg, style in TEACHER_ROWS] + [("ground truth, VAE round trip", ":")]
    for name, style in lines:
        ax.axhline(stats[name]["total"][0], linestyle=style, color="black", linewidth=1, label=name)
    ax.set_xticks(x, [f"plan {p}" for p in PLANS])
    ax.set_ylabel("total score (higher is better)")
    low = min(stats[f"{n} {p}"]["total"][0] for n in ("ASD", "DMD only") for p in PLANS)
    ax.set_ylim(max(0.0, low - 0.1), 1.0)
    ax.set_title(f"Toy domain, {results['num']} videos x {len(results['seeds'])} seeds (bars: spread over seeds)")
    ax.legend(fontsize=8, loc="upper right")  # the scores sit low; the top is free
    fig.tight_layout()
    with atomic_path(path, suffix=".tmp.png") as temp:
        fig.savefig(temp)
    plt.close(fig)


def write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "results.json", suffix=".tmp") as temp:
        Path(temp).write_text(json.dumps(results, indent=1))
    with atomic_path(out / "results_table.md", suffix=".tmp") as temp:
        Path(temp).write_text(markdown_table(results))
    plot(results, out / "results.png")


def merge(parts: list[dict], weights: Path) -> dict:
    """Parts evaluated in separate processes, back in table order: rows split across parts,
    and seeds too (a later run adding a seed to every row). Every row must end up with the
    same seeds, and every part must have used the same --num."""
    if len({p["num"] for p in parts}) != 1:
        raise SystemExit("the parts were evaluated with different --num: rerun them alike")
    found: dict[str, dict[int, dict]] = {}
    for part in parts:
        for name, per_seed in part["rows"].items():
            for seed, figures in zip(part["seeds"], per_seed):
                if seed in found.setdefault(name, {}):
                    raise SystemExit(f"row {name!r} seed {seed} is in two parts: keep one")
                found[name][seed] = figures
    missing = [name for name, _ in rows(weights) if name not in found]
    if missing:
        raise SystemExit(f"rows missing from the parts: {missing}")
    seeds = sorted(next(iter(found.values())))
    uneven = [name for name in found if sorted(found[name]) != seeds]
    if uneven:
        raise SystemExit(f"rows with other seeds than {seeds}: {uneven}; evaluate every row at the same seeds")
    return {"num": parts[0]["num"], "seeds": seeds,
            "rows": {n: [found[n][seed] for seed in seeds] for n, _ in rows(weights)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.results", description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--weights", default=str(WEIGHTS_DIR), help="folder with the five shipped files")
    parser.add_argument("--out", default="docs", help="folder for results.json, results_table.md, results.png")
    parser.add_argument("--rows", nargs="+", metavar="PREFIX",
                        help="only the rows whose name starts with one of these (e.g. 'ASD' 'teacher'); with --part")
    parser.add_argument("--part", help="write this subset's figures to this JSON file instead of --out")
    parser.add_argument("--merge", nargs="+", metavar="PART", help="combine --part files into --out")
    args = parser.parse_args(argv)
    weights = Path(args.weights)
    if args.merge:
        results = merge([json.loads(Path(p).read_text()) for p in args.merge], weights)
    else:
        chosen = [name for name, _ in rows(weights) if not args.rows or name.startswith(tuple(args.rows))]
        results = run(args.num, args.seeds, weights, chosen)
        if args.part:
            with atomic_path(args.part, suffix=".tmp") as temp:
                Path(temp).write_text(json.dumps(results, indent=1))
            return 0
    write(results, Path(args.out))
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
