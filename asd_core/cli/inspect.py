"""asd-inspect FILE: what a checkpoint holds (layout, config, trained plan, parameters) as JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

import torch

from ..budget import REAL_VIDEO, VideoSize, kv_cache_report
from ..checkpoint import read_checkpoint
from ..config import CausalWanConfig

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="asd-inspect",
        description="Print one JSON object describing a causal Wan checkpoint "
        "(ours, Wan2.1 / ComfyUI, diffusers or Self Forcing).",
    )
    parser.add_argument("file", help="a .safetensors, .pt or .pth checkpoint")
    parser.add_argument("--config", help="model config as JSON text or a .json file, for foreign files "
                        "whose config cannot be inferred (heads not 128 wide)")
    parser.add_argument("--no-ema", action="store_true", help="training-dict files: read `generator`, not the "
                        "entry the family's own inference reads (`generator_ema` for Self Forcing)")
    parser.add_argument("--family", default="auto", help="the release the file is (asd_core/families.py names; "
                        "default auto: recognised from the file)")
    parser.add_argument("--lora", help="a LoRA file to merge (LongLive: the base generator is FILE)")
    parser.add_argument("--video", help="trained video size in latent frames FxHxW (e.g. 21x60x104), for the KV "
                        "cache figures when the size cannot be told from the config")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16",
                        help="model (and so KV cache) dtype for the cache figures (default bfloat16, a GPU's)")
    args = parser.parse_args(argv)

    try:
        video = _parse_video(args.video) if args.video else None
        config = _parse_config(args.config) if args.config else None
        checkpoint = read_checkpoint(args.file, prefer_ema=False if args.no_ema else None, config=config,
                                     family=args.family, lora=args.lora)
    except (ValueError, OSError) as err:  # CheckpointError is a ValueError; missing files are OSError
        print(f"asd-inspect: error: {err}", file=sys.stderr)
        return 2

    tensors = checkpoint.state_dict.values()
    report = {
        "path": str(Path(args.file).resolve()),
        "layout": checkpoint.layout,
        "source": checkpoint.source,
        "entry": checkpoint.entry,
        "family": None if checkpoint.family is None else {**checkpoint.family.settings(),
                                                           "recognised_by": checkpoint.family_basis},
        "lora": checkpoint.lora,
        "config": dataclasses.asdict(checkpoint.config),
        "plan": checkpoint.plan,
        "parameters": sum(t.numel() for t in tensors),
        "dtypes": dict(Counter(str(t.dtype).removeprefix("torch.") for t in tensors)),
        "metadata_keys": sorted(checkpoint.metadata),
        "kv_cache": _kv_cache(checkpoint.config, video, DTYPES[args.dtype]),
    }
    print(json.dumps(report, indent=2))
    return 0


def _kv_cache(config: CausalWanConfig, video: VideoSize | None, dtype: torch.dtype) -> dict:
    """Cache bytes for the trained video size and for 81 frames of 832x480 (self-attention only)."""
    if video is not None:
        trained, source = video, "--video"
    else:
        trained, source = _trained_video(config)
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "batch": 1,
        "cross_attention": "not cached: its keys/values over the text are recomputed by every call",
        "trained_video": None if trained is None else {**kv_cache_report(config, trained, dtype), "source": source},
        "real_video": kv_cache_report(config, REAL_VIDEO, dtype),
    }


def _trained_video(config: CausalWanConfig) -> tuple[VideoSize | None, str]:
    """Files record no video size: the built-in toy architecture trains on the toy domain's (also
    resized in depth, heads or FFN width, as the shipped teacher and students are), Wan-sized text
    conditioning means Wan2.1's 81x832x480; anything else needs --video."""
    from dataclasses import replace

    from ..toy.defaults import TOY, toy_model_config

    toy = toy_model_config()
    resizable = {"chunk_frames": TOY.chunk_frames, "num_layers": toy.num_layers,
                 "num_attention_heads": toy.num_attention_heads, "ffn_dim": toy.ffn_dim}
    if replace(config, **resizable) == toy:
        return VideoSize(TOY.latent_frames, TOY.latent_height, TOY.latent_width), "the toy domain's size (asd_core.toy.defaults)"
    if config.text_dim == 4096:
        return REAL_VIDEO, "Wan2.1's 832x480x81 (umt5 text width; the file records no size)"
    return None, "unknown: pass --video FxHxW"


def _parse_video(text: str) -> VideoSize:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--video must be latent frames x height x width, e.g. 21x60x104, got {text!r}")
    return VideoSize(*(int(p) for p in parts))


def _parse_config(text: str) -> CausalWanConfig:
    path = Path(text)
    if path.suffix == ".json":
        text = path.read_text()
    return CausalWanConfig.from_json(text)


if __name__ == "__main__":
    sys.exit(main())
