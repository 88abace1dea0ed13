"""`asd-eval`: score a model of the toy shapes domain against the domain's known ground truth.

    asd-eval                                  # the shipped student at its trained plan
    asd-eval --plan 1 --num 64 --seed 0 --json
    asd-eval --model teacher                  # the shipped teacher at its many-step plan, with CFG
    asd-eval --checkpoint runs/toy/distill/model.safetensors --plan "2*"
    asd-eval --model real                     # the domain's own videos: the ceiling of every score
    asd-eval --frames 141 --window 6 --sink 3 # 4x the trained length, rolling cache: scores per chunk

A thin leaf over `asd_core.toy.score_model` / `score_real` (the same captions and noise for
every row of a comparison): this module only reads the flags and the files. Scores are those
of `asd_core.toy.scores` (quality, semantic, total in [0, 1]; `fd` >= 0, lower is better);
`std_total` is the spread of the per-video total over the N videos. Per chunk (`--per-chunk`,
implied by a video longer than the trained 33 frames or a `--window`), every score is given to
each chunk's frames as if they were a video of their own: a drift over a long video shows there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..devices import DTYPES
from ..request import CLI_NAMES, check_request
from ..schedule import parse_plan
from ..toy.defaults import TEACHER_CFG, TOY, toy_model_config

MODELS = ("student", "teacher", "real", "real-vae")
EVAL_NAMES = CLI_NAMES | {"window": "--window"}  # the words request errors use here
# Per-chunk table columns: result key -> header, in the order printed.
CHUNK_COLUMNS = {"total": "total", "quality": "quality", "semantic": "semantic", "colour": "colour",
                 "object_class": "object", "multiple_objects": "multi", "empty_frames": "empty",
                 "sharpness": "sharp", "subject_consistency": "consist", "motion_smoothness": "smooth",
                 "flicker": "flicker", "dynamic_degree": "dynamic"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asd-eval", description="Score videos of a toy-domain model: quality, "
                                "semantic and total (VBench-like, exact) and a Frechet distance to real videos.")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--checkpoint", help="a model file of the toy domain (default: the shipped student)")
    which.add_argument("--model", choices=MODELS, default="student",
                       help="shipped student or teacher; 'real' scores the domain's own videos, 'real-vae' the same "
                            "after a VAE round trip (default: %(default)s)")
    p.add_argument("--plan", help="step plan: 1, 1*, 2, 2*, 4, 50, first=...;rest=... "
                                  "(default: the checkpoint's trained plan)")
    p.add_argument("--num", type=int, default=64, help="videos to generate and score (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed: picks the captions and the noise")
    p.add_argument("--batch", type=int, default=16, help="videos sampled at once (default %(default)s)")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES),
                   help="transformer dtype on the CPU (default %(default)s; bfloat16 / float16 score what GPU users get)")
    p.add_argument("--cfg-scale", type=float,
                   help="classifier-free guidance (default: the guidance the checkpoint records, asd.cfg; a teacher "
                        f"that records none: {TEACHER_CFG}, the shipped teacher's; students: 1 = off)")
    p.add_argument("--context-noise", type=float, default=0.0,
                   help="timestep in [0, 1000] the model is told when a finished (clean) chunk is written to the KV "
                        "cache, as Self Forcing's inference does (default 0)")
    p.add_argument("--text-encoder", help="toy text encoder file (default: text_encoder.safetensors beside the "
                                          "checkpoint, else the shipped one)")
    p.add_argument("--vae", help="toy VAE file (default: the shipped one)")
    p.add_argument("--frames", type=int, default=TOY.pixel_frames,
                   help="pixel frames per video, 4k+1 that make whole chunks, as asd-generate's --frames (default "
                        "%(default)s, the trained length; 141 = 4x: 36 latent frames, 12 chunks of 3)")
    p.add_argument("--window", type=int, default=0,
                   help="rolling KV-cache window in latent frames, the chunk being made included, as the sampler "
                        "node's window_frames (default 0: the cache holds the whole video)")
    p.add_argument("--sink", type=int,
                   help="latent frames at the start of the video the rolling window keeps for ever (default: one "
                        "chunk; 0 = none); needs --window")
    p.add_argument("--per-chunk", action="store_true",
                   help="also report every score per chunk of the video, each chunk's frames scored as a video of "
                        "their own (key 'chunks': one value per chunk, and the chunks' pixel frames); implied by "
                        "--frames beyond the trained length and by --window")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = evaluate(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"asd-eval: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(format_result(result))
    return 0


def evaluate(args: argparse.Namespace) -> dict:
    """Generate (or take) `args.num` videos and score them (`asd_core.toy.model_eval`); the flat result dict."""
    from ..toy.model_eval import score_model, score_real
    from ..vae import load_codec

    plan = parse_plan(args.plan) if args.plan else None  # a typo fails before any loading
    real = not args.checkpoint and args.model in ("real", "real-vae")
    _check_length(args, toy_model_config() if real else None, real)  # before any loading
    per_chunk = args.per_chunk or args.frames > TOY.pixel_frames or bool(args.window)
    start = time.perf_counter()
    if real:
        codec = load_codec(_vae_file(args.vae)) if args.model == "real-vae" else None
        result = score_real(num=args.num, seed=args.seed, codec=codec, batch=args.batch, per_chunk=per_chunk,
                            frames=args.frames)
        label = "ground-truth videos " + ("after the VAE round trip" if codec else "of the domain")
    else:
        pipeline, label, cfg = _load(args)
        _check_length(args, pipeline.model.config, real)  # the model's own chunks and RoPE positions
        result = score_model(pipeline.model, pipeline.text_encoder, pipeline.codec, plan=plan, num=args.num,
                             seed=args.seed, cfg_scale=cfg, context_noise=args.context_noise, batch=args.batch,
                             per_chunk=per_chunk, frames=args.frames, window=args.window or None, sink=args.sink,
                             progress=True)
        label += f", cfg {cfg:g}" + (f", context noise {args.context_noise:g}" if args.context_noise else "")
        label += f", {args.dtype}" if args.dtype != "float32" else ""
    return result | {"model": label, "seconds": round(time.perf_counter() - start, 2)}


def _check_length(args: argparse.Namespace, config, real: bool) -> None:
    """--frames, --window and --sink in the flags' own words: against a config (`request.check_request`)
    when one is given (the domain's for real videos, a model's own chunks and RoPE positions once loaded)."""
    if real and (args.window or args.sink is not None):
        raise ValueError(f"--window and --sink set how a model samples; --model {args.model} renders the domain's "
                         "videos: drop them")
    if args.sink is not None and not args.window:
        raise ValueError(f"--sink {args.sink} needs --window: the whole-video cache keeps every frame")
    if args.window < 0:
        raise ValueError(f"--window must be >= 0 latent frames (0 = the whole video), got {args.window}")
    if config is not None:
        check_request(config, frames=args.frames, width=TOY.width, height=TOY.height, window_frames=args.window or None,
                      sink_frames=args.sink, names=EVAL_NAMES)


def _vae_file(path: str | None) -> Path:
    from ..toy.defaults import default_file

    file = Path(path) if path else default_file("vae")
    if not file.is_file():
        raise FileNotFoundError(f"{'--vae ' if path else 'the shipped VAE '}{file}: no such file")
    return file


def _load(args):
    """(pipeline, label, guidance) for --checkpoint or the shipped --model: the toy files, then `Pipeline.load`."""
    from ..checkpoint import check_checkpoint_path, recorded_guidance
    from ..pipeline import Pipeline, text_encoder_beside
    from ..toy.defaults import default_file

    if args.checkpoint:
        file = Path(args.checkpoint)
        if file.is_dir():
            check_checkpoint_path(file)  # a folder is reported as a folder (with the files in it), not as missing
        if not file.is_file():
            raise FileNotFoundError(f"--checkpoint {file}: no such file")
        text_file = Path(args.text_encoder) if args.text_encoder else (text_encoder_beside(file)
                                                                        or default_file("text_encoder"))
    else:
        file = default_file(args.model)
        if not file.is_file():
            raise FileNotFoundError(f"the shipped {args.model} {file} is missing: pass --checkpoint, or train and "
                                    "export the default (docs/default_model.md)")
        text_file = Path(args.text_encoder) if args.text_encoder else default_file("text_encoder")
    if not text_file.is_file():
        raise FileNotFoundError(f"text encoder {text_file}: no such file (pass --text-encoder)")
    pipeline = Pipeline.load(file, text_encoder=text_file, vae=_vae_file(args.vae), dtype=DTYPES[args.dtype])
    metadata = pipeline.model.checkpoint_metadata
    role = metadata.get("asd.role", "student")
    # The file's own guidance; teachers written before asd.cfg existed get the shipped teacher's.
    cfg = args.cfg_scale if args.cfg_scale is not None else recorded_guidance(
        metadata, str(file), default=TEACHER_CFG if role == "teacher" else 1.0)
    return pipeline, f"{role} {file.name}", cfg


def format_result(result: dict) -> str:
    head = f"{result['model']}, plan {result['plan']}, {result['num']} videos, seed {result['seed']}"
    head += f", {result['frames']} frames" if "frames" in result else ""
    if result.get("window"):
        head += f", rolling window {result['window']} latent frames, sink {result['sink']}"
    main_keys = ("total", "quality", "semantic", "fd")
    lines = [head] + [f"  {k:<20} {result[k]:.4f}" for k in main_keys]
    lines += [f"  {k:<20} {v:.4f}" for k, v in sorted(result.items())
              if isinstance(v, float) and k not in main_keys and k != "seconds"]
    if "chunks" in result:
        lines += format_chunks(result["chunks"])
    lines.append(f"  ({result['seconds']:.1f} s)")
    return "\n".join(lines)


def format_chunks(chunks: dict) -> list[str]:
    """One row per chunk: its pixel frames, then every score (CHUNK_COLUMNS)."""
    keys = [k for k in CHUNK_COLUMNS if k in chunks]
    lines = ["  per chunk:", "  chunk  frames   " + " ".join(f"{CHUNK_COLUMNS[k]:>8}" for k in keys)]
    for i, (first, last) in enumerate(chunks["pixel_frames"]):
        values = " ".join(f"{chunks[k][i]:>8.4f}" for k in keys)
        lines.append(f"  {i + 1:>5}  {f'{first}-{last}':<8} {values}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
