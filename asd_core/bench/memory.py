"""Peak memory that sampling one video adds, each video measured in a fresh process.

Why fresh processes: an allocator that once held a large cache keeps its pages, and a
process's peak remembers imports and model builds; only a new process gives the video's own
peak. `measure_memory` starts one interpreter (`python -m asd_core.bench.memory`) that forks
one child per video on CPU; on CUDA one interpreter per video (CUDA cannot follow a fork).
"""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from ..sampler import sample_video
from ..schedule import parse_plan
from .settings import Settings, build
from .timing import synchronize

PLAN = "4"  # the plan whose videos are measured: the most model calls per chunk


def _rss_bytes() -> int | None:
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets this process's peak RSS (VmHWM) to its current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_bytes(reset_worked: bool) -> int:
    """VmHWM after a reset; else ru_maxrss (kB on Linux, bytes on macOS).

    ru_maxrss is the peak of the whole process life: without the reset it also holds the
    imports' and the model build's peaks, and on Linux even the pre-exec peak of the parent.
    """
    if reset_worked:
        match = re.search(r"VmHWM:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
        if match:
            return int(match.group(1)) * 1024
    try:
        import resource
    except ImportError:
        raise RuntimeError("CPU memory measurement needs Linux or macOS; use --skip-memory") from None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _stream(model, context, settings: Settings, num_chunks: int, window_frames: int | None) -> None:
    for _ in sample_video(model, plan=parse_plan(PLAN), context=context,
                          num_frames=num_chunks * settings.chunk_frames, latent_height=settings.latent_height,
                          latent_width=settings.latent_width, seeds=[settings.seed], max_cache_frames=window_frames):
        pass  # each chunk is dropped as soon as it is made, as a streaming consumer would


def probe_memory(settings: Settings, num_chunks: int, window_frames: int | None) -> dict:
    """Peak memory that sampling one video adds, in this process (meant to be a fresh one).

    A one-chunk warm-up first pages in the kernels' code and starts the thread pools, so the
    figure is the video's own memory (cache + activations), not one-off start-up costs.
    """
    model, context = build(settings)
    _stream(model, context, settings, 1, None)  # its cache lives and dies in the call
    gc.collect()
    if settings.device.startswith("cuda"):
        synchronize(settings.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        _stream(model, context, settings, num_chunks, window_frames)
        synchronize(settings.device)
        return {"peak_bytes": torch.cuda.max_memory_allocated() - before,
                "method": "torch.cuda.max_memory_allocated minus memory_allocated before sampling"}
    reset_worked = _reset_peak_rss()
    before = _rss_bytes() if reset_worked else _peak_rss_bytes(False)
    _stream(model, context, settings, num_chunks, window_frames)
    peak = _peak_rss_bytes(reset_worked)
    method = "peak RSS (VmHWM, reset via /proc/self/clear_refs)" if reset_worked else "ru_maxrss"
    return {"peak_bytes": peak - before, "method": f"{method} minus RSS before sampling"}


def run_probes(settings: Settings, probes: list[tuple[int, int | None]]) -> list[dict]:
    """Measure each probe in its own process forked from this one, which has only imported
    modules (one import for all; no model, allocator state or peak carried over). One at a
    time: side by side, their thread pools would fight over the cores."""
    if len(probes) == 1 or not hasattr(os, "fork"):
        if len(probes) != 1:
            raise ValueError("without os.fork, give one probe per process")
        return [probe_memory(settings, *probes[0])]
    results = []
    for num_chunks, window_frames in probes:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: measure, report through the pipe, leave without running parent cleanup
            os.close(read_fd)
            code = 0
            try:
                payload = probe_memory(settings, num_chunks, window_frames)
            except BaseException as error:  # reported to the parent, which raises it
                payload, code = {"error": f"{type(error).__name__}: {error}"}, 1
            with os.fdopen(write_fd, "w") as pipe:
                pipe.write(json.dumps(payload))
            os._exit(code)
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            text = pipe.read()
        os.waitpid(pid, 0)
        result = json.loads(text) if text else {"error": "the probe process died without a result"}
        if "error" in result:
            raise RuntimeError(f"memory probe ({num_chunks} chunks, window {window_frames}) failed: {result['error']}")
        results.append(result)
    return results


def measure_memory(settings: Settings, threads: int | None) -> dict:
    """Peak memory of short and long videos, rolling window and whole-video cache, each in a
    fresh process."""
    f = settings.chunk_frames
    window = settings.window_chunks * f
    runs = {
        "rolling_short": (settings.chunks, window),
        "rolling_long": (settings.long_chunks, window),
        "full_short": (settings.chunks, None),
        "full_long": (settings.long_chunks, None),
    }
    # A window at least as long as the video is no rolling at all: run such twins once.
    effective = {name: (n, w if w is not None and w < n * f else None) for name, (n, w) in runs.items()}
    probes = sorted(set(effective.values()), key=str)
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    # glibc: hand every block >= 64 KiB straight back to the OS when freed (no dynamic threshold,
    # no retained heap top), so RSS follows the live tensors rather than the allocator's history.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "0")
    base = [sys.executable, "-m", "asd_core.bench.memory", settings.to_json(), str(threads or 0)]
    forking = hasattr(os, "fork") and settings.device == "cpu"
    groups = [probes] if forking else [[p] for p in probes]
    results = {}
    for group in groups:
        cmd = base + [f"{n}:{w or 0}" for n, w in group]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"memory probes {group} failed (exit {proc.returncode}):\n{proc.stderr.strip()[-2000:]}")
        results.update(zip(group, json.loads(proc.stdout.strip().splitlines()[-1])))
    peaks = {name: results[key]["peak_bytes"] for name, key in effective.items()}
    if min(peaks.values()) <= 0:
        raise RuntimeError(f"a memory probe measured no growth at all ({peaks}); the measurement is not usable")
    return {"peaks": peaks, "method": results[probes[0]]["method"]}


def _main(argv: list[str]) -> int:
    """Probe process: SETTINGS_JSON THREADS CHUNKS:WINDOW_FRAMES... (window 0 = whole-video cache)."""
    settings, threads = Settings.from_json(argv[0]), int(argv[1])
    if threads:
        torch.set_num_threads(threads)
    probes = [(int(c), int(w) or None) for c, w in (text.split(":") for text in argv[2:])]
    print(json.dumps(run_probes(settings, probes)))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
