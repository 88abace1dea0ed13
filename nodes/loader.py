"""Model loader nodes: a checkpoint from ComfyUI's model folders, the built-in default, or the Hub.

They return an `AsdModel`: the causal transformer plus what the other nodes need to know
about it (its label, and for the built-in default its own text encoder and VAE).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import host

MODEL_TYPE = "ASD_MODEL"
BUILTIN = "(built-in default)"
DTYPES = ("auto", "float32", "bfloat16", "float16")  # asd_core.devices.DTYPES, kept literal: no import at startup
AUTO_FAMILY = "auto"
NO_LORA = "(none)"
FAMILY_TOOLTIP = (
    "Which release the file is (its chunk size, step plan, cache window and sinks). auto = recognised from "
    "the file (its packaging, then its name); name it when several releases share one packaging."
)

_default_pipelines: dict[torch.dtype, object] = {}  # one built-in default per dtype per process


@dataclass
class AsdModel:
    model: torch.nn.Module  # CausalWanTransformer
    label: str  # what was loaded: a file name or the built-in default
    pipeline: object | None = None  # the built-in default's pipeline (text encoder, codec); None for files

    @property
    def trained_plan(self) -> str | None:
        return self.model.trained_plan

    def describe(self) -> str:
        config = self.model.config
        params = sum(p.numel() for p in self.model.parameters())
        plan = self.trained_plan or "not recorded in the file (plain Wan weights: pick a family, or use '4')"
        lines = [
            f"model: {self.label}",
            f"trained plan: {plan}",
            f"size: {params / 1e6:.1f}M parameters, {config.num_layers} layers x {config.width} wide, "
            f"text dim {config.text_dim}, {config.chunk_frames} latent frames per chunk",
            f"dtype: {str(self.model.dtype).removeprefix('torch.')}",
        ]
        if self.model.checkpoint_layout:
            lines.append(f"file layout: {self.model.checkpoint_layout}")
        family = getattr(self.model, "family", None)
        if family is not None:
            lines.append(f"family: {family.name} (by {self.model.family_basis}): {family.describe()}")
            from ..asd_core.samplers import sampler_for

            note = f": its {family.sampler_note}" if family.sampler_note else ""
            lines.append(f"sampler (auto): {sampler_for(family)}{note}")
        if getattr(self.model, "lora_file", None):
            lines.append(f"LoRA merged: {Path(self.model.lora_file).name}")
        if self.pipeline is not None and not self.pipeline.trained:
            lines.append("WARNING: the built-in default weights are untrained (random); output is noise")
        return "\n".join(lines)


def resolve_dtype(name: str) -> torch.dtype:
    """The dtype word of the loader's widget, for the device ComfyUI computes on."""
    from ..asd_core.devices import resolve_dtype as resolve

    return resolve(name, host.compute_device())


def default_pipeline(dtype: torch.dtype = torch.float32):
    """The built-in default (model, text encoder, VAE), loaded once per dtype on the offload device."""
    if dtype not in _default_pipelines:
        from ..asd_core.toy.defaults import load_default_pipeline

        _default_pipelines[dtype] = load_default_pipeline(host.offload_device(), dtype, allow_untrained=True)
    return _default_pipelines[dtype]


def load_asd_model(path: Path | str, dtype: torch.dtype, label: str | None = None, *, family: str = AUTO_FAMILY,
                   lora: Path | str | None = None) -> AsdModel:
    """Read any supported checkpoint layout (+ a LoRA); unreadable files raise a ValueError naming the file."""
    from ..asd_core.checkpoint import load_model

    path = Path(path)
    model = load_model(path, device=host.offload_device(), dtype=dtype, family=family, lora=lora)
    return AsdModel(model=model, label=label or path.name)


def _result(asd_model: AsdModel, extra: str = ""):
    text = asd_model.describe() + (f"\n{extra}" if extra else "")
    return {"ui": {"text": [text]}, "result": (asd_model, text)}


DTYPE_TOOLTIP = (
    "Weights precision. auto = bfloat16 on a GPU that supports it, float32 on a CPU. "
    "Norms and the timestep MLP always stay float32."
)


class ASDModelLoader:
    DESCRIPTION = (
        "Loads a causal Wan2.1 video transformer: our .safetensors, Self Forcing .pt files as released, "
        "Wan2.1 original / ComfyUI / diffusers layouts, or ComfyUI's repackaged causal files. "
        f"Files go in models/{host.MODEL_FOLDER} or models/diffusion_models. '{BUILTIN}' is the small "
        "model shipped with the pack (runs on a CPU, pair it with the ASD built-in text encoder and decoder)."
    )
    CATEGORY = "ASD/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (MODEL_TYPE, "STRING")
    RETURN_NAMES = ("model", "info")
    OUTPUT_TOOLTIPS = (
        "The causal video model, for the ASD Causal Sampler.",
        "What was loaded, including the step plan the checkpoint was trained with.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_file": ([BUILTIN, *host.list_model_files()], {
                    "tooltip": f"Checkpoint from models/{host.MODEL_FOLDER} or models/diffusion_models, "
                               f"or {BUILTIN} (no download needed).",
                }),
                "dtype": (list(DTYPES), {"default": "auto", "tooltip": DTYPE_TOOLTIP}),
            },
            "optional": {
                "family": (list(family_names()), {"default": AUTO_FAMILY, "tooltip": FAMILY_TOOLTIP}),
                "lora_file": ([NO_LORA, *host.list_lora_files()], {
                    "default": NO_LORA,
                    "tooltip": "A LoRA merged into the weights at load, for LoRA-on-base releases (LongLive: "
                               "longlive_base.pt as the model file, lora.pt here). From models/loras.",
                }),
            },
        }

    def load(self, model_file: str, dtype: str, family: str = AUTO_FAMILY, lora_file: str = NO_LORA):
        torch_dtype = resolve_dtype(dtype)
        if model_file == BUILTIN:
            if family != AUTO_FAMILY or lora_file != NO_LORA:
                raise ValueError(f"{BUILTIN} is its own family and takes no LoRA: set family to auto and lora_file "
                                 f"to {NO_LORA}, or pick a checkpoint file")
            pipeline = default_pipeline(torch_dtype)
            return _result(AsdModel(model=pipeline.model, label=f"built-in default ({pipeline.label})", pipeline=pipeline))
        path = host.resolve_model_file(model_file)
        lora = None if lora_file in (NO_LORA, "") else host.resolve_lora_file(lora_file)
        return _result(load_asd_model(path, torch_dtype, label=model_file, family=family, lora=lora))


