"""`python -m trainer.prepare`: the teacher's latent shards from videos, the students' prompt embeddings.

    python -m trainer.prepare latents VIDEO_DIR --vae VAE --text-encoder TE --out LATENT_DIR \\
        [--captions captions.txt] [--frames 81 --height 480 --width 832] [--shard-size 64]
    python -m trainer.prepare prompts PROMPTS.txt --text-encoder TE --out prompt_embeddings.safetensors \\
        [--uncond-out FILE] [--negative-prompt TEXT]

`latents` writes what `data=latents latent_dir=...` of the teacher stage reads: shards with
`latents` (N, 16, F, H/8, W/8), the VAE's normalised latents (what the transformer sees), and
`context` (N, L, D), the caption's text embeddings. Each video is scaled to cover HxW,
centre-cropped, and cut to its first --frames frames (4k+1); shorter videos are skipped and
listed. Captions: `--captions FILE` with one `VIDEO_FILE<TAB>CAPTION` line per video, or a
sidecar `NAME.txt` beside each `NAME.mp4`. `prompts` writes `context` (N, L, D) for
`prompt_embeddings=` of ode_init / distill and the negative prompt's (1, L, D) for `uncond_file=`.

--vae: a vae run dir, our VAE file, the Wan 2.1 VAE (Wan2.1_VAE.pth / .safetensors) or a
diffusers folder (`asd_core.vae.load_codec`). --text-encoder: a toy text encoder file or the
teacher run dir holding one, or a local umt5-xxl folder (`asd_core.text.UMT5TextEncoder`).
Nothing is downloaded; every file is written atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import safetensors
import torch
import torch.nn.functional as F
from tqdm import tqdm

from asd_core.atomic import save_safetensors
from asd_core.devices import resolve_device, resolve_dtype
from asd_core.vae import SPATIAL_FACTOR, latent_frames_for, load_codec, video_to_pixels
from asd_core.video_io import FFMPEG_READ_EXTENSIONS, PILLOW_READ_EXTENSIONS, read_video

from .stages.common import TEXT_ENCODER_FILE, vae_source
from .stages.data import SHARD_PATTERN, VAE_METADATA

VIDEO_SUFFIXES = FFMPEG_READ_EXTENSIONS + PILLOW_READ_EXTENSIONS
WAN_SIZE = {"frames": 81, "height": 480, "width": 832}  # Wan2.1-T2V's training size
SIZE_MULTIPLE = 2 * SPATIAL_FACTOR  # VAE 8x, then the transformer's 2x2 patches


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.prepare",
                                     description="Precompute training data: latent shards and prompt embeddings.")
    commands = parser.add_subparsers(dest="command", required=True)
    latents = commands.add_parser("latents", help="videos + captions -> latent shards for the teacher (data=latents)")
    latents.add_argument("video_dir", help=f"folder of videos ({', '.join(VIDEO_SUFFIXES)})")
    latents.add_argument("--vae", required=True, help="vae run dir, VAE file or diffusers folder")
    latents.add_argument("--text-encoder", required=True, help="toy text encoder file / teacher run dir, or umt5 folder")
    latents.add_argument("--out", required=True, help="folder for the shards (created; must hold no shards yet)")
    latents.add_argument("--captions", help="file of VIDEO_FILE<TAB>CAPTION lines (default: sidecar NAME.txt files)")
    latents.add_argument("--frames", type=int, default=WAN_SIZE["frames"], help="pixel frames, 4k+1 (default %(default)s)")
    latents.add_argument("--height", type=int, default=WAN_SIZE["height"], help="pixels (default %(default)s)")
    latents.add_argument("--width", type=int, default=WAN_SIZE["width"], help="pixels (default %(default)s)")
    latents.add_argument("--shard-size", type=int, default=64, help="samples per shard (default %(default)s)")
    latents.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda if available)")
    prompts = commands.add_parser("prompts", help="prompts -> text embeddings for ode_init / distill")
    prompts.add_argument("prompts_file", help="one prompt per line")
    prompts.add_argument("--text-encoder", required=True, help="toy text encoder file / teacher run dir, or umt5 folder")
    prompts.add_argument("--out", required=True, help="embeddings file (.safetensors), for prompt_embeddings=")
    prompts.add_argument("--uncond-out", help="negative prompt's file, for uncond_file= (default: OUT_uncond.safetensors)")
    prompts.add_argument("--negative-prompt", default="", help="text of the unconditional context (default: empty)")
    prompts.add_argument("--batch-size", type=int, default=8, help="prompts encoded at once (default %(default)s)")
    prompts.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda if available)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = prepare_latents(args) if args.command == "latents" else prepare_prompts(args)
    except (ValueError, OSError, ImportError) as error:
        print(f"prepare: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(summary)
    return 0


# -- shared ----------------------------------------------------------------------------------


def load_text_encoder(path: str, device: torch.device, dtype: torch.dtype):
    """A toy text encoder (file, or a teacher run dir holding one; always float32) or a local umt5-xxl folder."""
    from asd_core.text import UMT5TextEncoder
    from asd_core.toy.text_encoder import ToyTextEncoder

    candidate = Path(path)
    if candidate.is_dir() and (candidate / TEXT_ENCODER_FILE).is_file():
        candidate = candidate / TEXT_ENCODER_FILE
    if candidate.is_file():
        with safetensors.safe_open(str(candidate), framework="pt") as handle:
            is_toy = "asd.text_config" in (handle.metadata() or {})
        if not is_toy:
            raise ValueError(f"--text-encoder {path}: a single file must be a toy text encoder "
                             "(text_encoder.safetensors of a teacher run); for umt5 give its folder")
        return ToyTextEncoder.load(candidate, device=device).requires_grad_(False)
    if not candidate.is_dir():
        raise FileNotFoundError(f"--text-encoder {path}: no such file or folder")
    return UMT5TextEncoder.from_pretrained(candidate, device=device, dtype=dtype)


@torch.no_grad()
def encode_texts(encoder, texts: list[str]) -> torch.Tensor:
    """(B, L, D) on the CPU, in the encoder's dtype (umt5 on GPU: bfloat16, half the disk)."""
    return encoder.encode(texts).cpu().contiguous()


