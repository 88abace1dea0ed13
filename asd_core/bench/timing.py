"""Device checks and timing that stay correct on CUDA.

CUDA kernels run asynchronously: a clock read right after a call measures the launch, not
the work. Every timed region here is bracketed by `synchronize`, and nothing inside it syncs,
so the figures are the device's time for the whole region.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import torch


def check_device(device: str) -> str:
    """The device string if usable here; a one-line ValueError that says what to do otherwise."""
    device = str(device)
    if not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
        raise ValueError(f"--device must be cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for but torch sees no CUDA device; use --device cpu")
    return device


def synchronize(device: str) -> None:
    """Wait for the device's queued work (no-op on CPU, where every call is synchronous)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def timed(run: Callable[[], object], device: str) -> float:
    """Seconds `run()` takes on `device`: work queued earlier ends before the clock starts, and
    the run's own queued work ends before it stops."""
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def best_times(runs: dict[str, Callable[[], object]], repeats: int,
               device: str) -> tuple[dict[str, float], dict[str, float]]:
    """One warm-up each, then `repeats` rounds that time every run in turn; keeps each run's
    fastest time (least disturbed by other load) and its spread (slowest / fastest - 1).
    Interleaving the runs makes their ratios robust to load that changes during the benchmark."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(timed(run, device))
    return {n: min(t) for n, t in times.items()}, {n: max(t) / min(t) - 1 for n, t in times.items()}


def device_facts(device: str) -> dict:
    """What the figures were measured on: they mean nothing without it."""
    facts = {"device": device, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
             "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine()}
    if device.startswith("cuda"):
        facts["gpu"] = torch.cuda.get_device_name(torch.device(device))
        facts["cuda"] = torch.version.cuda
        facts["sdpa_enabled"] = {"flash": torch.backends.cuda.flash_sdp_enabled(),
                                 "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled()}
    return facts
