"""The built-in default's targets, measured on the recipe rather than on one file.

    python -m research.targets --weights DIR --asd RUN RUN RUN --dmd RUN RUN RUN \
        --seeds 3 4 5 --num 64 --out targets.json

Each `--asd` / `--dmd` RUN is a finished distill run (its `model.safetensors`, the run's EMA:
the file the recipe ships) or a model file, one per training seed, in the same order for both
students so that the i-th ASD and DMD runs form a pair. DIR holds the chain's VAE, teacher and
text encoder (the files `trainer.default_model --ship` writes). Every evaluation is `asd-eval`'s
(same captions and noise per evaluation seed); `--seeds` should be seeds the runs were not
chosen on. Figures are cached in `--out` as they come, so a stopped run continues, and two
processes can split the work (`--only`) and `--merge` their files.

A target "beyond the seed spread" holds when every training seed of one student is above
every training seed of the other: the two ranges do not overlap.
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
from asd_core.toy.defaults import TEACHER_CFG
from trainer.stages.common import resolve_model_file

STUDENT_PLANS = ("1", "1*", "2")
TARGETS = {  # name -> what is compared; the numbers are the issue's
    "vae": "VAE round trip total >= 0.90",
    "teacher": "teacher total >= 0.80 and semantic >= 0.80",
    "asd_1star": "ASD `1*` total >= 95% of the teacher's",
    "asd_2": "ASD `2` total >= the teacher's",
    "asd_vs_dmd_1": "ASD above DMD only at `1`, beyond the training-seed spread",
    "asd_vs_dmd_2": "ASD above DMD only at `2`, beyond the training-seed spread",
    "ffe": "ASD `1*` above `1`, in every training seed",
}


def model_file(run: str) -> Path:
    try:
        return resolve_model_file(run)
    except ValueError as err:
        raise SystemExit(str(err)) from None


def jobs(weights: Path, asd: list[str], dmd: list[str]) -> list[tuple[str, list[str]]]:
    """(cache key, asd-eval arguments without --seed) for every evaluation the targets need."""
    common = ["--vae", str(weights / "vae.safetensors"), "--text-encoder", str(weights / "text_encoder.safetensors")]
    out = [("vae", ["--model", "real-vae", "--vae", str(weights / "vae.safetensors")]),
           ("teacher", ["--checkpoint", str(weights / "teacher.safetensors"), "--cfg-scale", f"{TEACHER_CFG:g}",
                        *common])]
    for name, runs in (("asd", asd), ("dmd", dmd)):
        for index, run in enumerate(runs):
            out += [(f"{name}{index}|{plan}", ["--checkpoint", str(model_file(run)), "--plan", plan, *common])
                    for plan in STUDENT_PLANS]
    return out


def measure(cache: dict, path: Path | None, todo: list[tuple[str, list[str]]], seeds: list[int], num: int) -> None:
    """Evaluate what the cache lacks, saving it after each evaluation."""
    for key, args in todo:
        for seed in seeds:
            entry = f"{key}|{seed}"
            if entry in cache["figures"]:
                continue
            figures = evaluate(eval_parser().parse_args([*args, "--num", str(num), "--seed", str(seed)]))
            cache["figures"][entry] = {k: figures[k] for k in ("total", "quality", "semantic", "fd")}
            print(f"{entry:<20} total {figures['total']:.4f} semantic {figures['semantic']:.4f}",
                  file=sys.stderr, flush=True)
            if path is not None:
                save(cache, path)


def save(cache: dict, path: Path) -> None:
    with atomic_path(path, suffix=".tmp") as temp:
        Path(temp).write_text(json.dumps(cache, indent=1))


def mean_over_seeds(cache: dict, key: str, metric: str = "total") -> float:
    values = [cache["figures"][f"{key}|{seed}"][metric] for seed in cache["seeds"]]
    return float(np.mean(values))


def assess(cache: dict) -> list[dict]:
    """One row per target: the figures it rests on, in words, and whether it is met."""
    n_asd, n_dmd = cache["training_seeds"]
    vae = mean_over_seeds(cache, "vae")
    teacher, teacher_sem = mean_over_seeds(cache, "teacher"), mean_over_seeds(cache, "teacher", "semantic")
    asd = {p: [mean_over_seeds(cache, f"asd{i}|{p}") for i in range(n_asd)] for p in STUDENT_PLANS}
    dmd = {p: [mean_over_seeds(cache, f"dmd{i}|{p}") for i in range(n_dmd)] for p in STUDENT_PLANS}

    def spread(values: list[float]) -> str:
        return f"{np.mean(values):.4f} ± {np.std(values):.4f}"

    def seeds(values: list[float]) -> str:
        return ", ".join(f"{v:.4f}" for v in values)

    rows = [("vae", f"{vae:.4f}", vae >= 0.90),
            ("teacher", f"total {teacher:.4f}, semantic {teacher_sem:.4f}", teacher >= 0.80 and teacher_sem >= 0.80)]
    ratio = np.mean(asd["1*"]) / teacher
    rows.append(("asd_1star", f"{spread(asd['1*'])} ({100 * ratio:.1f}% of {teacher:.4f}; seeds {seeds(asd['1*'])})",
                 ratio >= 0.95))
    rows.append(("asd_2", f"{spread(asd['2'])} against {teacher:.4f} (seeds {seeds(asd['2'])})",
                 float(np.mean(asd["2"])) >= teacher))
    for plan in ("1", "2"):
        gaps = [a - d for a, d in zip(asd[plan], dmd[plan])]
        words = (f"{spread(asd[plan])} against {spread(dmd[plan])}; per seed pair "
                 + ", ".join(f"{g:+.4f}" for g in gaps))
        rows.append((f"asd_vs_dmd_{plan}", words, min(asd[plan]) > max(dmd[plan])))
    gaps = [star - one for star, one in zip(asd["1*"], asd["1"])]
    rows.append(("ffe", "per seed " + ", ".join(f"{g:+.4f}" for g in gaps), min(gaps) > 0))
    return [{"target": TARGETS[name], "measured": words, "met": bool(met)} for name, words, met in rows]


def markdown(cache: dict) -> str:
    head = (f"Evaluation seeds {', '.join(map(str, cache['seeds']))}, {cache['num']} videos each; students: "
            f"{cache['training_seeds'][0]} ASD and {cache['training_seeds'][1]} DMD-only training seeds, each "
            "run's own model file, mean ± std over training seeds.\n\n| target | measured | met? |\n|---|---|---|\n")
    return head + "".join(f"| {r['target']} | {r['measured']} | {'yes' if r['met'] else 'no'} |\n"
                          for r in assess(cache))


def merge(paths: list[str]) -> dict:
    caches = [json.loads(Path(p).read_text()) for p in paths]
    first = caches[0]
    for other in caches[1:]:
        if (other["seeds"], other["num"], other["training_seeds"]) != (first["seeds"], first["num"],
                                                                      first["training_seeds"]):
            raise SystemExit("the files were measured with other --seeds, --num or runs: measure them alike")
    figures = {}
    for cache in caches:
        figures.update(cache["figures"])
    return {**first, "figures": figures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.targets", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="folder with vae, teacher and text_encoder .safetensors")
    parser.add_argument("--asd", nargs="+", default=[], help="ASD runs (or model files), one per training seed")
    parser.add_argument("--dmd", nargs="+", default=[], help="DMD-only runs, in the same seed order")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5], help="evaluation seeds (fresh ones)")
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--only", choices=["reference", "asd", "dmd"], help="measure this part only")
    parser.add_argument("--out", help="JSON file: figures cached as they come, read back on a rerun")
    parser.add_argument("--merge", nargs="+", metavar="FILE", help="combine --out files and print the table")
    args = parser.parse_args(argv)
    if args.merge:
        print(markdown(merge(args.merge)))
        return 0
    if not args.weights or not args.asd or len(args.asd) != len(args.dmd):
        parser.error("give --weights and as many --asd as --dmd runs (one per training seed, paired in order)")
    path = Path(args.out) if args.out else None
    cache = {"seeds": args.seeds, "num": args.num, "training_seeds": [len(args.asd), len(args.dmd)], "figures": {}}
    if path is not None and path.is_file():
        cache = json.loads(path.read_text())
        if (cache["seeds"], cache["num"]) != (args.seeds, args.num):
            raise SystemExit(f"{path} holds figures for other --seeds or --num: give another --out")
        # More training seeds than last time extend the cache: the first runs' figures are kept.
        cache["training_seeds"] = [len(args.asd), len(args.dmd)]
    todo = jobs(Path(args.weights), args.asd, args.dmd)
    if args.only:
        prefix = {"reference": ("vae", "teacher"), "asd": ("asd",), "dmd": ("dmd",)}[args.only]
        todo = [(key, a) for key, a in todo if key.startswith(prefix)]
    measure(cache, path, todo, args.seeds, args.num)
    if not args.only:
        print(markdown(cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
