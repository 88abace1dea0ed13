"""The ratio benchmark: what the causal sampler's design buys, on one small config, in one run.

* steps_speedup_1_vs_4: plan "4" time / plan "1" time for the same video (at most 2.5x per
  chunk in the transformer: 4 denoising passes + 1 cache fill against 1 + 1; 34 / 13 = 2.6
  passes for 7 chunks, as the last chunk fills no cache);
* kv_cache_speedup: the no-cache baseline / the cached sampler, same plan; both must give the
  same video (`kv_cache_max_abs_diff`);
* rolling_cache_mem_growth: peak memory of a long video / a short one - 1 with a rolling
  cache window the size of the short video (the whole-video cache is reported for contrast).
"""

from __future__ import annotations

import gc
from dataclasses import asdict

import torch

from ..budget import kv_cache_bytes
from ..schedule import parse_plan
from .memory import PLAN as MEMORY_PLAN
from .memory import measure_memory
from .nocache import cached_video, recompute_video
from .settings import TEXT_TOKENS, Settings, build
from .timing import best_times, device_facts

PLAN_FEW, PLAN_MANY = "1", "4"
TARGETS = {  # name -> (comparison, bound)
    "steps_speedup_1_vs_4": (">=", 2.2),
    "kv_cache_speedup": (">=", 3.0),
    "rolling_cache_mem_growth": ("<=", 0.10),
}


def target(name: str, value: float) -> dict:
    op, bound = TARGETS[name]
    met = value >= bound if op == ">=" else value <= bound
    return {"target": f"{op} {bound}", "met": bool(met)}


def run_benchmark(settings: Settings, threads: int | None = None, skip_memory: bool = False) -> dict:
    """All three ratios and their raw figures, as one JSON-ready dict."""
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
        "benchmark": "ratios",
        "config": {**asdict(c), "latent_height": settings.latent_height, "latent_width": settings.latent_width,
                   "tokens_per_frame": c.tokens_per_frame(settings.latent_height, settings.latent_width),
                   "batch": 1, "text_tokens": TEXT_TOKENS,
                   "parameters": sum(p.numel() for p in model.parameters())},
        "num_chunks": n,
        **device_facts(dev),
        "repeats": reps,
        "seconds": seconds,
        "seconds_spread": spread,
        "model_calls": {f"plan_{PLAN_FEW}": few.model_calls(n) - 1, f"plan_{PLAN_MANY}": many.model_calls(n) - 1,
                        f"recompute_plan_{PLAN_MANY}": many.model_calls(n, cache_fill=False)},
        "steps_speedup_1_vs_4": steps_speedup,
        "kv_cache_speedup": kv_speedup,
        "kv_cache_max_abs_diff": max_diff,
    }
    targets = {"steps_speedup_1_vs_4": target("steps_speedup_1_vs_4", steps_speedup),
               "kv_cache_speedup": target("kv_cache_speedup", kv_speedup)}
    if not skip_memory:
        del model, context
        gc.collect()
        result |= _memory_figures(settings, threads)
        targets["rolling_cache_mem_growth"] = target("rolling_cache_mem_growth", result["rolling_cache_mem_growth"])
    result["targets"] = targets
    return result


def _memory_figures(settings: Settings, threads: int | None) -> dict:
    memory = measure_memory(settings, threads)
    peaks = memory["peaks"]
    f, c, h, w = settings.chunk_frames, settings.config, settings.latent_height, settings.latent_width
    cache = {"window": kv_cache_bytes(c, settings.window_chunks * f, h, w, torch.float32),
             "full_short": kv_cache_bytes(c, settings.chunks * f, h, w, torch.float32),
             "full_long": kv_cache_bytes(c, settings.long_chunks * f, h, w, torch.float32)}
    return {
        "rolling_cache_mem_growth": peaks["rolling_long"] / peaks["rolling_short"] - 1,
        "full_cache_mem_growth": peaks["full_long"] / peaks["full_short"] - 1,
        "memory": {"long_chunks": settings.long_chunks, "window_chunks": settings.window_chunks,
                   "plan": MEMORY_PLAN, "method": memory["method"], "peak_bytes": peaks, "kv_cache_bytes": cache},
    }
