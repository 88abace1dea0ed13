"""`asd-generate`: text to video with a causal few-step model, written to .mp4 / .webp / .gif.

Without --checkpoint it runs the built-in default (the toy shapes domain: 33 frames of 64x64;
an UNTRAINED random stand-in until the trained weights ship, and the summary line says so).

Real Wan2.1 causal checkpoints (ours, Self Forcing .pt, Wan / ComfyUI / diffusers layouts)
need the real text encoder and VAE, from local paths (nothing is downloaded):

    asd-generate --checkpoint self_forcing_dmd.pt --text-encoder Wan2.1-T2V-1.3B-Diffusers \\
        --vae Wan2.1-T2V-1.3B-Diffusers --device cuda --plan "1*" --prompt "..." --out out/wan.mp4

--text-encoder: a umt5-xxl folder with config.json, weights and tokenizer (google/umt5-xxl, or a
Wan diffusers repo: its text_encoder/ and tokenizer/ are found). --vae: the Wan 2.1 VAE as a
diffusers folder (or repo with vae/), or the single file Wan2.1_VAE.pth / wan_2.1_vae.safetensors.
With them the sizes default to Wan's 81 frames of 832x480 at 16 fps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..devices import DTYPES, resolve_device, resolve_dtype
from ..schedule import StepPlan, parse_plan
from ..toy.defaults import TOY
from ..vae import SPATIAL_FACTOR, TEMPORAL_FACTOR
from ..video_io import VIDEO_EXTENSIONS

DEFAULT_PROMPT = "a red circle and a blue square"
WAN_SIZES = {"frames": 81, "width": 832, "height": 480, "fps": 16}
TOY_SIZES = {"frames": TOY.pixel_frames, "width": TOY.width, "height": TOY.height, "fps": TOY.fps}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="asd-generate",
        description="Generate a video with a causal few-step model (default: the built-in toy model).",
        epilog="Real Wan2.1: --checkpoint FILE --text-encoder UMT5_DIR --vae WAN_VAE (local paths; see the module "
               "docstring / README).",
    )
    p.add_argument("--checkpoint", help="model file (ours, Self Forcing .pt, Wan/ComfyUI, diffusers); "
                                        "default: the built-in default model")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="text prompt (default: %(default)r)")
    plan = p.add_mutually_exclusive_group()
    plan.add_argument("--plan", help="step plan: 4, 2, 1, 1*, 2*, first=...;rest=... "
                                     "(default: the checkpoint's trained plan, else 1*)")
    plan.add_argument("--steps", type=int, help="N steps for every chunk (shorthand for --plan N)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, help="pixel frames: 4k+1 that make whole chunks "
                                              f"(default {TOY.pixel_frames}; {WAN_SIZES['frames']} for real Wan)")
    p.add_argument("--width", type=int, help=f"pixels, multiple of 16 (default {TOY.width}; 832 for real Wan)")
    p.add_argument("--height", type=int, help=f"pixels, multiple of 16 (default {TOY.height}; 480 for real Wan)")
    p.add_argument("--fps", type=float, help=f"frames per second of the file (default {TOY.fps}; 16 for real Wan)")
    p.add_argument("--context-noise", type=float, default=0.0,
                   help="timestep (0-1000) the model is told when a finished chunk fills the KV cache; the chunk stays "
                        "clean, as in Self Forcing's inference (default 0)")
    p.add_argument("--cfg-scale", type=float,
                   help="classifier-free guidance against the empty prompt (default: the guidance the checkpoint "
                        "records, asd.cfg, e.g. a teacher's; else 1 = none, as distilled students sample)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                   help="transformer dtype (default: bfloat16 on GPU, float32 on CPU)")
    p.add_argument("--text-encoder", help="local umt5-xxl folder for real Wan checkpoints")
    p.add_argument("--vae", help="local Wan 2.1 VAE (diffusers folder or Wan2.1_VAE.pth / .safetensors)")
    p.add_argument("--out", default="out/asd.mp4", help=f"output file, {' / '.join(VIDEO_EXTENSIONS)} "
                                                        "(default %(default)s; folders are created)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = generate(args)
    except (ValueError, OSError, ImportError) as error:
        message = " ".join(str(error).split())  # one line, whatever the exception text holds
        print(f"asd-generate: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("asd-generate: interrupted, nothing written", file=sys.stderr)
        return 130
    print(summary)
    return 0


def generate(args: argparse.Namespace) -> str:
    """Load, sample, decode chunk by chunk, write; returns the summary line."""
    from ..checkpoint import recorded_guidance
    from ..sampler import sample_video
    from ..vae import pixels_to_video
    from ..video_io import write_video

    # Cheap checks first: a typo should not cost a model load.
    out = Path(args.out)
    if out.suffix.lower() not in VIDEO_EXTENSIONS:
        raise ValueError(f"--out {out.name!r}: accepted extensions are {', '.join(VIDEO_EXTENSIONS)}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if not 0 <= args.context_noise <= 1000:
        raise ValueError(f"--context-noise: context_noise is a timestep in [0, 1000], got {args.context_noise}")
    if args.cfg_scale is not None and not args.cfg_scale >= 0:
        raise ValueError(f"--cfg-scale must be >= 0 (1 = no guidance), got {args.cfg_scale}")
    user_plan = parse_plan(args.plan) if args.plan else (parse_plan(str(args.steps)) if args.steps else None)
    for name in ("checkpoint", "text_encoder", "vae"):
        value = getattr(args, name)
        if value and not Path(value).exists():
            raise FileNotFoundError(f"--{name.replace('_', '-')} {value}: no such file or folder")
    if args.text_encoder and not args.vae:
        raise ValueError("--text-encoder (umt5 for real Wan) needs --vae too: the Wan 2.1 VAE the model's latents belong to")
    device, dtype = device_and_dtype(args.device, args.dtype)

    from ..pipeline import Pipeline

    pipeline = Pipeline.load(args.checkpoint, text_encoder=args.text_encoder, vae=args.vae, device=device, dtype=dtype)
    model, text_encoder, codec, label = pipeline.model, pipeline.text_encoder, pipeline.codec, pipeline.label
    sizes = WAN_SIZES if args.text_encoder else TOY_SIZES
    frames = args.frames if args.frames is not None else sizes["frames"]
    width = args.width if args.width is not None else sizes["width"]
    height = args.height if args.height is not None else sizes["height"]
    fps = args.fps if args.fps is not None else sizes["fps"]
    config = model.config
    latent_frames = _latent_frames(frames, config.chunk_frames)
    _, p_h, p_w = config.patch_size
    if width % (SPATIAL_FACTOR * p_w) or height % (SPATIAL_FACTOR * p_h) or width < 1 or height < 1:
        raise ValueError(f"--width/--height must be positive multiples of {SPATIAL_FACTOR * p_w}x{SPATIAL_FACTOR * p_h} "
                         f"(VAE 8x, patch {p_h}x{p_w}), got {width}x{height}")
    plan = user_plan or parse_plan(getattr(model, "trained_plan", None) or "1*")
    cfg = args.cfg_scale if args.cfg_scale is not None else recorded_guidance(
        getattr(model, "checkpoint_metadata", {}), label, default=1.0)

    with torch.no_grad():
        context = text_encoder.encode([args.prompt])  # (1, L, text_dim); the model casts it to its dtype
        negative = text_encoder.encode([""]) if cfg != 1.0 else None

    start = time.perf_counter()
    pieces, bar = [], None

    def tick(progress) -> None:
        nonlocal bar
        if progress.finished_chunk is None:  # one tick per model call
            if bar is None:  # opened at the first call: errors before it print no stray bar
                bar = tqdm(total=progress.total_calls, desc=f"plan {plan.spec}", unit="call", leave=False,
                           dynamic_ncols=True, file=sys.stderr)
            bar.update(1)

    try:
        with codec.decode_stream() as stream:
            for chunk in sample_video(model, plan=plan, context=context, num_frames=latent_frames,
                                      latent_height=height // SPATIAL_FACTOR, latent_width=width // SPATIAL_FACTOR,
                                      seeds=[args.seed], negative_context=negative, cfg_scale=cfg,
                                      context_noise=args.context_noise, callback=tick):
                pieces.append(stream.push(chunk).cpu())  # decoded as soon as the chunk is done
    finally:
        if bar is not None:
            bar.close()
    video = pixels_to_video(torch.cat(pieces, dim=2))[0]  # (T, H, W, 3) in [0, 1]
    write_video(out, video, fps=fps)
    seconds = time.perf_counter() - start
    guidance = f", cfg {cfg:g}" if cfg != 1.0 else ""
    return (f"wrote {out}: {video.shape[0]} frames {width}x{height}, plan {describe_plan(plan)}{guidance}, "
            f"{seconds:.1f} s [{label}]")


def describe_plan(plan: StepPlan) -> str:
    """'1* (first chunk 4 steps, later 1)' / '4 (4 steps per chunk)'."""
    first, rest = len(plan.first), len(plan.rest)
    if plan.first == plan.rest:
        return f"{plan.spec} ({rest} step{'s' if rest > 1 else ''} per chunk)"
    return f"{plan.spec} (first chunk {first} step{'s' if first > 1 else ''}, later {rest})"


def device_and_dtype(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """`--device` / `--dtype` words, checked (the rule lives in `asd_core.devices`)."""
    try:
        resolved = resolve_device(device)
    except ValueError as err:
        raise ValueError(f"--device: {err}") from None
    return resolved, resolve_dtype(dtype, resolved)


def _latent_frames(pixel_frames: int, chunk_frames: int) -> int:
    """Latent frames for `pixel_frames`, or an error naming the nearest counts that work."""
    per_chunk = TEMPORAL_FACTOR * chunk_frames  # pixel frames per chunk; valid counts are m * per_chunk - 3

    def valid(chunks: int) -> int:
        return chunks * per_chunk - (TEMPORAL_FACTOR - 1)

    chunks = max(0, (pixel_frames + TEMPORAL_FACTOR - 1) // per_chunk)
    if chunks >= 1 and valid(chunks) == pixel_frames:
        return (pixel_frames - 1) // TEMPORAL_FACTOR + 1
    nearest = " or ".join(str(valid(m)) for m in (chunks, chunks + 1) if m >= 1)
    if pixel_frames < 1 or (pixel_frames - 1) % TEMPORAL_FACTOR:
        below = max(1, pixel_frames - (pixel_frames - 1) % TEMPORAL_FACTOR)
        raise ValueError(f"--frames {pixel_frames}: the Wan VAE needs 4k+1 frames, e.g. {below} or "
                         f"{below + TEMPORAL_FACTOR}; with chunks of {chunk_frames} latent frames use --frames {nearest}")
    latent = (pixel_frames - 1) // TEMPORAL_FACTOR + 1
    raise ValueError(f"--frames {pixel_frames}: {pixel_frames} frames make {latent} latent frames, which do not split "
                     f"into chunks of {chunk_frames}; use --frames {nearest}")


if __name__ == "__main__":
    sys.exit(main())
