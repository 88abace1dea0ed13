"""LoRA adapters merged into the base weights at load (LongLive releases base generator + LoRA).

LongLive trains with peft (`LoraConfig(r=256, lora_alpha=256)` on every nn.Linear of each
CausalWanAttentionBlock) and saves `get_peft_model_state_dict`: keys such as
`base_model.model.blocks.0.self_attn.q.lora_A.weight` (rank x in) and `...lora_B.weight`
(out x rank), under a `generator_lora` entry or bare. peft stores no alpha in that state
dict: it lives in the training config, so the caller passes it (the family's) and an unknown
alpha defaults to the rank (scale 1, as LongLive's alpha == rank).

Merged by hand, W += (alpha / rank) * B @ A in float32, because it is three lines and peft
is not a dependency of this package (its model wrapper would also need LongLive's module
classes to find the targets).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from .layouts import DIFFUSERS_TO_WAN_BLOCK, strip_wrappers

WAN_TO_DIFFUSERS_BLOCK = {wan: diffusers for diffusers, wan in DIFFUSERS_TO_WAN_BLOCK.items()}
LORA_ENTRY = "generator_lora"  # LongLive's training checkpoints: {"generator_lora", "critic_lora", "step"}
PEFT_PREFIXES = ("base_model.model.", "model.")  # peft's wrapper, then the generator wrapper's `model.`
_LORA_KEY = re.compile(r"(?P<module>.+)\.lora_(?P<part>[AB])(?:\.[A-Za-z0-9_]+)?\.weight")
_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")


def read_lora(path: str | Path) -> dict[str, torch.Tensor]:
    """The adapter tensors of a LoRA file (.pt via weights_only, or .safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file not found: {path}")
    if path.suffix.lower() == ".safetensors":
        import safetensors.torch

        obj = safetensors.torch.load_file(str(path))
    elif path.suffix.lower() in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickled objects or a damaged file: never unpickled
            raise ValueError(f"{path} cannot be read as plain tensors with torch.load(weights_only=True) "
                             f"({type(err).__name__}); save only the LoRA state dict, or as .safetensors") from None
    else:
        raise ValueError(f"unsupported LoRA file type {path.name!r}: use .pt, .pth or .safetensors")
    if isinstance(obj, Mapping) and isinstance(obj.get(LORA_ENTRY), Mapping):
        obj = obj[LORA_ENTRY]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a LoRA state dict")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def lora_pairs(lora: Mapping[str, torch.Tensor], source: str = "LoRA") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """diffusers module name -> (A, B), from peft keys in Wan or diffusers names."""
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in lora.items():
        match = _LORA_KEY.fullmatch(strip_wrappers(key))
        if match is None:
            raise ValueError(f"{source}: key {key!r} is not a LoRA weight (*.lora_A.weight / *.lora_B.weight): "
                             "pass a peft LoRA file such as LongLive's lora.pt")
        halves.setdefault(_diffusers_module(match["module"], source), {})[match["part"]] = value
    if not halves:
        raise ValueError(f"{source} holds no LoRA weights (lora_A / lora_B): pass the adapter file")
    unpaired = sorted(m for m, parts in halves.items() if len(parts) != 2)
    if unpaired:
        raise ValueError(f"{source}: {len(unpaired)} modules lack lora_A or lora_B (first: {unpaired[0]}); the file "
                         "is truncated or not a LoRA adapter")
    return {module: (parts["A"], parts["B"]) for module, parts in halves.items()}


def _diffusers_module(module: str, source: str) -> str:
    for prefix in PEFT_PREFIXES:
        module = module.removeprefix(prefix)
    match = _BLOCK.fullmatch(module)
    if match is None:
        raise ValueError(f"{source}: LoRA module {module!r} is outside the transformer blocks; only block "
                         "linears (attention, feed-forward) are supported")
    inner = match[2]
    inner = WAN_TO_DIFFUSERS_BLOCK.get(inner, inner)
    return f"blocks.{match[1]}.{inner}"


def merge_lora(state_dict: dict[str, torch.Tensor], lora: Mapping[str, torch.Tensor], *, alpha: float | None = None,
               source: str = "LoRA") -> dict[str, torch.Tensor]:
    """A copy of a diffusers-layout state dict with W += (alpha / rank) * B @ A for every adapted linear."""
    merged = dict(state_dict)
    for module, (down, up) in lora_pairs(lora, source).items():
        key = f"{module}.weight"
        if key not in merged:
            raise ValueError(f"{source}: the LoRA adapts {module}, which the base model lacks: the LoRA belongs to "
                             "another model (a different size or architecture)")
        weight = merged[key]
        rank = down.shape[0]
        if up.ndim != 2 or down.ndim != 2 or up.shape[1] != rank or (up.shape[0], down.shape[1]) != tuple(weight.shape):
            raise ValueError(f"{source}: LoRA shapes for {module} (A {tuple(down.shape)}, B {tuple(up.shape)}) do not "
                             f"fit the base weight {tuple(weight.shape)}: the LoRA belongs to another model size")
        if weight.is_meta:
            continue  # shapes checked; nothing to add to a header-only read
        scale = (rank if alpha is None else alpha) / rank
        delta = up.to(torch.float32) @ down.to(torch.float32)
        merged[key] = (weight.to(torch.float32) + scale * delta).to(weight.dtype)
    return merged