def family_names() -> tuple[str, ...]:
    """`auto` first, then every family of asd_core.families (a light import: no torch model code)."""
    from ..asd_core.families import NAMES

    return NAMES


class ASDHubDownloadLoader:
    DESCRIPTION = (
        "Downloads a checkpoint from the Hugging Face Hub (e.g. Self Forcing's released .pt) into "
        f"models/{host.MODEL_FOLDER} and loads it. Uses the local Hugging Face cache: a file already "
        "there is not downloaded again (also offline, HF_HUB_OFFLINE=1), and an interrupted download resumes."
    )
    CATEGORY = "ASD/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (MODEL_TYPE, "STRING")
    RETURN_NAMES = ("model", "info")
    OUTPUT_TOOLTIPS = (
        "The causal video model, for the ASD Causal Sampler.",
        "What was loaded and where the file was put.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "repo_id": ("STRING", {
                    "default": "gdhe17/Self-Forcing",
                    "tooltip": "Hugging Face repository, 'owner/name'.",
                }),
                "filename": ("STRING", {
                    "default": "checkpoints/self_forcing_dmd.pt",
                    "tooltip": "File inside the repository (with its folder), e.g. checkpoints/self_forcing_dmd.pt.",
                }),
                "revision": ("STRING", {
                    "default": "main",
                    "tooltip": "Branch, tag or commit hash to download.",
                }),
                "dtype": (list(DTYPES), {"default": "auto", "tooltip": DTYPE_TOOLTIP}),
            }
        }

    def load(self, repo_id: str, filename: str, revision: str, dtype: str):
        path = fetch_from_hub(repo_id.strip(), filename.strip(), revision.strip() or None)
        asd_model = load_asd_model(path, resolve_dtype(dtype), label=f"{repo_id}/{filename}")
        return _result(asd_model, f"file: {path}")


def fetch_from_hub(repo_id: str, filename: str, revision: str | None) -> Path:
    """Download through the Hugging Face cache, then expose the file in our model folder.

    The cache keeps resumable partial files and is consulted first (offline too); the model
    folder gets a hard link (no second copy) or, across file systems, a symbolic link.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if not repo_id or repo_id.count("/") != 1:
        raise ValueError(f"repo_id must look like 'owner/name', got {repo_id!r}")
    if not filename:
        raise ValueError("filename is empty: give the file's path inside the repository, e.g. checkpoints/model.pt")
    if ".." in Path(filename).parts or Path(filename).is_absolute():
        raise ValueError(f"filename must be a path inside the repository, got {filename!r}")
    kwargs = {}
    if "tqdm_class" in inspect.signature(hf_hub_download).parameters:
        kwargs["tqdm_class"] = _comfy_tqdm()
    try:
        cached = Path(hf_hub_download(repo_id, filename, revision=revision, **kwargs))
    except LocalEntryNotFoundError:
        raise ValueError(
            f"cannot download {repo_id}/{filename}: no connection to the Hub (or HF_HUB_OFFLINE=1) and the file is not "
            "in the local Hugging Face cache. Connect and retry, or copy the file into "
            f"models/{host.MODEL_FOLDER} and use the ASD Model Loader."
        ) from None
    except RepositoryNotFoundError:
        raise ValueError(
            f"Hugging Face repository {repo_id!r} not found (or it is private: log in with `hf auth login`)"
        ) from None
    except RevisionNotFoundError:
        raise ValueError(f"revision {revision!r} not found in {repo_id!r}") from None
    except EntryNotFoundError:
        raise ValueError(f"file {filename!r} not found in {repo_id!r} at revision {revision!r}") from None
    except HfHubHTTPError as err:
        raise ValueError(f"download of {repo_id}/{filename} failed: {err}") from None
    except HFValidationError as err:
        raise ValueError(f"invalid Hugging Face repo id or revision: {err}") from None
    target = host.download_dir() / repo_id.replace("/", "--") / filename
    _link(cached, target)
    return target


def _link(source: Path, target: Path) -> None:
    """Place `source` at `target` without copying its bytes when the file system allows."""
    if target.exists() and os.path.samefile(source, target):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.linking")
    temp.unlink(missing_ok=True)
    real = source.resolve()  # the cache's snapshot entry is itself a symlink to a blob
    try:
        os.link(real, temp)
    except OSError:
        os.symlink(real, temp)
    os.replace(temp, target)


def _comfy_tqdm():
    """A tqdm that also moves ComfyUI's progress bar (bytes downloaded)."""
    from tqdm.auto import tqdm

    class ComfyTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._comfy = host.Progress(int(self.total or 0)) if self.total else None

        def update(self, n=1):
            shown = super().update(n)
            if self._comfy is not None:
                self._comfy.update(int(self.n))
            return shown

    return ComfyTqdm
