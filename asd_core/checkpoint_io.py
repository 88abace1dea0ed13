"""Reading checkpoint files as plain tensors: safetensors, or `.pt` via torch.load(weights_only=True).

Nothing is ever unpickled: a `.pt` holding Python objects is refused with the reason, never run.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import safetensors
import torch

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth")
SHOWN_KEYS = 5  # keys listed per kind of mismatch in error messages


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read as, or does not fit, a causal Wan transformer."""


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


def read_safetensors(path: Path, *, tensors: bool = True) -> tuple[dict, dict]:
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


def read_torch(path: Path):
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
