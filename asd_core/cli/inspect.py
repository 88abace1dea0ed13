"""asd-inspect FILE: what a checkpoint holds (layout, config, trained plan, parameters) as JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

from ..checkpoint import read_checkpoint
from ..config import CausalWanConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="asd-inspect",
        description="Print one JSON object describing a causal Wan checkpoint "
        "(ours, Wan2.1 / ComfyUI, diffusers or Self Forcing).",
    )
    parser.add_argument("file", help="a .safetensors, .pt or .pth checkpoint")
    parser.add_argument("--config", help="model config as JSON text or a .json file, for foreign files "
                        "whose config cannot be inferred (heads not 128 wide)")
    parser.add_argument("--no-ema", action="store_true", help="Self Forcing files: read `generator`, not `generator_ema`")
    args = parser.parse_args(argv)

    try:
        config = _parse_config(args.config) if args.config else None
        checkpoint = read_checkpoint(args.file, prefer_ema=not args.no_ema, config=config)
    except (ValueError, OSError) as err:  # CheckpointError is a ValueError; missing files are OSError
        print(f"asd-inspect: error: {err}", file=sys.stderr)
        return 2

    tensors = checkpoint.state_dict.values()
    report = {
        "path": str(Path(args.file).resolve()),
        "layout": checkpoint.layout,
        "source": checkpoint.source,
        "entry": checkpoint.entry,
        "config": dataclasses.asdict(checkpoint.config),
        "plan": checkpoint.plan,
        "parameters": sum(t.numel() for t in tensors),
        "dtypes": dict(Counter(str(t.dtype).removeprefix("torch.") for t in tensors)),
        "metadata_keys": sorted(checkpoint.metadata),
    }
    print(json.dumps(report, indent=2))
    return 0


def _parse_config(text: str) -> CausalWanConfig:
    path = Path(text)
    if path.suffix == ".json":
        text = path.read_text()
    return CausalWanConfig.from_json(text)


if __name__ == "__main__":
    sys.exit(main())
