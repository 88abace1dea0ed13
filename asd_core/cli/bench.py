"""asd-bench: measure what the causal sampler's design buys, on one config, in one run.

Prints one JSON object with three ratios (each with its target) and the raw figures:

* steps_speedup_1_vs_4: plan "4" time / plan "1" time for the same video (at most 2.5x per
  chunk in the transformer: 4 denoising passes + 1 cache fill against 1 + 1; 34 / 13 = 2.6
  passes for 7 chunks, as the last chunk fills no cache);
* kv_cache_speedup: a baseline without KV cache (every model call re-runs the full
  block-causal forward over all clean earlier frames at t=0 plus the noisy chunk) / the
  cached sampler, same plan; both must give the same video (`kv_cache_max_abs_diff`);
* rolling_cache_mem_growth: peak memory of a long video / a short one - 1 with a rolling
  cache window the size of the short video (the whole-video cache is reported for contrast).

The default config is big enough for the transformer's matmuls and attention to take most of
the time; docs/performance.md has the figures and what they mean.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..config import CausalWanConfig
from ..model import CausalWanTransformer
from ..sampler import draw_noise, renoise, sample_video
from ..schedule import parse_plan, timestep_to_sigma

DEFAULTS = dict(layers=4, width=256, heads=2, ffn=1024, text_dim=64, latent="24x24", chunk_frames=3,
                chunks=7, repeats=3)
QUICK = dict(layers=2, width=64, heads=2, ffn=128, text_dim=16, latent="16x16", chunk_frames=2,
             chunks=3, repeats=1)
TEXT_TOKENS = 16  # length of the random text conditioning
PLAN_FEW, PLAN_MANY = "1", "4"
TARGETS = {  # name -> (comparison, bound), from the issue
    "steps_speedup_1_vs_4": (">=", 2.2),
    "kv_cache_speedup": (">=", 3.0),
    "rolling_cache_mem_growth": ("<=", 0.10),
}


@dataclass
class Settings:
    config: CausalWanConfig
    latent_height: int
    latent_width: int
    chunks: int  # chunks of the timed video
    long_chunks: int  # chunks of the long video in the memory test
    window_chunks: int  # rolling cache window, in chunks
    repeats: int
    device: str
    seed: int
    tolerance: float

    @property
    def chunk_frames(self) -> int:
        return self.config.chunk_frames


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asd-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny config (seconds; used by the tests)")
    p.add_argument("--layers", type=int, help=f"transformer blocks (default {DEFAULTS['layers']})")
    p.add_argument("--width", type=int, help=f"model width = heads x head_dim (default {DEFAULTS['width']})")
    p.add_argument("--heads", type=int, help=f"attention heads (default {DEFAULTS['heads']})")
    p.add_argument("--ffn", type=int, help=f"feed-forward width (default {DEFAULTS['ffn']})")
    p.add_argument("--text-dim", type=int, help=f"text embedding width (default {DEFAULTS['text_dim']})")
    p.add_argument("--latent", help=f"latent frame size HxW (default {DEFAULTS['latent']}; patch 2x2 -> H*W/4 tokens)")
    p.add_argument("--chunk-frames", type=int, help=f"latent frames per chunk (default {DEFAULTS['chunk_frames']})")
    p.add_argument("--chunks", type=int, help=f"chunks of the timed video (default {DEFAULTS['chunks']})")
    p.add_argument("--long-chunks", type=int, help="chunks of the long video in the memory test (default 4x --chunks)")
    p.add_argument("--window-chunks", type=int, help="rolling cache window in chunks (default --chunks)")
    p.add_argument("--repeats", type=int, help=f"timed runs per measurement, best kept (default {DEFAULTS['repeats']})")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest allowed |cached - recompute| before the benchmark fails (default 1e-3)")
    p.add_argument("--skip-memory", action="store_true", help="skip the memory measurement (its subprocesses)")
    p.add_argument("--trainer", action="store_true",
                   help="instead: the trainer's figures (ASD overhead per distill iteration, samples/s with 1 vs 2 "
                        "processes); see trainer/bench.py")
    # Internal: memory probes "CHUNKS:WINDOW_FRAMES" (0 = whole-video cache) run in this fresh process.
    p.add_argument("--probe", action="append", type=_parse_probe, help=argparse.SUPPRESS)
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Fill unset flags from the preset and reject combinations the model or cache cannot run."""
    preset = QUICK if args.quick else DEFAULTS
    get = lambda name: preset[name] if getattr(args, name) is None else getattr(args, name)  # noqa: E731
    layers, width, heads, ffn, text_dim = (get(n) for n in ("layers", "width", "heads", "ffn", "text_dim"))
    chunk_frames, chunks, repeats = get("chunk_frames"), get("chunks"), get("repeats")
    long_chunks = 4 * chunks if args.long_chunks is None else args.long_chunks
    window_chunks = chunks if args.window_chunks is None else args.window_chunks

    match = re.fullmatch(r"(\d+)(?:x(\d+))?", str(get("latent")).strip().lower())
    if not match:
        raise ValueError(f"--latent must look like 16x16 (or 16 for square), got {get('latent')!r}")
    latent_h = int(match.group(1))
    latent_w = int(match.group(2) or match.group(1))
    for name, value in (("layers", layers), ("width", width), ("heads", heads), ("ffn", ffn),
                        ("text-dim", text_dim), ("chunk-frames", chunk_frames), ("chunks", chunks),
                        ("repeats", repeats)):
        if value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    if width % heads or (width // heads) % 2:
        raise ValueError(f"--width {width} must split into {heads} heads of an even size (e.g. --width {heads * 64})")
    if latent_h < 2 or latent_w < 2 or latent_h % 2 or latent_w % 2:
        raise ValueError(f"--latent {latent_h}x{latent_w} must be even on both sides (patch 2x2), e.g. 16x16")
    if long_chunks <= chunks:
        raise ValueError(f"--long-chunks ({long_chunks}) must be larger than --chunks ({chunks})")
    if window_chunks < 2:
        raise ValueError(f"--window-chunks must be >= 2 (one sink chunk + the chunk being made), got {window_chunks}")
    if args.tolerance <= 0:
        raise ValueError(f"--tolerance must be > 0, got {args.tolerance}")
    device = str(args.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for but torch sees no CUDA device; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"--device must be cpu or cuda, got {device!r}")

    rope_len = max(1024, long_chunks * chunk_frames, latent_h, latent_w)
    config = CausalWanConfig(num_layers=layers, num_attention_heads=heads, attention_head_dim=width // heads,
                             ffn_dim=ffn, text_dim=text_dim, rope_max_seq_len=rope_len,
                             chunk_frames=chunk_frames)
    return Settings(config, latent_h, latent_w, chunks, long_chunks, window_chunks, repeats, device, args.seed,
                    args.tolerance)


def build(settings: Settings) -> tuple[CausalWanTransformer, torch.Tensor]:
    """Random-weight model and text conditioning, identical in every process for one seed."""
    torch.manual_seed(settings.seed)
    model = CausalWanTransformer(settings.config).to(settings.device).eval()
    context = torch.randn(1, TEXT_TOKENS, settings.config.text_dim).to(settings.device)  # (1, L, text_dim)
    return model, context


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def cached_video(model, plan, context, settings: Settings, num_chunks: int,
                 max_cache_frames: int | None = None) -> torch.Tensor:
    """The real sampler (KV cache): all chunks of one video, (1, C, F, H, W)."""
    chunks = sample_video(model, plan=plan, context=context, num_frames=num_chunks * settings.chunk_frames,
                          latent_height=settings.latent_height, latent_width=settings.latent_width,
                          seeds=[settings.seed], max_cache_frames=max_cache_frames)
    return torch.cat(list(chunks), dim=2)


def recompute_video(model, plan, context, settings: Settings, num_chunks: int) -> torch.Tensor:
    """No KV cache: each call runs the full block-causal forward over the clean history at t=0
    plus the noisy chunk, and keeps the chunk's part of the output.

    Noise comes from the sampler's own helpers and generator in the sampler's order (chunk
    noise, then one draw per re-noise), so the video must equal `cached_video`'s.
    """
    f, device, dtype = settings.chunk_frames, model.device, model.dtype
    generators = [torch.Generator(device="cpu").manual_seed(settings.seed)]
    shape = (1, settings.config.in_channels, f, settings.latent_height, settings.latent_width)
    history: list[torch.Tensor] = []  # clean chunks on the model's device, (1, C, f, H, W) each
    outputs = []
    for chunk in range(num_chunks):
        steps = plan.timesteps_for_chunk(chunk)
        x = draw_noise(shape, generators)
        for step, t in enumerate(steps):
            frames = torch.cat(history + [x.to(device, dtype)], dim=2)  # (1, C, F, H, W)
            times = torch.zeros(1, frames.shape[2], device=device)  # (1, F): history clean
            times[:, -f:] = t
            with torch.no_grad():
                flow = model(frames, times, context)[:, :, -f:].float()
            x0 = x - timestep_to_sigma(t) * flow.to(x.device)
            if step + 1 < len(steps):
                x = renoise(x0, steps[step + 1], generators)
        history.append(x0.to(device, dtype))
        outputs.append(x0)
    return torch.cat(outputs, dim=2)


def best_times(runs: dict, repeats: int, device: str) -> tuple[dict[str, float], dict[str, float]]:
    """One warm-up each, then `repeats` rounds that time every run in turn; keeps each run's
    fastest time (least disturbed by other load) and its spread (slowest / fastest - 1).
    Interleaving the runs makes their ratios robust to load that changes during the benchmark."""
    for run in runs.values():
        run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {n: min(t) for n, t in times.items()}, {n: max(t) / min(t) - 1 for n, t in times.items()}


# --- memory -------------------------------------------------------------------------------

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
    for _ in sample_video(model, plan=parse_plan(PLAN_MANY), context=context,
                          num_frames=num_chunks * settings.chunk_frames, latent_height=settings.latent_height,
                          latent_width=settings.latent_width, seeds=[settings.seed], max_cache_frames=window_frames):
        pass  # each chunk is dropped as soon as it is made, as a streaming consumer would


def probe_memory(settings: Settings, num_chunks: int, window_frames: int | None) -> dict:
    """Peak memory that sampling one video adds, in this process (meant to be a fresh one).

    A one-chunk warm-up first pages in the kernels' code and starts the thread pools, so the
    figure is the video's own memory (cache + activations), not one-off start-up costs; its
    cache is dropped before measuring.
    """
    model, context = build(settings)
    _stream(model, context, settings, 1, None)
    model._reusable_kv_cache = None  # the sampler keeps its cache on the model between videos
    gc.collect()
    if settings.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        _stream(model, context, settings, num_chunks, window_frames)
        torch.cuda.synchronize()
        return {"peak_bytes": torch.cuda.max_memory_allocated() - before,
                "method": "torch.cuda.max_memory_allocated minus memory_allocated before sampling"}
    reset_worked = _reset_peak_rss()
    before = _rss_bytes() if reset_worked else _peak_rss_bytes(False)
    _stream(model, context, settings, num_chunks, window_frames)
    peak = _peak_rss_bytes(reset_worked)
    method = "peak RSS (VmHWM, reset via /proc/self/clear_refs)" if reset_worked else "ru_maxrss"
    return {"peak_bytes": peak - before, "method": f"{method} minus RSS before sampling"}


def _parse_probe(text: str) -> tuple[int, int | None]:
    chunks, window = text.split(":")
    return int(chunks), int(window) or None


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


def _settings_flags(settings: Settings, threads: int | None) -> list[str]:
    c = settings.config
    flags = ["--layers", c.num_layers, "--width", c.width, "--heads", c.num_attention_heads, "--ffn", c.ffn_dim,
             "--text-dim", c.text_dim, "--latent", f"{settings.latent_height}x{settings.latent_width}",
             "--chunk-frames", c.chunk_frames, "--chunks", settings.chunks, "--long-chunks", settings.long_chunks,
             "--window-chunks", settings.window_chunks, "--device", settings.device, "--seed", settings.seed]
    if threads is not None:
        flags += ["--threads", threads]
    return [str(f) for f in flags]


def measure_memory(settings: Settings, threads: int | None) -> dict:
    """Peak memory of short and long videos, rolling window and whole-video cache, each in a
    fresh process: a new interpreter (`--probe`), forking one child per video on CPU."""
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
    base = [sys.executable, "-m", "asd_core.cli.bench", *_settings_flags(settings, threads)]
    # CUDA cannot be used in a child forked after CUDA was touched: one interpreter per probe there.
    forking = hasattr(os, "fork") and settings.device == "cpu"
    groups = [probes] if forking else [[p] for p in probes]
    results = {}
    for group in groups:
        cmd = base + [a for n, w in group for a in ("--probe", f"{n}:{w or 0}")]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        out, err = proc.stdout, proc.stderr
        if proc.returncode != 0:
            raise RuntimeError(f"memory probes {group} failed (exit {proc.returncode}):\n{err.strip()[-2000:]}")
        results.update(zip(group, json.loads(out.strip().splitlines()[-1])))
    peaks = {name: results[key]["peak_bytes"] for name, key in effective.items()}
    if min(peaks.values()) <= 0:
        raise RuntimeError(f"a memory probe measured no growth at all ({peaks}); the measurement is not usable")
    return {"peaks": peaks, "method": results[probes[0]]["method"]}


def kv_cache_bytes(settings: Settings, frames: int) -> int:
    """Keys + values of every layer for `frames` latent frames (batch 1), from the config."""
    c = settings.config
    tokens = frames * c.tokens_per_frame(settings.latent_height, settings.latent_width)
    return 2 * c.num_layers * tokens * c.width * torch.empty((), dtype=torch.float32).element_size()


# --- main -----------------------------------------------------------------------------------

def _device_facts(device: str) -> dict:
    facts = {"device": device, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
             "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine()}
    if device.startswith("cuda"):
        facts["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return facts


def _target(name: str, value: float) -> dict:
    op, bound = TARGETS[name]
    met = value >= bound if op == ">=" else value <= bound
    return {"target": f"{op} {bound}", "met": bool(met)}


def run_benchmark(settings: Settings, threads: int | None = None, skip_memory: bool = False) -> dict:
    model, context = build(settings)
    few, many = parse_plan(PLAN_FEW), parse_plan(PLAN_MANY)
    n, reps, dev = settings.chunks, settings.repeats, settings.device

    cached = cached_video(model, many, context, settings, n)
    recomputed = recompute_video(model, many, context, settings, n)
    max_diff = (cached - recomputed).abs().max().item()
    if not max_diff <= settings.tolerance:
        raise RuntimeError(
            f"the no-cache baseline and the cached sampler disagree (max |diff| {max_diff:.3g} > "
            f"--tolerance {settings.tolerance}): the KV-cache path is wrong, the timings would compare different work"
        )

    seconds, spread = best_times({
        f"cached_plan_{PLAN_FEW}": lambda: cached_video(model, few, context, settings, n),
        f"cached_plan_{PLAN_MANY}": lambda: cached_video(model, many, context, settings, n),
        f"recompute_plan_{PLAN_MANY}": lambda: recompute_video(model, many, context, settings, n),
    }, reps, dev)
    steps_speedup = seconds[f"cached_plan_{PLAN_MANY}"] / seconds[f"cached_plan_{PLAN_FEW}"]
    kv_speedup = seconds[f"recompute_plan_{PLAN_MANY}"] / seconds[f"cached_plan_{PLAN_MANY}"]
    c = settings.config
    result = {
        "config": {**asdict(c), "latent_height": settings.latent_height, "latent_width": settings.latent_width,
                   "tokens_per_frame": c.tokens_per_frame(settings.latent_height, settings.latent_width),
                   "batch": 1, "text_tokens": TEXT_TOKENS,
                   "parameters": sum(p.numel() for p in model.parameters())},
        "num_chunks": n,
        **_device_facts(dev),
        "repeats": reps,
        "seconds": seconds,
        "seconds_spread": spread,
        "model_calls": {f"plan_{PLAN_FEW}": few.model_calls(n) - 1, f"plan_{PLAN_MANY}": many.model_calls(n) - 1,
                        f"recompute_plan_{PLAN_MANY}": many.model_calls(n, cache_fill=False)},
        "steps_speedup_1_vs_4": steps_speedup,
        "kv_cache_speedup": kv_speedup,
        "kv_cache_max_abs_diff": max_diff,
    }
    targets = {"steps_speedup_1_vs_4": _target("steps_speedup_1_vs_4", steps_speedup),
               "kv_cache_speedup": _target("kv_cache_speedup", kv_speedup)}
    if not skip_memory:
        del model, context
        gc.collect()
        memory = measure_memory(settings, threads)
        peaks = memory["peaks"]
        rolling_growth = peaks["rolling_long"] / peaks["rolling_short"] - 1
        full_growth = peaks["full_long"] / peaks["full_short"] - 1
        f = settings.chunk_frames
        result.update({
            "rolling_cache_mem_growth": rolling_growth,
            "full_cache_mem_growth": full_growth,
            "memory": {
                "long_chunks": settings.long_chunks,
                "window_chunks": settings.window_chunks,
                "plan": PLAN_MANY,
                "method": memory["method"],
                "peak_bytes": peaks,
                "kv_cache_bytes": {"window": kv_cache_bytes(settings, settings.window_chunks * f),
                                   "full_short": kv_cache_bytes(settings, settings.chunks * f),
                                   "full_long": kv_cache_bytes(settings, settings.long_chunks * f)},
            },
        })
        targets["rolling_cache_mem_growth"] = _target("rolling_cache_mem_growth", rolling_growth)
    result["targets"] = targets
    return result


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.probe:
        print(json.dumps(run_probes(settings, args.probe)))
        return 0
    if args.trainer:
        from trainer.bench import run_trainer_benchmark  # the trainer ships in the same distribution

        print(json.dumps(run_trainer_benchmark(quick=args.quick), indent=2))
        return 0
    result = run_benchmark(settings, args.threads, args.skip_memory)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
