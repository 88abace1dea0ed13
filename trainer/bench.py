"""`python -m trainer.bench`: what ASD costs per distill iteration, and scaling over processes.

The trainer's own benchmark (the library's `asd-bench` never imports the trainer). Prints
one JSON object:

* asd_step_overhead: seconds per distill iteration with ASD on (asd_weight > 0) / off (= 0),
  same config, same seeds, same exit steps (target <= 1.5). Timed over whole generator cycles
  (`gen_update_ratio` iterations: one generator update, the rest critic-only), after one
  untimed warm-up cycle.
* samples_per_second_{1,2}_procs: distill samples per second with 1 and 2 processes
  (torchrun, gloo on the CPU, one thread each; per-process batch fixed), and their ratio.

The networks are random but of the toy base size (toy domain: 9 latent frames of
8x8, 4-layer width-128 transformer): the cost does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

CONFIG = Path(__file__).resolve().parent / "configs" / "toy" / "distill.yaml"
QUICK_MODEL = dict(num_layers=2, num_attention_heads=1, attention_head_dim=32, ffn_dim=64, freq_dim=32)


def make_fixture_runs(folder: Path, quick: bool) -> tuple[Path, Path]:
    """A random teacher run (model + text encoder) and an init run (same weights, causal chunks)."""
    from asd_core.checkpoint import save_checkpoint
    from asd_core.model import CausalWanTransformer
    from asd_core.toy.defaults import TOY, toy_model_config
    from asd_core.toy.text_encoder import ToyTextConfig, ToyTextEncoder

    config = toy_model_config()
    if quick:
        config = replace(config, **QUICK_MODEL)
    torch.manual_seed(0)
    model = CausalWanTransformer(replace(config, chunk_frames=TOY.latent_frames))
    teacher, init = folder / "teacher", folder / "init"
    for run, chunk in ((teacher, TOY.latent_frames), (init, config.chunk_frames)):
        run.mkdir(parents=True, exist_ok=True)
        save_checkpoint(run / "model.safetensors", model.state_dict(), replace(config, chunk_frames=chunk), plan="4")
    ToyTextEncoder(ToyTextConfig(width=config.text_dim, max_length=TOY.text_length)).save(
        teacher / "text_encoder.safetensors")
    return teacher, init


def distill_overrides(teacher: Path, init: Path, out_dir: Path, asd_weight: float, quick: bool) -> list[str]:
    size = ["latent_height=4", "latent_width=4", "batch_size=2"] if quick else []
    return [f"teacher={teacher}", f"init={init}", f"out_dir={out_dir}", f"asd_weight={asd_weight}",
            "progress=false", "tensorboard=false", *size]


def time_iterations(overrides: list[str], cycles: int) -> dict:
    """Build the distill stage (in this process, or one rank under torchrun) and time `cycles` cycles."""
    from . import dist
    from .config import load_config
    from .stages import build_stage

    config = load_config(CONFIG, overrides)
    runtime = dist.init_runtime("cpu")
    try:
        stage = build_stage(config, runtime)
        ratio = config.gen_update_ratio
        for step in range(ratio):  # warm-up cycle (allocator, first-call overheads)
            stage.train_step(step)
        dist.barrier(runtime)
        start = time.perf_counter()
        iterations = cycles * ratio
        for step in range(ratio, ratio + iterations):
            stage.train_step(step)
        dist.barrier(runtime)
        seconds = time.perf_counter() - start
        per_iteration = seconds / iterations
        return {"sec_per_iteration": per_iteration, "world_size": runtime.world_size,
                "samples_per_second": runtime.world_size * config.batch_size / per_iteration,
                "is_main": runtime.is_main}
    finally:
        dist.shutdown(runtime)


def run_procs(procs: int, overrides: list[str], cycles: int) -> dict:
    """One torchrun of `procs` gloo processes (one thread each); rank 0's JSON line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
               "-m", "trainer.bench", "--worker", "--cycles", str(cycles), "--", *overrides]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"torchrun with {procs} processes failed:\n{result.stderr[-2000:]}")
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def run_trainer_benchmark(quick: bool = False, cycles: int | None = None, skip_procs: bool = False) -> dict:
    cycles = cycles or (1 if quick else 2)
    with tempfile.TemporaryDirectory(prefix="asd-bench-") as temp:
        folder = Path(temp)
        teacher, init = make_fixture_runs(folder, quick)
        on = time_iterations(distill_overrides(teacher, init, folder / "on", 10.0, quick), cycles)
        off = time_iterations(distill_overrides(teacher, init, folder / "off", 0.0, quick), cycles)
        result = {
            "asd_step_overhead": on["sec_per_iteration"] / off["sec_per_iteration"],
            "sec_per_iteration_asd_on": on["sec_per_iteration"],
            "sec_per_iteration_asd_off": off["sec_per_iteration"],
            "cycles": cycles,
            "targets": {"asd_step_overhead": {"comparison": "<=", "bound": 1.5}},
        }
        if not skip_procs:
            overrides = distill_overrides(teacher, init, folder / "procs", 10.0, quick)
            one, two = (run_procs(p, overrides, cycles) for p in (1, 2))
            result |= {"samples_per_second_1_procs": one["samples_per_second"],
                       "samples_per_second_2_procs": two["samples_per_second"],
                       "procs_scaling_2_vs_1": two["samples_per_second"] / one["samples_per_second"]}
    result["targets"]["asd_step_overhead"]["met"] = result["asd_step_overhead"] <= 1.5
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny networks and latents (seconds; the tests)")
    parser.add_argument("--cycles", type=int, help="timed generator cycles per figure (default 2, --quick 1)")
    parser.add_argument("--skip-procs", action="store_true", help="skip the 1 vs 2 process torchrun figures")
    # Internal: a torchrun rank timing `--cycles` cycles of the stage built from OVERRIDES.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cycles is not None and args.cycles < 1:
        parser.error(f"--cycles must be >= 1, got {args.cycles}")
    if not args.worker:
        if args.overrides:
            parser.error(f"unexpected arguments {args.overrides}: the benchmark takes only the flags above")
        result = run_trainer_benchmark(quick=args.quick, cycles=args.cycles, skip_procs=args.skip_procs)
        print(json.dumps(result, indent=2))
        return 0
    torch.set_num_threads(1)
    result = time_iterations(args.overrides, args.cycles or 2)
    if result.pop("is_main"):
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
