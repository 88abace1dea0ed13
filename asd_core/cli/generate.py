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
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..devices import DTYPES, resolve_device, resolve_dtype
from ..pipeline import is_toy_text_encoder
from ..request import CLI_NAMES, check_request, check_seed
from ..samplers import NAMES as SAMPLER_NAMES
from ..schedule import StepPlan, parse_plan
from ..toy.defaults import DEFAULT_PROMPT, TOY
from ..toy.domain import BUILTIN_WORDS
from ..video_io import VIDEO_EXTENSIONS

WAN_SIZES = {"frames": 81, "width": 832, "height": 480, "fps": 16}
TOY_SIZES = {"frames": TOY.pixel_frames, "width": TOY.width, "height": TOY.height, "fps": TOY.fps}
MAX_FPS = 1000.0  # beyond this no player shows the frames (GIF/WebP store whole milliseconds per frame)
ECHO_LIMIT = 80  # characters of a quoted user value (a prompt) kept in an error message


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="asd-generate",
        description="Generate a video with a causal few-step model (default: the built-in toy model).",
        epilog="Real Wan2.1: --checkpoint FILE --text-encoder UMT5_DIR --vae WAN_VAE (local paths; see the module "
               "docstring / README).",
    )
    p.add_argument("--family", help="the checkpoint's release when its file cannot tell (asd_core/families.py "
                   "names, e.g. causal_forcing_framewise); default: recognised from the file")
    p.add_argument("--lora", help="a LoRA file merged into --checkpoint at load (LongLive: longlive_base.pt + lora.pt)")
    p.add_argument("--checkpoint", help="model file (ours, Self Forcing .pt, Wan/ComfyUI, diffusers); "
                                        "default: the built-in default model")
    p.add_argument("--prompt", default=DEFAULT_PROMPT,
                   help=f"text prompt (default: %(default)r); the built-in default knows the words: {BUILTIN_WORDS}")
    plan = p.add_mutually_exclusive_group()
    plan.add_argument("--plan", help="step plan: 4, 2, 1, 1*, 2*, first=...;rest=... "
                                     "(default: the checkpoint's trained plan, else 1*)")
    plan.add_argument("--steps", type=int, help="N steps for every chunk (shorthand for --plan N)")
    p.add_argument("--sampler", default="auto", choices=SAMPLER_NAMES,
                   help="sampling algorithm (asd_core/samplers.py); default auto: the one the checkpoint's family "
                        "was released with, with its cache window")
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
    p.add_argument("--text-encoder", help="local umt5-xxl folder for real Wan checkpoints, or a toy text encoder "
                                          ".safetensors (default for a toy --checkpoint: text_encoder.safetensors "
                                          "beside it, which asd-train export writes, else the built-in one)")
    p.add_argument("--vae", help="local Wan 2.1 VAE (diffusers folder or Wan2.1_VAE.pth / .safetensors)")
    p.add_argument("--out", default="out/asd.mp4", help=f"output file, {' / '.join(VIDEO_EXTENSIONS)} "
                                                        "(default %(default)s; folders are created)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = generate(args)
    except (ValueError, OSError, ImportError) as error:
        print(f"asd-generate: error: {one_line(error)}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        if "alloc" not in str(error) and "out of memory" not in str(error):
            raise  # a bug: keep its traceback
        print(f"asd-generate: error: out of memory ({one_line(error)[:200]}); use fewer --frames or a smaller "
              "--width/--height", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("asd-generate: interrupted, nothing written", file=sys.stderr)
        return 130
    print(summary)
    return 0


def one_line(error: BaseException) -> str:
    """The error's text on one line, with any long quoted value (a 100k-character prompt) cut short."""
    message = " ".join(str(error).split())

    def cut(match: re.Match) -> str:
        quote, text = match[1], match[2]
        return f"{quote}{text[:ECHO_LIMIT]}...{quote} ({len(text)} characters)"

    return re.sub(rf"(['\"])([^'\"]{{{ECHO_LIMIT + 20},}})\1", cut, message)


def generate(args: argparse.Namespace) -> str:
    """Check the whole request, load, sample, decode chunk by chunk, write; returns the summary line."""
    from ..checkpoint import check_checkpoint_path, recorded_guidance
    from ..sampler import NonFiniteOutput
    from ..samplers import family_window, resolve_sampler, sample_with
    from ..vae import pixels_to_video
    from ..video_io import write_video

    # Cheap checks first: a typo should not cost a model load, and nothing may fail after sampling.
    out = Path(args.out)
    check_output(out)
    check_seed(args.seed, "--seed")
    if args.fps is not None and not (math.isfinite(args.fps) and 0 < args.fps <= MAX_FPS):
        raise ValueError(f"--fps must be a number in (0, {MAX_FPS:g}], got {args.fps}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.cfg_scale is not None and not (math.isfinite(args.cfg_scale) and args.cfg_scale >= 0):
        raise ValueError(f"--cfg-scale must be a finite number >= 0 (1 = no guidance), got {args.cfg_scale}")
    user_plan = None
    if args.plan is not None:  # "" is a mistake to report, not a request for the trained plan
        try:
            user_plan = parse_plan(args.plan)
        except ValueError as err:
            raise ValueError(f"--plan: {err}") from None
    elif args.steps is not None:
        user_plan = parse_plan(str(args.steps))
    if args.checkpoint:
        check_checkpoint_path(Path(args.checkpoint))
    for name in ("text_encoder", "vae"):
        value = getattr(args, name)
        if value and not Path(value).exists():
            raise FileNotFoundError(f"--{name.replace('_', '-')} {value}: no such file or folder")
    umt5 = bool(args.text_encoder) and not is_toy_text_encoder(args.text_encoder)  # as Pipeline.load will read it
    if umt5 and not args.vae:
        raise ValueError("--text-encoder (umt5 for real Wan) needs --vae too: the Wan 2.1 VAE the model's latents belong to")
    device, dtype = device_and_dtype(args.device, args.dtype)

    # The model's config and metadata from the file header alone: the request is checked against
    # them (frames, sizes, RoPE limits, memory) before any weights are loaded.
    config, metadata, source = _model_header(args)
    sizes = WAN_SIZES if umt5 else TOY_SIZES
    frames = args.frames if args.frames is not None else sizes["frames"]
    width = args.width if args.width is not None else sizes["width"]
    height = args.height if args.height is not None else sizes["height"]
    fps = args.fps if args.fps is not None else sizes["fps"]
    cfg = args.cfg_scale if args.cfg_scale is not None else recorded_guidance(metadata, source, default=1.0)
    shape = check_request(config, frames=frames, width=width, height=height, guided=cfg != 1.0,
                          context_noise=args.context_noise, cfg_scale=cfg, device=device, dtype=dtype,
                          include_weights=True, decoded_pixels=True, names=CLI_NAMES)

    from ..pipeline import Pipeline

    pipeline = Pipeline.load(args.checkpoint, text_encoder=args.text_encoder, vae=args.vae, device=device, dtype=dtype,
                             family=args.family, lora=args.lora)
    model, text_encoder, codec, label = pipeline.model, pipeline.text_encoder, pipeline.codec, pipeline.label
    plan = user_plan or parse_plan(getattr(model, "trained_plan", None) or "1*")
    family = getattr(model, "family", None)
    sampler = resolve_sampler(args.sampler, family)
    window = family_window(family)

    unknown = text_encoder.unknown_words(args.prompt) if hasattr(text_encoder, "unknown_words") else []
    if unknown:  # the built-in encoder maps them to <unk>: the video will not show them
        print(f"asd-generate: warning: the built-in text encoder does not know {', '.join(map(repr, unknown[:8]))}"
              f"{' ...' if len(unknown) > 8 else ''}; it knows: {' '.join(text_encoder.known_words())}", file=sys.stderr)
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
            for chunk in sample_with(
                    sampler, model, plan=plan, context=context, num_frames=shape.latent_frames,
                    latent_height=shape.latent_height, latent_width=shape.latent_width, seeds=[args.seed],
                    negative_context=negative, cfg_scale=cfg, context_noise=args.context_noise, callback=tick,
                    **window):
                pieces.append(stream.push(chunk).cpu())  # decoded as soon as the chunk is done
    except NonFiniteOutput as err:  # the sampler checks every chunk; say it in the CLI's words
        raise _non_finite(f"chunk {err.chunk + 1} of {err.num_chunks}", cfg) from None
    finally:
        if bar is not None:
            bar.close()
    video = torch.cat(pieces, dim=2)
    _check_finite(video, "the decoded video", cfg)
    video = pixels_to_video(video)[0]  # (T, H, W, 3) in [0, 1]
    write_video(out, video, fps=fps)
    seconds = time.perf_counter() - start
    guidance = f", cfg {cfg:g}" if cfg != 1.0 else ""
    algorithm = f", sampler {sampler}" if sampler != "self_forcing" else ""
    return (f"wrote {out}: {video.shape[0]} frames {width}x{height}, plan {describe_plan(plan)}{guidance}{algorithm}, "
            f"{seconds:.1f} s [{label}]")


def check_output(out: Path) -> None:
    """--out must be a video file we can create: a known extension, in a folder that is (or can be) writable."""
    if out.suffix.lower() not in VIDEO_EXTENSIONS:
        raise ValueError(f"--out {out.name!r}: accepted extensions are {', '.join(VIDEO_EXTENSIONS)}")
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give a file name such as {out / ('asd' + out.suffix)}")
    folder = out.parent
    while not folder.exists() and folder != folder.parent:  # the folders write_video would create
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"--out {out}: {folder} is a file, not a folder; choose another path")
    try:  # a real probe: os.access says yes to root on a read-only or virtual file system
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"--out {out}: cannot write in {folder} ({err.strerror or err}); choose a folder you can "
                         "write to") from None


def _check_finite(tensor: torch.Tensor, what: str, cfg: float) -> None:
    """NaN or inf would be written as a black or garbage video with exit 0: refuse instead."""
    if not torch.isfinite(tensor).all():
        raise _non_finite(what, cfg)


def _non_finite(what: str, cfg: float) -> ValueError:
    hint = f"--cfg-scale {cfg:g} may be too large; " if cfg != 1.0 else ""
    return ValueError(f"the model produced NaN or infinite values in {what}, nothing was written: {hint}check the "
                      "checkpoint's weights (asd-inspect) and --dtype (float16 can overflow; try bfloat16 or float32)")


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


def _model_header(args):
    """(config, metadata, source) of the model `Pipeline.load` will load, read from the file header only."""
    from ..checkpoint import read_config
    from ..toy.defaults import default_pipeline_files, toy_model_config

    if args.checkpoint:
        header = read_config(args.checkpoint, family=args.family, lora=args.lora)
        return header.config, header.metadata, Path(args.checkpoint).name
    student = default_pipeline_files().get("student")
    if student is None:  # the untrained stand-in: the toy architecture, no metadata
        return toy_model_config(), {}, "built-in default"
    header = read_config(student)
    return header.config, header.metadata, "built-in default"


if __name__ == "__main__":
    sys.exit(main())
