"""Resumable training state: networks, optimizers, schedulers, EMA, RNG states and the step.

A checkpoint is a directory `checkpoints/step_00001234/` holding `tensors.safetensors`
(every tensor: weights, optimizer moments, RNG states) and `state.json` (everything else).
It is written into a temporary directory first and renamed into place, so a process killed
mid-write (kill -9, power loss) leaves the previous checkpoint untouched and loadable; the
`latest` pointer is replaced atomically after the rename. No pickle anywhere.

parallel=fsdp writes the same file: sharded networks and their optimizer moments are
gathered into full tensors on rank 0 (torch.distributed.checkpoint.state_dict with
full_state_dict, cpu_offload) and optimizer state keeps torch's integer parameter indices.
So an fsdp checkpoint resumes under ddp and back, and `read_module_state` / export see
one layout. On load every rank reads the full file and keeps its own shard.
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
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from . import dist

TENSORS = "tensors.safetensors"
STATE = "state.json"
LATEST = "latest"
PREFIX = "step_"


class CorruptCheckpoint(ValueError):
    """A checkpoint directory whose files cannot be read (truncated, garbled, half-deleted)."""


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


# -- full state dicts of sharded (FSDP2) and replicated networks ------------------------------

GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)  # full tensors, on rank 0's CPU only
SCATTER = StateDictOptions(full_state_dict=True, strict=True)  # every rank holds the full dict, keeps its shard


def is_sharded(module: torch.nn.Module) -> bool:
    return any(dist.is_sharded(p) for p in module.parameters())


def _optimizer_is_sharded(optimizer: torch.optim.Optimizer) -> bool:
    return any(dist.is_sharded(p) for group in optimizer.param_groups for p in group["params"])


def network_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A network's full weights. For a sharded one this is a collective (every rank must call it):
    rank 0 gets the gathered tensors on the CPU, the other ranks an empty dict."""
    if not is_sharded(module):
        return module.state_dict()
    return get_model_state_dict(module, options=GATHER)


def load_network_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Full weights into a network, sharded or not (strict: every key must match)."""
    if not is_sharded(module):
        module.load_state_dict(state, strict=True)
        return
    set_model_state_dict(module, state, options=SCATTER)


def _owner(modules: dict[str, torch.nn.Module]) -> torch.nn.Module:
    """One module holding every network: DCP names an optimizer's parameters through a module,
    and one optimizer may span two networks (the teacher stage's model + text encoder)."""
    return torch.nn.ModuleDict(modules)


def optimizer_state(optimizer: torch.optim.Optimizer, modules: dict[str, torch.nn.Module]) -> dict:
    """torch's optimizer state_dict layout (integer parameter indices) for any optimizer.

    Over sharded parameters the moments are gathered (a collective: every rank calls it; rank 0
    gets full tensors, the others an empty dict). DCP names parameters by their module path;
    the indices are restored from the order of `param_groups`, which is what torch numbers.
    An optimizer that never stepped has no moments and is not passed to DCP, which would make
    them by stepping it once at lr 0 (and so bump Adam's step counter).
    """
    if not _optimizer_is_sharded(optimizer) or not optimizer.state:
        return optimizer.state_dict()
    full = get_optimizer_state_dict(_owner(modules), optimizer, options=GATHER)
    if not full:
        return {}
    index, groups = {}, []
    for group in full["param_groups"]:
        ids = []
        for fqn in group["params"]:
            index[fqn] = len(index)
            ids.append(index[fqn])
        groups.append({**group, "params": ids})
    return {"state": {index[fqn]: slots for fqn, slots in full["state"].items()}, "param_groups": groups}


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, modules: dict[str, torch.nn.Module]) -> None:
    """The inverse of `optimizer_state`: torch's layout in, each rank keeps its shard of the moments."""
    if not _optimizer_is_sharded(optimizer) or not state["state"]:
        optimizer.load_state_dict(state)
        return
    owner = _owner(modules)
    names = {id(p): name for name, p in owner.named_parameters()}
    fqns = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    groups = [{**group, "params": [fqns[i] for i in group["params"]]} for group in state["param_groups"]]
    full = {"state": {fqns[i]: slots for i, slots in state["state"].items()}, "param_groups": groups}
    set_optimizer_state_dict(owner, optimizer, full, options=SCATTER)


