"""`asd-eval`: score a model of the toy shapes domain against the domain's known ground truth.

    asd-eval                                  # the shipped student at its trained plan
    asd-eval --plan 1 --num 64 --seed 0 --json
    asd-eval --model teacher                  # the shipped teacher at its many-step plan, with CFG
    asd-eval --checkpoint runs/toy/distill/model.safetensors --plan "2*"
    asd-eval --model real                     # the domain's own videos: the ceiling of every score

Sample i of a run has the caption of video i of the evaluation stream `EVAL_STREAM + seed`
and its own noise seed, so every row of a comparison sees the same prompts and the same noise.
Scores come from `asd_core.toy.evaluate` (quality, semantic, total in [0, 1]; `fd` >= 0,
lower is better); `std_total` is the spread of the per-video total over the N videos.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..defaults import TEACHER_CFG, TOY
from ..devices import DTYPES
from ..schedule import parse_plan

EVAL_STREAM = 2_000_000  # caption stream of evaluation seed 0; far from training (11) and the FD reference
NOISE_STRIDE = 1_000_000  # noise seed of sample i at evaluation seed s: s * NOISE_STRIDE + i
MODELS = ("student", "teacher", "real", "real-vae")


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
    p.add_argument("--per-chunk", action="store_true",
                   help="also report colour, multiple_objects, empty_frames and sharpness per chunk of the video "
                        "(key 'chunks': one value per chunk, and the chunks' pixel frames)")
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
    """Generate (or take) `args.num` videos and score them; returns the flat result dict."""
    from ..toy.domain import caption, make_batch, sample_video_spec
    from ..toy.evaluate import evaluate_videos

    if args.num < 2:
        raise ValueError(f"--num must be >= 2 (the Frechet distance needs a covariance), got {args.num}")
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if not 0 <= args.context_noise <= 1000:
        raise ValueError(f"--context-noise is a timestep in [0, 1000], got {args.context_noise}")
    if args.cfg_scale is not None and not args.cfg_scale >= 0:
        raise ValueError(f"--cfg-scale must be >= 0 (1 = no guidance), got {args.cfg_scale}")
    plan = parse_plan(args.plan) if args.plan else None  # a typo fails before any loading
    stream = EVAL_STREAM + args.seed
    frames, height, width = TOY.pixel_frames, TOY.height, TOY.width
    start = time.perf_counter()

    if not args.checkpoint and args.model in ("real", "real-vae"):
        videos, captions = make_batch(stream, args.num, frames, height, width)
        label, plan_spec = "ground-truth videos of the domain", "-"
        if args.model == "real-vae":
            videos = _vae_round_trip(videos, _load_codec(args.vae), args.batch)
            label = "ground-truth videos after the VAE round trip"
    else:
        captions = [caption(sample_video_spec(stream, i, frames, height, width)) for i in range(args.num)]
        model, text_encoder, codec, label, cfg = _load(args)
        plan = plan or parse_plan(model.trained_plan or "1*")
        plan_spec = plan.spec
        seeds = [args.seed * NOISE_STRIDE + i for i in range(args.num)]
        videos = generate_videos(model, text_encoder, codec, captions, seeds, plan, cfg, args.batch,
                                 context_noise=args.context_noise)
        label += f", cfg {cfg:g}" + (f", context noise {args.context_noise:g}" if args.context_noise else "")
        label += f", {args.dtype}" if args.dtype != "float32" else ""

    result = evaluate_videos(videos, captions)
    if args.per_chunk:
        from ..toy.evaluate import frame_profile
        from ..vae import chunk_pixel_ranges

        chunk = TOY.chunk_frames if not args.checkpoint and args.model in ("real", "real-vae") else model.config.chunk_frames
        ranges = chunk_pixel_ranges(TOY.latent_frames, chunk)
        result["chunks"] = {"pixel_frames": [list(r) for r in ranges]} | frame_profile(videos, captions, ranges)
    result |= {"model": label, "plan": plan_spec, "num": args.num, "seed": args.seed,
               "seconds": round(time.perf_counter() - start, 2)}
    return result


def generate_videos(model, text_encoder, codec, captions: list[str], seeds: list[int], plan, cfg_scale: float,
                    batch: int, context_noise: float = 0.0) -> np.ndarray:
    """Videos (N, T, H, W, 3) uint8 for the captions, sampled `batch` at a time with a progress bar."""
    from ..sampler import sample_video
    from ..vae import pixels_to_video

    latent = (TOY.latent_frames, TOY.latent_height, TOY.latent_width)
    if model.config.chunk_frames > latent[0] or latent[0] % model.config.chunk_frames:
        raise ValueError(f"the model's chunks of {model.config.chunk_frames} latent frames do not split the "
                         f"domain's {latent[0]} latent frames: not a model of the toy domain")
    out = []
    with torch.no_grad():
        negative = text_encoder.encode([""]) if cfg_scale != 1.0 else None
        bar = tqdm(total=len(captions), desc=f"plan {plan.spec}", unit="video", file=sys.stderr, leave=False)
        for lo in range(0, len(captions), batch):
            texts, batch_seeds = captions[lo:lo + batch], seeds[lo:lo + batch]
            context = text_encoder.encode(texts)
            chunks = list(sample_video(model, plan=plan, context=context, num_frames=latent[0],
                                       latent_height=latent[1], latent_width=latent[2], seeds=batch_seeds,
                                       negative_context=negative, cfg_scale=cfg_scale,
                                       context_noise=context_noise))
            pixels = codec.decode(torch.cat(chunks, dim=2).float())
            out.append(_to_uint8(pixels_to_video(pixels)))
            bar.update(len(texts))
        bar.close()
    return np.concatenate(out)


def _to_uint8(video: torch.Tensor) -> np.ndarray:
    return (video.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _vae_round_trip(videos: np.ndarray, codec, batch: int) -> np.ndarray:
    from ..vae import pixels_to_video, video_to_pixels

    out = []
    with torch.no_grad():
        for lo in range(0, len(videos), batch):
            frames = torch.from_numpy(videos[lo:lo + batch]).float() / 255.0
            latents = codec.encode(video_to_pixels(frames))
            out.append(_to_uint8(pixels_to_video(codec.decode(latents))))
    return np.concatenate(out)


def _load_codec(path: str | None):
    from ..defaults import default_file
    from ..vae import LatentCodec

    file = Path(path) if path else default_file("vae")
    if not file.is_file():
        raise FileNotFoundError(f"{'--vae ' if path else 'the shipped VAE '}{file}: no such file")
    return LatentCodec.load(file)


def _load(args):
    """(model, text encoder, codec, label, guidance) for --checkpoint or the shipped --model."""
    from ..checkpoint import load_model, recorded_guidance
    from ..defaults import default_file
    from ..text import ToyTextEncoder

    if args.checkpoint:
        file = Path(args.checkpoint)
        if not file.is_file():
            raise FileNotFoundError(f"--checkpoint {file}: no such file")
        beside = file.parent / "text_encoder.safetensors"
        text_file = Path(args.text_encoder) if args.text_encoder else (beside if beside.is_file()
                                                                        else default_file("text_encoder"))
    else:
        file = default_file(args.model)
        if not file.is_file():
            raise FileNotFoundError(f"the shipped {args.model} {file} is missing: pass --checkpoint, or train and "
                                    "export the default (docs/default_model.md)")
        text_file = Path(args.text_encoder) if args.text_encoder else default_file("text_encoder")
    if not text_file.is_file():
        raise FileNotFoundError(f"text encoder {text_file}: no such file (pass --text-encoder)")
    model = load_model(file, dtype=DTYPES[args.dtype])
    role = model.checkpoint_metadata.get("asd.role", "student")
    # The file's own guidance; teachers written before asd.cfg existed get the shipped teacher's.
    cfg = args.cfg_scale if args.cfg_scale is not None else recorded_guidance(
        model.checkpoint_metadata, str(file), default=TEACHER_CFG if role == "teacher" else 1.0)
    text_encoder = ToyTextEncoder.load(text_file)
    if text_encoder.width != model.config.text_dim:
        raise ValueError(f"{file.name} takes {model.config.text_dim}-dim text but {text_file.name} gives "
                         f"{text_encoder.width}: pass the text encoder the model was trained with")
    codec = _load_codec(args.vae)
    return model, text_encoder, codec, f"{role} {file.name}", cfg


def format_result(result: dict) -> str:
    head = f"{result['model']}, plan {result['plan']}, {result['num']} videos, seed {result['seed']}"
    main_keys = ("total", "quality", "semantic", "fd")
    lines = [head] + [f"  {k:<20} {result[k]:.4f}" for k in main_keys]
    lines += [f"  {k:<20} {v:.4f}" for k, v in sorted(result.items())
              if isinstance(v, float) and k not in main_keys and k != "seconds"]
    for key, values in result.get("chunks", {}).items():
        if key != "pixel_frames":
            lines.append(f"  {key + ' per chunk':<27} " + " ".join(f"{v:.4f}" for v in values))
    lines.append(f"  ({result['seconds']:.1f} s)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
