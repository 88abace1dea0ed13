"""Resumable training state: networks, optimizers, schedulers, EMA, RNG states and the step.

A checkpoint is a directory `checkpoints/step_00001234/` holding `tensors.safetensors`
(every tensor: weights, optimizer moments, RNG states) and `state.json` (everything else).
It is written into a temporary directory first and renamed into place, so a process killed
mid-write (kill -9, power loss) leaves the previous checkpoint untouched and loadable; the
`latest` pointer is replaced atomically after the rename. No pickle anywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

TENSORS = "tensors.safetensors"
STATE = "state.json"
LATEST = "latest"
PREFIX = "step_"


def capture_rng() -> tuple[dict[str, torch.Tensor], dict]:
    """Global RNG states of torch (CPU + CUDA), numpy and python as (tensors, json)."""
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {"numpy": [name, int(pos), int(has_gauss), float(cached)], "python": [version, list(internal), gauss_next]}
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng/cuda/"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng/numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _optimizer_to_flat(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in sd["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optim/{name}/{index}/{key}"] = value
            else:
                scalars[f"{index}/{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(name: str, optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    prefix = f"optim/{name}/"
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, slot = key[len(prefix):].split("/", 1)
            state.setdefault(int(index), {})[slot] = value
    for key, value in meta["scalars"].items():
        index, slot = key.split("/", 1)
        state.setdefault(int(index), {})[slot] = value
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


class Checkpointer:
    """Saves and finds resumable checkpoints under `directory`, keeping the last `keep_last`."""

    def __init__(self, directory: str | Path, keep_last: int = 3):
        self.directory = Path(directory)
        self.keep_last = keep_last

    def save(self, step: int, *, modules: dict, optimizers: dict, schedulers: dict,
             generators: dict[str, torch.Generator] | None = None, extra: dict | None = None) -> Path:
        tensors: dict[str, torch.Tensor] = {}
        meta: dict = {"step": int(step), "optimizers": {}, "schedulers": {}, "extra": extra or {}, "modules": sorted(modules)}
        for name, module in modules.items():
            for key, value in module.state_dict().items():
                tensors[f"model/{name}/{key}"] = value
        for name, optimizer in optimizers.items():
            t, m = _optimizer_to_flat(name, optimizer)
            tensors.update(t)
            meta["optimizers"][name] = m
        for name, scheduler in schedulers.items():
            meta["schedulers"][name] = scheduler.state_dict()
        for name, generator in (generators or {}).items():
            tensors[f"generator/{name}"] = generator.get_state()
        rng_tensors, meta["rng"] = capture_rng()
        tensors.update(rng_tensors)
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}

        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"{PREFIX}{step:08d}"
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=self.directory))
        try:
            safetensors.torch.save_file(tensors, str(tmp / TENSORS))
            _write_text(tmp / STATE, json.dumps(meta))
            for name in (TENSORS, STATE):
                with open(tmp / name, "rb") as f:
                    os.fsync(f.fileno())
            if final.exists():  # re-saving the same step (e.g. SIGTERM right after a periodic save)
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _write_text(self.directory / LATEST, final.name, atomic=True)
        self._prune()
        return final

    def _prune(self) -> None:
        for path in self.complete()[: -self.keep_last]:
            shutil.rmtree(path, ignore_errors=True)
        for stale in self.directory.glob(".tmp-*"):  # leftovers of killed writes
            shutil.rmtree(stale, ignore_errors=True)

    def complete(self) -> list[Path]:
        """Finished checkpoints, oldest first (a directory exists only once fully written)."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.glob(f"{PREFIX}*") if (p / TENSORS).is_file() and (p / STATE).is_file()]
        return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))

    def latest(self) -> Path | None:
        pointer = self.directory / LATEST
        if pointer.is_file():
            candidate = self.directory / pointer.read_text().strip()
            if (candidate / TENSORS).is_file() and (candidate / STATE).is_file():
                return candidate
        done = self.complete()
        return done[-1] if done else None

    @staticmethod
    def load(path: str | Path, *, modules: dict, optimizers: dict, schedulers: dict,
             generators: dict[str, torch.Generator] | None = None, restore_global_rng: bool = True) -> tuple[int, dict]:
        """Restore everything `save` wrote into the given objects; returns (step, extra)."""
        path = Path(path)
        tensors = safetensors.torch.load_file(str(path / TENSORS))
        meta = json.loads((path / STATE).read_text())
        missing = sorted(set(modules) - set(meta["modules"]))
        if missing:
            raise ValueError(f"checkpoint {path} has no network(s) {missing}; it holds {meta['modules']}")
        for name, module in modules.items():
            prefix = f"model/{name}/"
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, strict=True)
        for name, optimizer in optimizers.items():
            _optimizer_from_flat(name, optimizer, tensors, meta["optimizers"][name])
        for name, scheduler in schedulers.items():
            scheduler.load_state_dict(meta["schedulers"][name])
        for name, generator in (generators or {}).items():
            generator.set_state(tensors[f"generator/{name}"])
        if restore_global_rng:
            restore_rng(tensors, meta["rng"])
        return int(meta["step"]), meta["extra"]


def read_module_state(path: str | Path, name: str) -> dict[str, torch.Tensor]:
    """One network's weights from a resumable checkpoint (for `export` and for the next stage)."""
    path = Path(path)
    prefix = f"model/{name}/"
    tensors = safetensors.torch.load_file(str(path / TENSORS))
    found = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not found:
        meta = json.loads((path / STATE).read_text())
        raise ValueError(f"checkpoint {path} has no network {name!r}; it holds {meta['modules']}")
    return found


def read_meta(path: str | Path) -> dict:
    return json.loads((Path(path) / STATE).read_text())


def _write_text(path: Path, text: str, atomic: bool = False) -> None:
    if not atomic:
        path.write_text(text)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