# -- latents ---------------------------------------------------------------------------------


def check_size(frames: int, height: int, width: int) -> None:
    try:
        latent_frames_for(frames)
    except ValueError as error:
        raise ValueError(f"--frames {frames}: {error}") from None
    if height < SIZE_MULTIPLE or width < SIZE_MULTIPLE or height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise ValueError(f"--height/--width must be positive multiples of {SIZE_MULTIPLE} (VAE 8x, patch 2x2), "
                         f"got {height}x{width}")


def list_videos(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"video folder {folder} not found")
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise ValueError(f"{folder} holds no videos ({', '.join(VIDEO_SUFFIXES)})")
    return videos


def read_captions(captions_file: str | None, videos: list[Path]) -> dict[str, str]:
    """Caption by video file name: from `VIDEO_FILE<TAB>CAPTION` lines, else from sidecar NAME.txt files."""
    captions: dict[str, str] = {}
    if captions_file:
        path = Path(captions_file)
        if not path.is_file():
            raise FileNotFoundError(f"--captions {path}: no such file")
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            name, tab, text = line.partition("\t")
            if not tab or not text.strip():
                raise ValueError(f"{path}:{number}: expected VIDEO_FILE<TAB>CAPTION, got {line[:80]!r}")
            captions[name.strip()] = text.strip()
    else:
        for video in videos:
            sidecar = video.with_suffix(".txt")
            if sidecar.is_file():
                captions[video.name] = " ".join(sidecar.read_text().split())
    missing = [v.name for v in videos if not captions.get(v.name)]
    if missing:
        source = f"in {captions_file}" if captions_file else "as sidecar NAME.txt files"
        raise ValueError(f"{len(missing)} video(s) have no caption {source}: {', '.join(missing[:5])}")
    return captions


def fit_frames(frames, count: int, height: int, width: int) -> torch.Tensor:
    """(T, H0, W0, 3) uint8 -> pixels (1, 3, count, height, width) in [-1, 1]: first frames, cover, centre crop."""
    video = torch.from_numpy(frames[:count]).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H0, W0)
    scale = max(height / video.shape[2], width / video.shape[3])
    size = (max(height, math.ceil(video.shape[2] * scale)), max(width, math.ceil(video.shape[3] * scale)))
    if size != tuple(video.shape[2:]):
        video = F.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    video = video[:, :, top : top + height, left : left + width].clamp(0, 1)
    return video_to_pixels(video.permute(0, 2, 3, 1))


def existing_shards(out: Path) -> list[Path]:
    return sorted(out.glob(SHARD_PATTERN)) if out.is_dir() else []