def _optimizer_to_flat(name: str, sd: dict) -> tuple[dict, dict]:
    tensors, scalars = {}, {}
    for index, slots in sd["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optim/{name}/{index}/{key}"] = value
            else:
                scalars[f"{index}/{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(name: str, tensors: dict, meta: dict) -> dict:
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
    return {"state": state, "param_groups": groups}


class Checkpointer:
    """Saves and finds resumable checkpoints under `directory`, keeping the last `keep_last`."""

    def __init__(self, directory: str | Path, keep_last: int = 3):
        self.directory = Path(directory)
        self.keep_last = keep_last

    def save(self, step: int, *, modules: dict, optimizers: dict, schedulers: dict,
             generators: dict[str, torch.Generator] | None = None, extra: dict | None = None,
             write: bool = True) -> Path | None:
        """Write a checkpoint; returns its directory (None where write=False).

        With sharded networks this is a collective: every rank calls it, gathering to rank 0,
        and only the caller with write=True (rank 0) writes.
        """
        networks = {name: network_state(module) for name, module in modules.items()}
        moments = {name: optimizer_state(optimizer, modules) for name, optimizer in optimizers.items()}
        if not write:
            return None
        tensors: dict[str, torch.Tensor] = {}
        meta: dict = {"step": int(step), "optimizers": {}, "schedulers": {}, "extra": extra or {}, "modules": sorted(modules)}
        for name, state in networks.items():
            for key, value in state.items():
                tensors[f"model/{name}/{key}"] = value
        for name, state in moments.items():
            t, m = _optimizer_to_flat(name, state)
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
        self.remove_leftovers()

    def remove_leftovers(self) -> None:
        """Delete what killed writes leave behind: `.tmp-step_*` directories and `.latest.*.tmp` files."""
        for stale in self.directory.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in self.directory.glob(f".{LATEST}.*.tmp"):
            stale.unlink(missing_ok=True)

    def complete(self) -> list[Path]:
        """Finished checkpoints, oldest first (a directory exists only once fully written)."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.glob(f"{PREFIX}*") if (p / TENSORS).is_file() and (p / STATE).is_file()]
        return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))

    def latest(self) -> Path | None:
        newest = self.newest_first()
        return newest[0] if newest else None

    def newest_first(self) -> list[Path]:
        """Complete checkpoints, the one `latest` names first, then the others newest first."""
        done = self.complete()[::-1]
        pointer = self.directory / LATEST
        if pointer.is_file():
            named = self.directory / pointer.read_text().strip()
            if named in done:
                done.remove(named)
                done.insert(0, named)
        return done

    @staticmethod
    def read(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, meta) of a checkpoint; CorruptCheckpoint when its files cannot be read."""
        path = Path(path)
        try:
            tensors = safetensors.torch.load_file(str(path / TENSORS))
            meta = json.loads((path / STATE).read_text())
            if not isinstance(meta, dict) or not {"step", "modules", "extra"} <= set(meta):
                raise ValueError(f"{STATE} lacks step, modules or extra")
        except Exception as error:  # safetensors, json, OS and key errors: any of them means unreadable
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise CorruptCheckpoint(f"checkpoint {path} cannot be read ({reason})") from None
        return tensors, meta

    @staticmethod
    def load(path: str | Path, *, modules: dict, optimizers: dict, schedulers: dict,
             generators: dict[str, torch.Generator] | None = None, restore_global_rng: bool = True) -> tuple[int, dict]:
        """Restore everything `save` wrote into the given objects; returns (step, extra).

        Every rank reads the whole file; sharded networks and optimizers keep their own shard.
        """
        tensors, meta = Checkpointer.read(path)
        return Checkpointer.restore(path, tensors, meta, modules=modules, optimizers=optimizers, schedulers=schedulers,
                                    generators=generators, restore_global_rng=restore_global_rng)

    @staticmethod
    def restore(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict, *, modules: dict, optimizers: dict,
                schedulers: dict, generators: dict[str, torch.Generator] | None = None,
                restore_global_rng: bool = True) -> tuple[int, dict]:
        """`load` for a checkpoint already read with `read` (its config can be checked first)."""
        path = Path(path)
        missing = sorted(set(modules) - set(meta["modules"]))
        if missing:
            raise ValueError(f"checkpoint {path} has no network(s) {missing}; it holds {meta['modules']}")
        for name, module in modules.items():
            prefix = f"model/{name}/"
            try:
                load_network_state(module, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            except RuntimeError as error:  # torch lists every mismatching tensor over many lines: name the first
                lines = [line.strip() for line in str(error).splitlines() if line.strip()]
                detail = lines[1] if len(lines) > 1 else lines[0]
                raise ValueError(f"checkpoint {path}: its network {name!r} does not fit the configured one ({detail}"
                                 f"{f'; {len(lines) - 2} more' if len(lines) > 2 else ''}); resume with the model "
                                 "settings it was trained with") from None
        for name, optimizer in optimizers.items():
            load_optimizer_state(optimizer, _optimizer_from_flat(name, tensors, meta["optimizers"][name]), modules)
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
