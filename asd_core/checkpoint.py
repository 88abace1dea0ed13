"""Checkpoint files: our safetensors format, plus Wan / ComfyUI / diffusers / Self Forcing files.

Our files are safetensors in the diffusers key layout whose metadata carries the model config
(`asd.config`) and the step plan the model was trained for (`asd.plan`), so a file alone
rebuilds its model. Foreign files are read in their own layout and converted (`layouts.py`);
their config is inferred from tensor shapes the way Wan does (128 channels per head).
Nothing is ever unpickled: `.pt` files go through `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import torch

from .atomic import save_safetensors
from .checkpoint_io import (  # noqa: F401  (check_checkpoint_path, TORCH_SUFFIXES: part of this module's API)
    SAFETENSORS_SUFFIXES,
    SHOWN_KEYS,
    TORCH_SUFFIXES,
    CheckpointError,
    check_checkpoint_path,
    read_safetensors,
    read_torch,
)
from .config import WAN_TEXT_LEN, CausalWanConfig
from .families import ASD, Family, causal_ar_metadata, chunk_frames_in_metadata, recognise
from .layouts import COMFYUI_PREFIX, diffusers_to_wan, to_diffusers

FORMAT = "comfyui-asd/1"
WAN_HEAD_DIM = 128  # Wan2.1 always uses 128-channel heads; a foreign file's head count follows from it
RESERVED_METADATA = ("asd.format", "asd.config", "asd.plan", "config")  # "config": ComfyUI reads it
# The guidance a checkpoint samples with by default (a teacher: the CFG scale its many-step plan
# scores best at). Only teachers write it; a distilled student samples without guidance.
GUIDANCE_METADATA = "asd.cfg"
_BLOCK_INDEX = re.compile(r"blocks\.(\d+)\.")


@dataclass
class LoadedCheckpoint:
    state_dict: dict[str, torch.Tensor]  # diffusers layout, as CausalWanTransformer expects
    config: CausalWanConfig | None
    plan: str | None  # the trained step-plan spec ("4", "1*"), if the file says
    layout: str  # key layout found in the file: "diffusers", "wan" or "self_forcing"
    metadata: dict[str, str] = field(default_factory=dict)  # safetensors metadata, as stored
    source: str = "foreign"  # "asd" (our metadata), "comfyui_causal" (ComfyUI causal_ar) or "foreign"
    entry: str | None = None  # Self Forcing: "generator_ema" or "generator"
    family: Family | None = None  # the release it was recognised as (families.py); None: plain Wan weights
    family_basis: str = ""  # how: "family=", "metadata", "file name", "packaging" or "LoRA"
    lora: str | None = None  # the LoRA file merged into the weights


def recorded_guidance(metadata: dict[str, str], source: str, default: float | None = None) -> float | None:
    """The CFG scale the file records (GUIDANCE_METADATA), or `default` when it records none."""
    value = metadata.get(GUIDANCE_METADATA)
    if value is None:
        return default
    try:
        scale = float(value)
    except ValueError:
        scale = math.nan
    if not math.isfinite(scale) or scale < 0:
        raise CheckpointError(f"{source}: metadata {GUIDANCE_METADATA}={value!r} is not a guidance scale (a number "
                              ">= 0); fix the file's metadata or pass the scale explicitly")
    return scale


def save_checkpoint(path, state_dict, config: CausalWanConfig, *, plan: str | None = None,
                    extra: dict[str, str] | None = None) -> Path:
    """Write a diffusers-layout state dict with its config and trained plan, atomically."""
    if plan is not None:
        from .schedule import parse_plan

        parse_plan(plan)  # reject a spec the sampler could not read back
    metadata = {"asd.format": FORMAT, "asd.config": config.to_json()}
    if plan is not None:
        metadata["asd.plan"] = plan
    return _write(path, state_dict, config, metadata, extra, layout="diffusers")


def save_comfyui_checkpoint(path, state_dict, config: CausalWanConfig, *, plan: str | None = None,
                            extra: dict[str, str] | None = None) -> Path:
    """Write for ComfyUI's native causal Wan loader: Wan names under `model.diffusion_model.`.

    ComfyUI recognises a causal (autoregressive) Wan only by the metadata `config` =
    {"transformer": {"causal_ar": true}}; our own metadata rides along so we read it back fully.
    """
    metadata = {
        "config": json.dumps({"transformer": {"causal_ar": True}}),
        "asd.format": FORMAT,
        "asd.config": config.to_json(),
    }
    if plan is not None:
        from .schedule import parse_plan

        parse_plan(plan)
        metadata["asd.plan"] = plan
    validate_state_dict(state_dict, config, "diffusers")
    return _write(path, diffusers_to_wan(state_dict, prefix=COMFYUI_PREFIX), None, metadata, extra, layout="wan")


def _write(path, state_dict, config, metadata, extra, *, layout: str) -> Path:
    path = Path(path)
    if path.suffix not in SAFETENSORS_SUFFIXES:
        raise ValueError(f"checkpoints are written as safetensors: give a path ending in .safetensors, not {path.name!r}")
    for key, value in (extra or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"extra metadata must map str to str, got {key!r}: {type(value).__name__}")
        if key in RESERVED_METADATA:
            raise ValueError(f"extra metadata key {key!r} is reserved; choose another name")
        metadata[key] = value
    if config is not None:
        validate_state_dict(state_dict, config, layout)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}

    save_safetensors(tensors, path, metadata)
    return path


def read_checkpoint(path, *, prefer_ema: bool | None = None, config: CausalWanConfig | None = None,
                    tensors: bool = True, family: str | None = None, lora=None) -> LoadedCheckpoint:
    """Read any supported checkpoint, convert it to the diffusers layout and check it.

    `config` overrides what the file says or what shapes imply (needed for foreign files of
    models whose heads are not 128 wide). `family` names the release (families.py; None or
    "auto": recognised from the file); it decides the entry of a training dict unless
    `prefer_ema` does (True: `generator_ema` when present), and the chunk size and trained plan
    the file does not record. `lora`: a LoRA file merged into the weights (LongLive).
    `tensors=False` reads only a safetensors file's header: the state dict then holds meta
    tensors of the right shapes (what `read_config` needs to check a request before anything
    is loaded); .pt files are always read whole.
    """
    path = Path(path)
    check_checkpoint_path(path)
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        raw, metadata = read_safetensors(path, tensors=tensors)
    else:
        raw, metadata = read_torch(path), {}

    try:
        found = recognise(raw, metadata, path, family=family, lora=lora is not None)
        if prefer_ema is None:
            prefer_ema = found.family is None or found.family.entry != "generator"
        state_dict, layout, entry = to_diffusers(raw, prefer_ema=prefer_ema)
        if lora is not None:
            from .lora import merge_lora, read_lora

            state_dict = merge_lora(state_dict, read_lora(lora), alpha=found.family.lora_alpha, source=str(lora))
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err

    file_config, plan, source, chunk_frames = _read_metadata(path, metadata)
    if found.family is not None and found.packaging != ASD:  # our files record their own settings
        chunk_frames = chunk_frames or found.family.chunk_frames
        plan = plan or found.family.plan
    if config is None:
        config = file_config
    if config is None:
        config = infer_config(state_dict, source=str(path))
        if chunk_frames is not None:
            config = replace(config, chunk_frames=chunk_frames)
    check_config_fits(state_dict, config, source=str(path))  # cheap, and before any model is built
    validate_state_dict(state_dict, config, layout, source=str(path))
    return LoadedCheckpoint(state_dict, config, plan, layout, metadata, source, entry, found.family, found.basis,
                            None if lora is None else str(lora))


def read_config(path, *, config: CausalWanConfig | None = None, family: str | None = None,
                lora=None) -> LoadedCheckpoint:
    """The checked config, plan and metadata of a checkpoint without loading its weights (safetensors)."""
    return read_checkpoint(path, config=config, tensors=False, family=family, lora=lora)



def _read_metadata(path: Path, metadata: dict) -> tuple[CausalWanConfig | None, str | None, str, int | None]:
    """(config, plan, source, chunk_frames) from safetensors metadata."""
    if "asd.format" in metadata:
        if metadata["asd.format"] != FORMAT:
            raise CheckpointError(
                f"{path} has format {metadata['asd.format']!r}; this version reads {FORMAT!r}. Update comfyui-asd"
            )
        try:
            config = CausalWanConfig.from_json(metadata["asd.config"])
        except (KeyError, ValueError, TypeError) as err:
            raise CheckpointError(f"{path}: broken model config in metadata 'asd.config' ({err})") from err
        return config, metadata.get("asd.plan"), "asd", None
    # ComfyUI's repackaged causal Wan files: metadata config = {"transformer": {"causal_ar": true}}.
    # They name no chunk size (ComfyUI's sampler node chooses it); take one if a file has it.
    if causal_ar_metadata(metadata):
        return None, None, "comfyui_causal", chunk_frames_in_metadata(metadata)
    return None, None, "foreign", None


def infer_config(state_dict: dict, *, source: str = "state dict") -> CausalWanConfig:
    """Config from the tensor shapes of a diffusers-layout state dict (Wan's convention).

    Shapes do not reveal the head count (q/k norms span all heads), so heads = width / 128 as
    in every Wan2.1 model; files of other head sizes need an explicit config or our metadata.
    Foreign files are Wan models trained on umt5 contexts zero-padded to 512 tokens, so they
    sample with the same padding (`text_len`).
    """
    required = (
        "patch_embedding.weight",
        "blocks.0.ffn.net.0.proj.weight",
        "condition_embedder.text_embedder.linear_1.weight",
        "condition_embedder.time_embedder.linear_1.weight",
        "proj_out.weight",
    )
    missing = [k for k in required if k not in state_dict]
    if missing:
        raise CheckpointError(f"{source}: cannot infer the model config, missing {missing}; pass config=")
    width, in_channels, *patch = state_dict["patch_embedding.weight"].shape  # (D, C, pt, ph, pw)
    if width % WAN_HEAD_DIM:
        raise CheckpointError(
            f"{source}: cannot infer the attention heads: width {width} is not a multiple of Wan's head size "
            f"{WAN_HEAD_DIM}. Pass config=CausalWanConfig(...) explicitly, or use a file written by "
            "save_checkpoint (it carries its config)"
        )
    patch_volume = patch[0] * patch[1] * patch[2]
    num_layers = _block_count(state_dict, source)
    return CausalWanConfig(
        num_layers=num_layers,
        num_attention_heads=width // WAN_HEAD_DIM,
        attention_head_dim=WAN_HEAD_DIM,
        ffn_dim=state_dict["blocks.0.ffn.net.0.proj.weight"].shape[0],
        in_channels=in_channels,
        out_channels=state_dict["proj_out.weight"].shape[0] // patch_volume,
        text_dim=state_dict["condition_embedder.text_embedder.linear_1.weight"].shape[1],
        freq_dim=state_dict["condition_embedder.time_embedder.linear_1.weight"].shape[1],
        patch_size=tuple(patch),
        cross_attn_norm="blocks.0.norm2.weight" in state_dict,
        qk_norm="rms_norm_across_heads" if "blocks.0.attn1.norm_q.weight" in state_dict else None,
        text_len=WAN_TEXT_LEN,
    )


def _block_count(state_dict: dict, source: str) -> int:
    """Transformer blocks in a diffusers-layout state dict; their indices must run 0..N-1."""
    layers = sorted({int(m[1]) for k in state_dict if (m := _BLOCK_INDEX.match(k))})
    if layers != list(range(len(layers))):
        shown = ", ".join(map(str, layers[:SHOWN_KEYS])) + (f", ..., {layers[-1]}" if len(layers) > SHOWN_KEYS else "")
        raise CheckpointError(f"{source}: transformer block indices are not 0..N-1 (found {shown}): the file is "
                              "damaged or not a Wan transformer")
    return len(layers)


def check_config_fits(state_dict: dict, config: CausalWanConfig, *, source: str = "state dict") -> None:
    """Compare the config's layer count with the blocks the file holds, before anything is built.

    `validate_state_dict` then compares every shape against the model the config describes,
    built on the meta device: its cost grows with the layer count, so a crafted config
    (metadata saying `num_layers: 10000000`) must be refused here, from the key names alone.
    """
    blocks = _block_count(state_dict, source)
    if blocks and blocks != config.num_layers:
        raise CheckpointError(
            f"{source}: the model config says num_layers {config.num_layers} but the file holds {blocks} transformer "
            "blocks. The metadata is wrong or was edited: pass the matching config=, or re-save the file with "
            "save_checkpoint"
        )


@lru_cache(maxsize=8)
def _expected_shapes(config_json: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of CausalWanTransformer(config), built on the meta device (no memory, ~0.1 s)."""
    from .model import CausalWanTransformer

    with torch.device("meta"):
        model = CausalWanTransformer(CausalWanConfig.from_json(config_json))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def validate_state_dict(state_dict: dict, config: CausalWanConfig, layout: str, *, source: str = "state dict") -> None:
    """Raise CheckpointError unless the (diffusers-layout) state dict fits CausalWanTransformer(config)."""
    expected = _expected_shapes(config.to_json())
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        k for k in expected
        if k in state_dict and tuple(getattr(state_dict[k], "shape", ())) != expected[k]
    ]
    if not (missing or unexpected or misshaped):
        return
    problems = []
    if missing:
        shown = ", ".join(f"{k} {expected[k]}" for k in missing[:SHOWN_KEYS])
        problems.append(f"{len(missing)} missing: {shown}")
    if unexpected:
        shown = ", ".join(f"{k} {_shape(state_dict[k])}" for k in unexpected[:SHOWN_KEYS])
        problems.append(f"{len(unexpected)} unexpected: {shown}")
    if misshaped:
        shown = ", ".join(f"{k} file {_shape(state_dict[k])} vs model {expected[k]}" for k in misshaped[:SHOWN_KEYS])
        problems.append(f"{len(misshaped)} mis-shaped: {shown}")
    if misshaped:
        hint = ("the file is a different model size than the config: pass the matching config=, or use a file "
                "written by save_checkpoint (it carries its config)")
    elif missing and not unexpected:
        hint = "the file looks truncated or partial (a LoRA or a single component?): use the full transformer file"
    elif unexpected and not missing:
        hint = ("the file holds weights a Wan2.1 text-to-video transformer lacks (image-to-video or adapter "
                "weights?): use a text-to-video checkpoint")
    else:
        hint = "the keys do not follow one known layout: check that this is a Wan2.1 transformer checkpoint"
    raise CheckpointError(
        f"{source} does not fit the model (layout guessed: {layout}; config: {config.num_layers} layers, width "
        f"{config.width}, ffn {config.ffn_dim}, text_dim {config.text_dim}); keys in diffusers names: "
        + "; ".join(problems) + f". Hint: {hint}"
    )