def write_shard(out: Path, index: int, latents: list, contexts: list, metadata: dict) -> Path:
    path = out / f"shard_{index:05d}.safetensors"
    save_safetensors({"latents": torch.cat(latents).float().contiguous(), "context": torch.cat(contexts).contiguous()},
                     path, {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    return path


@torch.no_grad()
def prepare_latents(args: argparse.Namespace) -> str:
    """Encode every video and its caption; write shards of --shard-size samples."""
    check_size(args.frames, args.height, args.width)
    if args.shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {args.shard_size}")
    out = Path(args.out)
    if existing_shards(out):
        raise ValueError(f"--out {out} already holds shards; choose an empty folder (shards are never mixed)")
    videos = list_videos(Path(args.video_dir))
    captions = read_captions(args.captions, videos)
    for flag, value in (("--vae", args.vae), ("--text-encoder", args.text_encoder)):
        if not Path(value).exists():  # before anything loads: a typo should cost nothing
            raise FileNotFoundError(f"{flag} {value}: no such file or folder")
    device = resolve_device(args.device)
    dtype = resolve_dtype("auto", device)
    vae = str(Path(vae_source(args.vae)).resolve())
    codec = load_codec(vae, device=device)
    encoder = load_text_encoder(args.text_encoder, device, dtype)

    shards, skipped, written = [], [], 0
    latents, contexts, names = [], [], []

    def flush() -> None:
        metadata = {VAE_METADATA: vae, "asd.text_encoder": str(Path(args.text_encoder).resolve()),
                    "asd.size": {"frames": args.frames, "height": args.height, "width": args.width},
                    "asd.videos": names, "asd.captions": [captions[n] for n in names]}
        shards.append(write_shard(out, len(shards), latents, contexts, metadata))
        for pending in (latents, contexts, names):
            pending.clear()

    for video in tqdm(videos, desc="encode videos", unit="video", dynamic_ncols=True, file=sys.stderr):
        frames = read_video(video)
        if len(frames) < args.frames:
            skipped.append(f"{video.name} ({len(frames)} frames)")
            continue
        latents.append(codec.encode(fit_frames(frames, args.frames, args.height, args.width)).cpu())
        contexts.append(encode_texts(encoder, [captions[video.name]]))
        names.append(video.name)
        written += 1
        if len(latents) == args.shard_size:
            flush()
    if latents:
        flush()
    if not written:
        raise ValueError(f"every video is shorter than --frames {args.frames}: {', '.join(skipped[:5])}")
    with safetensors.safe_open(str(shards[0]), framework="pt") as handle:
        latent_shape = tuple(handle.get_slice("latents").get_shape()[1:])
        context_shape = tuple(handle.get_slice("context").get_shape()[1:])
    summary = (f"wrote {written} samples in {len(shards)} shard(s) to {out}: latents {latent_shape}, "
               f"context {context_shape}")
    if skipped:
        summary += f"; skipped {len(skipped)} shorter than {args.frames} frames: {', '.join(skipped)}"
    return summary


# -- prompts ---------------------------------------------------------------------------------


@torch.no_grad()
def prepare_prompts(args: argparse.Namespace) -> str:
    """Embeddings of every prompt (`context` (N, L, D)) and of the negative prompt ((1, L, D))."""
    path, out = Path(args.prompts_file), Path(args.out)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {path} not found (one prompt per line)")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must end in .safetensors, got {out.name!r}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    uncond_out = Path(args.uncond_out) if args.uncond_out else out.with_name(f"{out.stem}_uncond.safetensors")
    device = resolve_device(args.device)
    encoder = load_text_encoder(args.text_encoder, device, resolve_dtype("auto", device))
    pieces = []
    with tqdm(total=len(prompts), desc="encode prompts", unit="prompt", dynamic_ncols=True, file=sys.stderr) as bar:
        for start in range(0, len(prompts), args.batch_size):
            batch = prompts[start : start + args.batch_size]
            pieces.append(encode_texts(encoder, batch))
            bar.update(len(batch))
    context = torch.cat(pieces)
    source = str(Path(args.text_encoder).resolve())
    save_safetensors({"context": context}, out, {"asd.text_encoder": source, "asd.prompts": json.dumps(prompts)})
    save_safetensors({"context": encode_texts(encoder, [args.negative_prompt])}, uncond_out,
                     {"asd.text_encoder": source, "asd.prompts": json.dumps([args.negative_prompt])})
    return (f"wrote {out} (context {tuple(context.shape)}, prompt_embeddings=) and {uncond_out} "
            f"(negative prompt {args.negative_prompt!r}, uncond_file=)")


if __name__ == "__main__":
    sys.exit(main())
