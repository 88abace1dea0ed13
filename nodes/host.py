"""What the nodes need from the ComfyUI process they run in, with plain fallbacks outside it.

ComfyUI's modules (`comfy.*`, `folder_paths`) exist only inside a running ComfyUI, so they
are imported lazily here and nowhere else; without them (tests, scripts) the pack still
imports and runs: CPU device, no progress bar, no interrupts, model folders from the
`ASD_MODELS_DIR` environment variable.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

import torch

MODEL_FOLDER = "asd_models"  # our own folder key, registered with folder_paths
CORE_MODEL_FOLDER = "diffusion_models"  # where ComfyUI keeps Wan transformers
MODEL_EXTENSIONS = (".safetensors", ".sft", ".pt", ".pth", ".bin", ".ckpt")


def _optional_module(name: str):
    """The module if it can be imported (inside ComfyUI), else None."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def in_comfyui() -> bool:
    return _optional_module("folder_paths") is not None


# --- model folders -----------------------------------------------------------------------


def register_model_folder() -> None:
    """Add `models/asd_models` to ComfyUI's folder registry (once) and create the folder.

    The folder is made on registration (the pack's import, i.e. ComfyUI's start) so users
    find where checkpoints go before the first run, as the README says. ComfyUI's models
    dir may be read-only (a shared or packaged install): then nothing is created, the
    registry entry still stands and `models/diffusion_models` or extra_model_paths.yaml
    serve instead; a log line says so. Users may add more folders via extra_model_paths.yaml.
    """
    folder_paths = _optional_module("folder_paths")
    if folder_paths is None:
        return
    path = os.path.join(folder_paths.models_dir, MODEL_FOLDER)
    registry = folder_paths.folder_names_and_paths
    if MODEL_FOLDER not in registry:
        registry[MODEL_FOLDER] = ([path], set(folder_paths.supported_pt_extensions))
    elif path not in registry[MODEL_FOLDER][0]:
        # extra_model_paths.yaml (read before custom nodes load) named the key first: keep its
        # folders and add the default one the README and the node tooltips point to.
        registry[MODEL_FOLDER][0].append(path)
    else:
        return
    _make_model_folder(path)


def _make_model_folder(path: str) -> None:
    """Create `path` inside ComfyUI's existing models dir; never its parents, never an error."""
    if os.path.isdir(path):
        return
    try:
        os.mkdir(path)
    except OSError as err:  # read-only models dir, a file in the way, ...
        logging.getLogger(__name__).warning(
            "ASD: could not create %s (%s); put checkpoints in models/%s instead", path, err, CORE_MODEL_FOLDER)


def _fallback_dirs() -> list[Path]:
    return [Path(p) for p in os.environ.get("ASD_MODELS_DIR", "").split(os.pathsep) if p]


def list_model_files() -> list[str]:
    """Checkpoint names for the loader's list: our folder first, then ComfyUI's diffusion_models."""
    folder_paths = _optional_module("folder_paths")
    if folder_paths is not None:
        register_model_folder()
        names = list(folder_paths.get_filename_list(MODEL_FOLDER))
        names += [n for n in folder_paths.get_filename_list(CORE_MODEL_FOLDER) if n not in names]
        return names
    names = []
    for folder in _fallback_dirs():
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.is_file() and path.suffix.lower() in MODEL_EXTENSIONS:
                    names.append(path.relative_to(folder).as_posix())
    return names


def resolve_model_file(name: str) -> Path:
    """Full path of a name from `list_model_files`, or a ValueError saying where files go."""
    folder_paths = _optional_module("folder_paths")
    if folder_paths is not None:
        register_model_folder()
        for key in (MODEL_FOLDER, CORE_MODEL_FOLDER):
            path = folder_paths.get_full_path(key, name)
            if path is not None:
                return Path(path)
        where = ", ".join(folder_paths.get_folder_paths(MODEL_FOLDER) + folder_paths.get_folder_paths(CORE_MODEL_FOLDER))
    else:
        for folder in _fallback_dirs():
            if (folder / name).is_file():
                return folder / name
        where = os.environ.get("ASD_MODELS_DIR") or "(ASD_MODELS_DIR is not set)"
    raise ValueError(f"checkpoint {name!r} not found; put it in one of: {where} (then press R to refresh the list)")


LORA_FOLDER = "loras"  # ComfyUI's LoRA folder key


def list_lora_files() -> list[str]:
    """LoRA names for the loader's `lora_file` list: ComfyUI's models/loras (outside ComfyUI: ASD_MODELS_DIR)."""
    folder_paths = _optional_module("folder_paths")
    if folder_paths is not None:
        return list(folder_paths.get_filename_list(LORA_FOLDER))
    return [name for name in list_model_files() if "lora" in name.lower()]


def resolve_lora_file(name: str) -> Path:
    """Full path of a name from `list_lora_files`, or a ValueError saying where LoRA files go."""
    folder_paths = _optional_module("folder_paths")
    if folder_paths is not None:
        path = folder_paths.get_full_path(LORA_FOLDER, name)
        if path is not None:
            return Path(path)
        where = ", ".join(folder_paths.get_folder_paths(LORA_FOLDER))
    else:
        for folder in _fallback_dirs():
            if (folder / name).is_file():
                return folder / name
        where = os.environ.get("ASD_MODELS_DIR") or "(ASD_MODELS_DIR is not set)"
    raise ValueError(f"LoRA file {name!r} not found; put it in one of: {where} (then press R to refresh the list)")


def download_dir() -> Path:
    """Where downloaded checkpoints are placed so the loader lists them."""
    folder_paths = _optional_module("folder_paths")
    if folder_paths is not None:
        register_model_folder()
        return Path(folder_paths.get_folder_paths(MODEL_FOLDER)[0])
    dirs = _fallback_dirs()
    if not dirs:
        raise ValueError("set ASD_MODELS_DIR to the folder downloaded checkpoints should go to")
    return dirs[0]


# --- devices, progress, interrupts ---------------------------------------------------------


def compute_device() -> torch.device:
    mm = _optional_module("comfy.model_management")
    return torch.device(mm.get_torch_device()) if mm is not None else torch.device("cpu")


def offload_device() -> torch.device:
    mm = _optional_module("comfy.model_management")
    return torch.device(mm.unet_offload_device()) if mm is not None else torch.device("cpu")


def free_memory_for(num_bytes: int, device: torch.device) -> None:
    """Ask ComfyUI to unload other models until `num_bytes` fit on `device`."""
    mm = _optional_module("comfy.model_management")
    if mm is not None:
        mm.free_memory(num_bytes, device)


def soft_empty_cache() -> None:
    mm = _optional_module("comfy.model_management")
    if mm is not None:
        mm.soft_empty_cache()


def check_interrupted() -> None:
    """Raise ComfyUI's InterruptProcessingException if the user pressed Cancel (no-op outside ComfyUI)."""
    mm = _optional_module("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


class Progress:
    """ComfyUI's progress bar (which also shows previews), or nothing outside ComfyUI."""

    def __init__(self, total: int):
        utils = _optional_module("comfy.utils")
        self.bar = utils.ProgressBar(total) if utils is not None else None
        self.total = total

    def update(self, value: int, preview=None) -> None:
        if self.bar is not None:
            self.bar.update_absolute(value, self.total, preview)
