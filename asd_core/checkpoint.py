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
import pickle
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from .atomic import save_safetensors
from .config import WAN_TEXT_LEN, CausalWanConfig
from .layouts import COMFYUI_PREFIX, diffusers_to_wan, to_diffusers

FORMAT = "comfyui-asd/1"
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth")
WAN_HEAD_DIM = 128  # Wan2.1 always uses 128-channel heads; a foreign file's head count follows from it
RESERVED_METADATA = ("asd.format", "asd.config", "asd.plan", "config")  # "config": ComfyUI reads it
# The guidance a checkpoint samples with by default (a teacher: the CFG scale its many-step plan
# scores best at). Only teachers write it; a distilled student samples without guidance.
GUIDANCE_METADATA = "asd.cfg"
SHOWN_KEYS = 5  # keys listed per kind of mismatch in error messages
_BLOCK_INDEX = re.compile(r"blocks\.(\d+)\.")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read as, or does not fit, a causal Wan transformer."""


@dataclass
class LoadedCheckpoint:
    state_dict: dict[str, torch.Tensor]  # diffusers layout, as CausalWanTransformer expects
    config: CausalWanConfig | None
    plan: str | None  # the trained step-plan spec ("4", "1*"), if the file says
    layout: str  # key layout found in the file: "diffusers", "wan" or "self_forcing"
    metadata: dict[str, str] = field(default_factory=dict)  # safetensors metadata, as stored
    source: str = "foreign"  # "asd" (our metadata), "comfyui_causal" (ComfyUI causal_ar) or "foreign"
    entry: str | None = None  # Self Forcing: "generator_ema" or "generator"


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


def read_checkpoint(path, *, prefer_ema: bool = True, config: CausalWanConfig | None = None,
                    tensors: bool = True) -> LoadedCheckpoint:
    """Read any supported checkpoint, convert it to the diffusers layout and check it.

    `config` overrides what the file says or what shapes imply (needed for foreign files of
    models whose heads are not 128 wide). `prefer_ema`: for Self Forcing files, take
    `generator_ema` when present. `tensors=False` reads only a safetensors file's header: the
    state dict then holds meta tensors of the right shapes (what `read_config` needs to check
    a request before anything is loaded); .pt files are always read whole.
    """
    path = Path(path)
    check_checkpoint_path(path)
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        raw, metadata = _read_safetensors(path, tensors=tensors)
    else:
        raw, metadata = _read_torch(path), {}

    try:
        state_dict, layout, entry = to_diffusers(raw, prefer_ema=prefer_ema)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err

    file_config, plan, source, chunk_frames = _read_metadata(path, metadata)
    if config is None:
        config = file_config
    if config is None:
        config = infer_config(state_dict, source=str(path))
        if chunk_frames is not None:
            config = replace(config, chunk_frames=chunk_frames)
    check_config_fits(state_dict, config, source=str(path))  # cheap, and before any model is built
    validate_state_dict(state_dict, config, layout, source=str(path))
    return LoadedCheckpoint(state_dict, config, plan, layout, metadata, source, entry)


def read_config(path, *, config: CausalWanConfig | None = None) -> LoadedCheckpoint:
    """The checked config, plan and metadata of a checkpoint without loading its weights (safetensors)."""
    return read_checkpoint(path, config=config, tensors=False)


def check_checkpoint_path(path: Path) -> None:
    """A clear error for a path that is not a checkpoint file: missing, a folder, or of another type."""
    accepted = ", ".join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)
        hint = (f"pass one of the files in it: {', '.join(inside[:SHOWN_KEYS])}" if inside
                else f"it holds no {accepted} file; pass the transformer's checkpoint file itself")
        raise CheckpointError(f"{path} is a directory, not a checkpoint file: {hint}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        raise ValueError(f"unsupported checkpoint type {path.name!r}: accepted extensions are {accepted}")


def _read_safetensors(path: Path, *, tensors: bool = True) -> tuple[dict, dict]:
    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            if tensors:
                state = {key: f.get_tensor(key) for key in f.keys()}
            else:
                state = {key: torch.empty(f.get_slice(key).get_shape(), device="meta") for key in f.keys()}
    except (safetensors.SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}); was the download complete?") from err
    return state, metadata


def _read_torch(path: Path):
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): download or save it again")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's own message suggests weights_only=False; keep only the reason it names.
        reason = str(err).split("WeightsUnpickler error:")[-1].strip().split(". ")[0].splitlines()[0]
        raise CheckpointError(
            f"{path} could not be loaded as plain tensors with torch.load(weights_only=True) ({reason}). "
            "It holds pickled Python objects, which are never unpickled here (they can run code); "
            "save only the state dict (tensors), or convert the file to .safetensors"
        ) from err
    except Exception as err:  # RuntimeError, OSError, EOFError, KeyError...: the bytes are not a whole torch file
        reason = f"{type(err).__name__}: " + " ".join(str(err).split(". ")[0].split())
        raise CheckpointError(
            f"{path} is truncated or corrupt: torch.load cannot read it ({reason[:200]}); was the download or the "
            "save complete? Download or save it again"
        ) from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict (a dict of tensors)")
    return obj


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
    try:
        transformer = json.loads(metadata.get("config", "{}")).get("transformer", {})
    except (ValueError, AttributeError):
        transformer = {}
    if isinstance(transformer, dict) and transformer.get("causal_ar"):
        frames = transformer.get("num_frame_per_block")
        return None, None, "comfyui_causal", int(frames) if frames else None
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
               config: CausalWanConfig | None = None, prefer_ema: bool = True):
    """Read a checkpoint and build its CausalWanTransformer, ready for sampling (eval, no grad).

    Norms, modulation tables and the timestep MLP stay float32 whatever `dtype` (as diffusers'
    `_keep_in_fp32_modules`): bf16 parity with upstream Wan needs them in full precision.
    """
    from diffusers.models.modeling_utils import no_init_weights

    from .model import CausalWanTransformer, cast_for_inference

    checkpoint = read_checkpoint(path, prefer_ema=prefer_ema, config=config)
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
    return model.eval()
