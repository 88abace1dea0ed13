"""asd-bench: the sampler's speed and memory as one JSON object (library: asd_core.bench).

Default: the design ratios at a small size (1 vs 4 steps, KV cache vs recompute, rolling-cache
memory). `--real-size`: Wan2.1-1.3B at 832x480x81 with random bf16 weights (FPS and
first-chunk latency per plan, peak memory, bidirectional reference), meant for a GPU
(`--device cuda`). docs/performance.md has the figures and how they are taken.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from ..bench.ratios import run_benchmark
from ..bench.realsize import real_size_settings, run_real_size
from ..bench.settings import DEFAULTS, make_settings

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
TRAINER_MOVED = "the trainer benchmark is its own command now: python -m trainer.bench [--quick]"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asd-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny config (seconds; used by the tests)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, help=f"timed runs per measurement, best kept (default {DEFAULTS['repeats']})")
    real = p.add_argument_group("real size (Wan2.1-1.3B, 832x480x81)")
    real.add_argument("--real-size", action="store_true",
                      help="FPS and first-chunk latency per plan, peak memory, bidirectional reference; with "
                           "--quick the same code at a reduced size")
    real.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16", help="model dtype (default bfloat16)")
    real.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks")
    ratios = p.add_argument_group("ratios (the default benchmark)")
    ratios.add_argument("--layers", type=int, help=f"transformer blocks (default {DEFAULTS['layers']})")
    ratios.add_argument("--width", type=int, help=f"model width = heads x head_dim (default {DEFAULTS['width']})")
    ratios.add_argument("--heads", type=int, help=f"attention heads (default {DEFAULTS['heads']})")
    ratios.add_argument("--ffn", type=int, help=f"feed-forward width (default {DEFAULTS['ffn']})")
    ratios.add_argument("--text-dim", type=int, help=f"text embedding width (default {DEFAULTS['text_dim']})")
    ratios.add_argument("--latent", help=f"latent frame size HxW (default {DEFAULTS['latent']}; patch 2x2 -> H*W/4 tokens)")
    ratios.add_argument("--chunk-frames", type=int, help=f"latent frames per chunk (default {DEFAULTS['chunk_frames']})")
    ratios.add_argument("--chunks", type=int, help=f"chunks of the timed video (default {DEFAULTS['chunks']})")
    ratios.add_argument("--long-chunks", type=int, help="chunks of the long video in the memory test (default 4x --chunks)")
    ratios.add_argument("--window-chunks", type=int, help="rolling cache window in chunks (default --chunks)")
    ratios.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest allowed |cached - recompute| before the benchmark fails (default 1e-3)")
    ratios.add_argument("--skip-memory", action="store_true", help="skip the memory measurement (its subprocesses)")
    p.add_argument("--trainer", action="store_true", help=argparse.SUPPRESS)  # moved: answered with TRAINER_MOVED
    return p


def settings_from_args(args: argparse.Namespace):
    """The ratio benchmark's settings from the flags (ValueError with the flag to fix)."""
    sizes = {name: getattr(args, name) for name in DEFAULTS}
    return make_settings(quick=args.quick, device=args.device, seed=args.seed, tolerance=args.tolerance,
                         long_chunks=args.long_chunks, window_chunks=args.window_chunks, **sizes)


def _reject_mixed_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A flag of one benchmark given to the other would be silently ignored: say so instead."""
    ratio_flags = [name for name in (*DEFAULTS, "long_chunks", "window_chunks") if name != "repeats"
                   and getattr(args, name) is not None]
    ratio_flags += ["skip_memory"] if args.skip_memory else []
    ratio_flags += ["tolerance"] if args.tolerance != parser.get_default("tolerance") else []
    if args.real_size and ratio_flags:
        flags = ", ".join("--" + name.replace("_", "-") for name in ratio_flags)
        parser.error(f"{flags} set the ratio benchmark's sizes; --real-size runs the fixed 1.3B size (drop them)")
    if not args.real_size and (args.compile or args.dtype != parser.get_default("dtype")):
        parser.error("--compile and --dtype apply to --real-size only")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.trainer:
        parser.error(TRAINER_MOVED)
    _reject_mixed_flags(parser, args)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    try:
        if args.real_size:
            settings = real_size_settings(quick=args.quick, device=args.device, dtype=DTYPES[args.dtype],
                                          compile=args.compile, repeats=args.repeats, seed=args.seed)
        else:
            settings = settings_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    if args.real_size:
        result = run_real_size(settings)
    else:
        result = run_benchmark(settings, args.threads, args.skip_memory)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
