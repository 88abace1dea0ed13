"""asd-bench on its tiny --quick config: one JSON object, every figure present and sane.

Speed targets are not asserted here (a loaded CI machine would make them flaky); they live in
the benchmark output and docs/performance.md.
"""

import json
import math

import pytest
import torch

from asd_core.cli import bench
from asd_core.schedule import parse_plan


def settings(*flags):
    return bench.settings_from_args(bench.build_parser().parse_args(["--quick", *flags]))


def test_quick_run_prints_one_json_object_with_every_figure(capsys):
    assert bench.main(["--quick"]) == 0
    result = json.loads(capsys.readouterr().out)  # the whole stdout is one JSON object

    for key in ("steps_speedup_1_vs_4", "kv_cache_speedup", "kv_cache_max_abs_diff", "rolling_cache_mem_growth",
                "full_cache_mem_growth", "config", "num_chunks", "device", "seconds", "torch", "threads", "targets"):
        assert key in result, key
    assert result["device"] == "cpu" and result["torch"] == torch.__version__ and result["threads"] >= 1
    assert result["num_chunks"] == 3 and result["config"]["num_layers"] == 2
    assert set(result["seconds"]) == {"cached_plan_1", "cached_plan_4", "recompute_plan_4"}
    assert all(s > 0 for s in result["seconds"].values())
    assert result["steps_speedup_1_vs_4"] > 0 and result["kv_cache_speedup"] > 0
    assert result["kv_cache_max_abs_diff"] < 1e-4
    assert set(result["targets"]) == {"steps_speedup_1_vs_4", "kv_cache_speedup", "rolling_cache_mem_growth"}
    # 3 chunks: plan 4 = 3 x (4 + 1 fill) - 1 (the last chunk fills nothing); no cache = 3 x 4.
    assert result["model_calls"] == {"plan_1": 5, "plan_4": 14, "recompute_plan_4": 12}

    memory = result["memory"]
    assert all(v > 0 for v in memory["peak_bytes"].values())
    assert math.isfinite(result["rolling_cache_mem_growth"])
    # The measurement must see the whole-video cache grow (4x the frames) and the window not.
    cache = memory["kv_cache_bytes"]
    peaks = memory["peak_bytes"]
    assert peaks["full_long"] - peaks["full_short"] >= 0.5 * (cache["full_long"] - cache["full_short"])
    assert result["full_cache_mem_growth"] > result["rolling_cache_mem_growth"] + 0.5


@pytest.mark.parametrize("plan", ["2*", "1"])
def test_recompute_baseline_makes_the_samplers_video(plan):
    """The no-cache baseline is an independent path (full block-causal passes): equal videos."""
    s = settings()
    model, context = bench.build(s)
    cached = bench.cached_video(model, parse_plan(plan), context, s, 3)
    recomputed = bench.recompute_video(model, parse_plan(plan), context, s, 3)
    assert cached.shape == (1, 16, 6, 16, 16)
    torch.testing.assert_close(recomputed, cached, rtol=1e-4, atol=1e-4)
    other_seed = settings("--seed", "1")
    assert (bench.recompute_video(model, parse_plan(plan), context, other_seed, 3) - cached).abs().max() > 0.1


def test_benchmark_refuses_to_time_videos_that_differ():
    with pytest.raises(RuntimeError, match="disagree"):
        bench.run_benchmark(settings("--tolerance", "1e-12"), skip_memory=True)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--latent", "15x16"], "even on both sides"),
        (["--latent", "big"], "16x16"),
        (["--width", "65"], "split into 2 heads"),
        (["--chunks", "7", "--long-chunks", "7"], "larger than --chunks"),
        (["--window-chunks", "1"], "window-chunks"),
        (["--layers", "0"], "--layers must be >= 1"),
        (["--device", "tpu"], "cpu or cuda"),
    ],
)
def test_bad_flags_are_rejected_with_a_fix(flags, message, capsys):
    with pytest.raises(ValueError, match=message):
        settings(*flags)
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--quick", *flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
