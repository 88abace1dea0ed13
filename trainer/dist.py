"""Process group, the few collectives the trainer needs, and FSDP sharding.

One code path for 1 and N processes: without torchrun every collective is the identity.
Data parallelism is DDP's contract done by hand: identical initial weights (broadcast from
rank 0), gradients averaged by all-reduce before every optimizer step. Done explicitly rather
than through the DDP wrapper because the Self Forcing rollout calls the generator several
times (with and without grad, with a KV cache) before one backward, which DDP's reducer
does not allow without static-graph assumptions.

`parallel=fsdp` shards the trainable transformers with FSDP2 (`fully_shard`): parameters,
gradients and optimizer moments of each transformer block (and of the root: embeddings,
head) are split over the ranks; a block's full weights exist only during its forward and
backward. FSDP2 hooks module calls, not a reducer, so the rollout's many forwards before one
backward work. Its gradients arrive reduce-scattered (averaged) after backward; the
hand-made all-reduce runs only for the replicated networks (see `average_gradients`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from .config import PARALLEL_MODES


@dataclass
class Runtime:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    parallel: str = "ddp"
    mesh: object = None  # the 1-D DeviceMesh FSDP shards over (parallel=fsdp with > 1 process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def sharded(self) -> bool:
        """FSDP in effect: parallel=fsdp and more than one process (one process has nothing to shard)."""
        return self.parallel == "fsdp" and self.distributed


def init_runtime(device: str = "auto", parallel: str = "ddp") -> Runtime:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, nccl on GPU)."""
    if parallel not in PARALLEL_MODES:
        raise ValueError(f"parallel must be one of {list(PARALLEL_MODES)}, got {parallel!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        why = "sees no GPU" if torch.backends.cuda.is_built() else "is built without CUDA"
        raise ValueError(f"device={device}: this torch ({torch.__version__}) {why}; use device=cpu or device=auto")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=torch_device if backend == "nccl" else None)
    runtime = Runtime(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device, parallel=parallel)
    if runtime.sharded:
        from torch.distributed.device_mesh import init_device_mesh

        # Explicit device type: fully_shard's default mesh would pick cuda whenever a GPU exists.
        runtime.mesh = init_device_mesh(torch_device.type, (world_size,))
    return runtime


def shutdown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: torch.nn.Module, runtime: Runtime) -> None:
    """Give every rank rank 0's weights (the DDP starting condition)."""
    if not runtime.distributed:
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def shard_transformer(model: torch.nn.Module, runtime: Runtime) -> torch.nn.Module:
    """FSDP2-shard a CausalWanTransformer in place: one unit per block, one for the root; no-op unless sharded.

    Call after `broadcast_module` (every rank then cuts its shard from the same weights) and
    before making the optimizer (sharding replaces the parameters with DTensors). The root
    is resharded after forward too (FSDP2 keeps it gathered by default), so that outside a
    forward `parameters()` always yields the shards: EMA, clipping and checkpoints rely on it.
    Weights stay fp32 and bf16 comes from the loop's autocast, as under ddp: no
    MixedPrecisionPolicy, so both modes compute the same thing (the all-gathers move fp32).
    """
    if not runtime.sharded:
        return model
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block, mesh=runtime.mesh, reshard_after_forward=True)
    fully_shard(model, mesh=runtime.mesh, reshard_after_forward=True)
    return model


def is_sharded(tensor: torch.Tensor) -> bool:
    """A parameter FSDP owns (its gradient is reduced by FSDP, not by `average_gradients`)."""
    return isinstance(tensor, DTensor)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a sharded tensor; the tensor itself when replicated."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def average_gradients(parameters, runtime: Runtime) -> None:
    """All-reduce-mean the gradients of `parameters` (one flat buffer: one collective per call).

    Sharded (FSDP) parameters are skipped: their gradients were already averaged by FSDP's
    reduce-scatter in backward, and averaging them again would divide by world_size twice.
    """
    if not runtime.distributed:
        return
    params = [p for p in parameters if p.requires_grad and not is_sharded(p)]
    if not params:
        return
    for p in params:
        if p.grad is None:  # a parameter this rank did not reach: contribute zeros
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= runtime.world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def broadcast_int(value: int, runtime: Runtime) -> int:
    """Rank 0's value on every rank (e.g. the exit step every rank must use)."""
    if not runtime.distributed:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=runtime.device)
    dist.broadcast(t, src=0)
    return int(t.item())


def any_rank(flag: bool, runtime: Runtime) -> bool:
    """True when the flag is set on any rank (stop requests, non-finite losses)."""
    if not runtime.distributed:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=runtime.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_scalar(value: float, runtime: Runtime) -> float:
    if not runtime.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=runtime.device)
    dist.all_reduce(t)
    return float(t.item()) / runtime.world_size


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()
