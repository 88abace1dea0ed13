"""`asd-generate`: a text-to-video run of the causal sampler, written to .mp4 / .webp / .gif."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..defaults import TOY, load_default_pipeline
from ..sampler import check_video_shape, sample_video
from ..schedule import parse_plan
from ..vae import latent_frames_for, pixel_frames_for, pixels_to_video
from ..video_io import VIDEO_EXTENSIONS, write_video

DEFAULT_PROMPT = "a red circle and a blue square"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asd-generate", description="Generate a video with a causal few-step model.")
    p.add_argument("--checkpoint", help="model file (ours, Self Forcing .pt, Wan/ComfyUI, diffusers); "
                                        "default: the built-in default model")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"text prompt (default: {DEFAULT_PROMPT!r})")
    plan = p.add_mutually_exclusive_group()
    plan.add_argument("--plan", help="step plan: 4, 2, 1, 1*, 2*, first=...;rest=... (default: the checkpoint's "
                                     "trained plan, else 1*)")
    plan.add_argument("--steps", type=int, help="N steps for every chunk (same as --plan N)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=TOY.pixel_frames, help="pixel frames, 4k+1 (default %(default)s)")
    p.add_argument("--width", type=int, default=TOY.width, help="pixels, multiple of 16 (default %(default)s)")
    p.add_argument("--height", type=int, default=TOY.height, help="pixels, multiple of 16 (default %(default)s)")
    p.add_argument("--fps", type=float, default=TOY.fps)
    p.add_argument("--context-noise", type=float, default=0.0, help="timestep of the cache-filling pass (0-1000)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="out/asd.mp4", help=f"output file ({', '.join(VIDEO_EXTENSIONS)})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = generate(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"asd-generate: error: {error}", file=sys.stderr)
        return 2
    print(summary)
    return 0


def generate(args: argparse.Namespace) -> str:
    out = Path(args.out)
    if out.suffix.lower() not in VIDEO_EXTENSIONS:
        raise ValueError(f"--out {out.name!r}: accepted extensions are {', '.join(VIDEO_EXTENSIONS)}")
    if args.width % 16 or args.height % 16:
        raise ValueError(f"--width/--height must be multiples of 16, got {args.width}x{args.height}")
    latent_frames = _latent_frames(args.frames)

    pipeline = load_default_pipeline(device=args.device)
    label = pipeline.label
    model = pipeline.model
    if args.checkpoint:
        from ..checkpoint import load_model

        model = load_model(args.checkpoint, device=args.device)
        if model.config.text_dim != pipeline.text_encoder.config.width:
            raise ValueError(
                f"{args.checkpoint} expects {model.config.text_dim}-dim text embeddings (umt5-xxl for real Wan); "
                "asd-generate only carries the toy domain's text encoder and VAE. Run real Wan checkpoints in "
                "ComfyUI (workflows/) or through the Python API with your own umt5 embeddings and Wan VAE"
            )
        label = f"{Path(args.checkpoint).name}" + ("" if pipeline.trained else f"; toy VAE/text encoder {label}")

    spec = args.plan if args.plan else (str(args.steps) if args.steps else (model.trained_plan or "1*"))
    plan = parse_plan(spec)
    latent_h, latent_w = args.height // 8, args.width // 8
    chunk = model.config.chunk_frames
    if latent_frames % chunk:
        lower = max(chunk, latent_frames // chunk * chunk)
        raise ValueError(
            f"--frames {args.frames} gives {latent_frames} latent frames, which do not split into chunks of {chunk}; "
            f"use --frames {pixel_frames_for(lower)} or {pixel_frames_for(lower + chunk)}"
        )
    check_video_shape(latent_frames, model.config.chunk_frames, latent_h, latent_w, model.config.patch_size)
    context = pipeline.text_encoder.encode([args.prompt]).to(model.dtype)

    start = time.perf_counter()
    decoder = pipeline.codec.decode_stream()
    pieces = []
    with tqdm(total=plan.model_calls(latent_frames // model.config.chunk_frames) - 1, unit="call",
              desc=f"plan {plan.spec}", leave=False) as bar:
        def tick(progress):
            if progress.finished_chunk is None:
                bar.update(1)

        for chunk in sample_video(model, plan=plan, context=context, num_frames=latent_frames,
                                  latent_height=latent_h, latent_width=latent_w, seeds=[args.seed],
                                  context_noise=args.context_noise, callback=tick):
            pieces.append(decoder.push(chunk))
    decoder.close()
    frames = pixels_to_video(torch.cat(pieces, dim=2))[0]  # (T, H, W, 3) in [0, 1]
    write_video(out, frames, fps=args.fps)
    seconds = time.perf_counter() - start
    return (f"wrote {out}: {frames.shape[0]} frames {args.width}x{args.height}, plan {plan.describe()}, "
            f"{seconds:.1f} s [{label}]")


def _latent_frames(pixel_frames: int) -> int:
    try:
        return latent_frames_for(pixel_frames)
    except ValueError:
        below = max(1, (pixel_frames - 1) // 4 * 4 + 1)
        raise ValueError(f"--frames {pixel_frames}: the Wan VAE needs 4k+1 frames, e.g. {below} or {below + 4}") from None


if __name__ == "__main__":
    sys.exit(main())