def _shape(value) -> tuple | str:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else f"<{type(value).__name__}>"


def load_model(path, *, device="cpu", dtype: torch.dtype = torch.float32, chunk_frames: int | None = None,
               config: CausalWanConfig | None = None, prefer_ema: bool | None = None, family: str | None = None,
               lora=None):
    """Read a checkpoint (+ LoRA) and build its CausalWanTransformer, ready for sampling (eval, no grad).

    `family` / `lora` as in `read_checkpoint`; the model carries the recognised family
    (`model.family`, with its sampling defaults) and its trained plan.

    Norms, modulation tables and the timestep MLP stay float32 whatever `dtype` (as diffusers'
    `_keep_in_fp32_modules`): bf16 parity with upstream Wan needs them in full precision.
    """
    from diffusers.models.modeling_utils import no_init_weights

    from .model import CausalWanTransformer, cast_for_inference

    checkpoint = read_checkpoint(path, prefer_ema=prefer_ema, config=config, family=family, lora=lora)
    config = checkpoint.config
    if chunk_frames is not None:
        config = replace(config, chunk_frames=chunk_frames)
    # Every weight is overwritten below: skip the random init (19 s -> 0.2 s for 1.3B on CPU),
    # as diffusers' from_pretrained does. It patches torch.nn.init while the model is built.
    with torch.device(device), no_init_weights():
        model = CausalWanTransformer(config)
    model.load_state_dict(checkpoint.state_dict, strict=True)
    cast_for_inference(model, dtype).requires_grad_(False)
    model.trained_plan = checkpoint.plan
    model.checkpoint_layout = checkpoint.layout
    model.checkpoint_metadata = dict(checkpoint.metadata)  # e.g. asd.role: teacher or student
    model.family, model.family_basis, model.lora_file = checkpoint.family, checkpoint.family_basis, checkpoint.lora
    return model.eval()
