"""Key layouts of Wan2.1 transformer checkpoints, and conversion to and from ours.

Our model (`CausalWanTransformer`) uses diffusers' names. Checkpoints in the wild come in:

* "diffusers"    -- `blocks.0.attn1.to_q.weight`, `condition_embedder...`, `proj_out`.
* "wan"          -- the original Wan2.1 code, also ComfyUI: `blocks.0.self_attn.q.weight`,
                    `head.head.weight`, `head.modulation`; ComfyUI files prefix every key with
                    `model.diffusion_model.`.
* "self_forcing" -- Self Forcing / CausVid training checkpoints: a dict with `generator` and
                    `generator_ema` state dicts in the Wan layout under `model.`, FSDP-wrapped
                    names (`_fsdp_wrapped_module.`) included.

Shapes are identical in all layouts; only names change. Wan -> diffusers uses diffusers'
own converter; diffusers -> Wan is an explicit table below.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

LAYOUTS = ("diffusers", "wan", "self_forcing")
COMFYUI_PREFIX = "model.diffusion_model."  # ComfyUI prefixes diffusion-model keys with this
SELF_FORCING_ENTRIES = ("generator_ema", "generator")  # EMA first: it samples better
# Names that training wrappers insert into parameter paths (FSDP, activation checkpointing,
# torch.compile). They carry no weights of their own.
WRAPPER_NAMES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")

_DIFFUSERS_MARKERS = ("condition_embedder.", "proj_out.weight", ".attn1.", ".ffn.net.")
_WAN_MARKERS = ("head.head.weight", "head.modulation", "time_embedding.", "text_embedding.", ".self_attn.", ".cross_attn.")

# diffusers -> Wan2.1 names (module paths; `.weight` / `.bias` follow unchanged).
# Written out by hand because diffusers 0.42 ships only the Wan -> diffusers direction
# (`convert_wan_transformer_to_diffusers`), and an explicit list shows every name Wan uses.
DIFFUSERS_TO_WAN_TOP = {
    "patch_embedding": "patch_embedding",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "proj_out": "head.head",
    "scale_shift_table": "head.modulation",  # a bare parameter (1, 2, D)
}
DIFFUSERS_TO_WAN_BLOCK = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn1.norm_q": "self_attn.norm_q",
    "attn1.norm_k": "self_attn.norm_k",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "attn2.norm_q": "cross_attn.norm_q",
    "attn2.norm_k": "cross_attn.norm_k",
    "norm2": "norm3",  # the affine cross-attention norm: diffusers norm2 is Wan's norm3
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
    "scale_shift_table": "modulation",  # a bare parameter (1, 6, D)
}
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)")


def detect_layout(checkpoint: Mapping) -> str:
    """Name the layout of a loaded checkpoint (a state dict or a Self Forcing dict).

    Raises ValueError when it is none of `LAYOUTS`.
    """
    if any(isinstance(checkpoint.get(name), Mapping) for name in SELF_FORCING_ENTRIES):
        return "self_forcing"
    keys = [k for k, v in checkpoint.items() if isinstance(v, torch.Tensor)]
    if any(k.startswith(COMFYUI_PREFIX) for k in keys):
        return "wan"
    if keys and all(k.startswith("model.") for k in keys):
        # a bare Self Forcing generator state dict (the wrapper's `model.` attribute)
        keys = [strip_wrappers(k[len("model.") :]) for k in keys]
        if _guess_flat(keys) == "wan":
            return "self_forcing"
    guess = _guess_flat(keys)
    if guess is None:
        shown = ", ".join(sorted(str(k) for k in checkpoint)[:5]) or "(no tensors)"
        raise ValueError(
            f"not a Wan2.1 transformer checkpoint: no keys of the diffusers, Wan/ComfyUI or Self Forcing "
            f"layouts (first keys: {shown}). Pass the diffusion-model/transformer file, not a VAE, text "
            "encoder or LoRA file"
        )
    return guess


def _guess_flat(keys: list[str]) -> str | None:
    diffusers = any(m in k for k in keys for m in _DIFFUSERS_MARKERS)
    wan = any(m in k for k in keys for m in _WAN_MARKERS)
    if diffusers == wan:  # neither, or a mixture we cannot trust
        return None
    return "diffusers" if diffusers else "wan"


def strip_wrappers(key: str) -> str:
    for name in WRAPPER_NAMES:
        key = key.replace(name, "")
    return key


def unwrap_self_forcing(checkpoint: Mapping, *, prefer_ema: bool = True) -> tuple[dict, str | None]:
    """The generator state dict of a Self Forcing checkpoint, in the Wan layout.

    Returns (state_dict, entry): entry is "generator_ema" / "generator", or None for a bare
    generator state dict. `model.` and wrapper names are removed from the keys.
    """
    entries = SELF_FORCING_ENTRIES if prefer_ema else tuple(reversed(SELF_FORCING_ENTRIES))
    # an empty or missing entry (EMA not started yet) falls back to the other one
    entry = next((name for name in entries if isinstance(checkpoint.get(name), Mapping) and checkpoint[name]), None)
    source = checkpoint[entry] if entry is not None else checkpoint
    state_dict = {}
    for key, value in source.items():
        key = strip_wrappers(key)
        key = key[len("model.") :] if key.startswith("model.") else key
        state_dict[key] = value
    return state_dict, entry


def wan_to_diffusers(state_dict: Mapping) -> dict:
    """Original Wan2.1 / ComfyUI names -> diffusers names (diffusers' own converter)."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    keys = [k for k in state_dict if k.startswith(COMFYUI_PREFIX)]
    # A ComfyUI all-in-one file also holds the VAE / text encoder: keep the diffusion model.
    source = {k: state_dict[k] for k in keys} if keys else dict(state_dict)
    return convert_wan_transformer_to_diffusers(source)  # pops from its argument: a copy


def diffusers_to_wan(state_dict: Mapping, *, prefix: str = "") -> dict:
    """diffusers names -> original Wan2.1 names (`prefix=COMFYUI_PREFIX` for ComfyUI files)."""
    converted = {}
    for key, value in state_dict.items():
        new_key = prefix + diffusers_key_to_wan(key)
        if new_key in converted:
            raise ValueError(f"two diffusers keys map to the Wan key {new_key!r}")
        converted[new_key] = value
    return converted


def diffusers_key_to_wan(key: str) -> str:
    match = _BLOCK_KEY.fullmatch(key)
    table, name, head = (DIFFUSERS_TO_WAN_BLOCK, match[2], f"blocks.{match[1]}.") if match else (DIFFUSERS_TO_WAN_TOP, key, "")
    if name in table:  # bare parameters (scale_shift_table)
        return head + table[name]
    module, _, param = name.rpartition(".")
    if module in table and param in ("weight", "bias"):
        return f"{head}{table[module]}.{param}"
    raise ValueError(
        f"no Wan2.1 name for the diffusers key {key!r}: only text-to-video Wan2.1 transformer weights "
        "are supported (image-conditioning and adapter weights are not)"
    )


def to_diffusers(checkpoint: Mapping, *, prefer_ema: bool = True) -> tuple[dict, str, str | None]:
    """Any supported checkpoint -> (diffusers-layout state dict, layout name, Self Forcing entry)."""
    layout = detect_layout(checkpoint)
    entry = None
    if layout == "self_forcing":
        state_dict, entry = unwrap_self_forcing(checkpoint, prefer_ema=prefer_ema)
        state_dict = wan_to_diffusers(state_dict)
    elif layout == "wan":
        state_dict = wan_to_diffusers(checkpoint)
    else:
        state_dict = dict(checkpoint)
    return state_dict, layout, entry
