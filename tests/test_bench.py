"""asd-bench (ratios and --real-size, at their --quick sizes), the memory budget, the trainer's bench.

Speed targets are not asserted here (a loaded CI machine would make them flaky); they live in
the benchmark output and docs/performance.md.
"""

import json
import math

import pytest
import torch

from asd_core.bench.models import bidirectional_view, compile_blocks, random_model
from asd_core.bench.nocache import cached_video, recompute_video
from asd_core.bench.ratios import run_benchmark
from asd_core.bench.settings import build
from asd_core.budget import REAL_VIDEO, VideoSize, chunk_activation_bytes, kv_cache_bytes, memory_budget, weight_bytes
from asd_core.checkpoint import load_model, save_checkpoint
from asd_core.cli import bench
from asd_core.cli.inspect import main as inspect_main
from asd_core.config import tiny_config, wan21_t2v_1_3b
from asd_core.model import FP32_PARAMETER_PATTERNS, CausalWanTransformer
from asd_core.sampler import generate_latents
from asd_core.schedule import parse_plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def settings(*flags):
    return bench.settings_from_args(bench.build_parser().parse_args(["--quick", *flags]))


# --- the ratio benchmark -----------------------------------------------------------------------

def test_quick_run_prints_one_json_object_with_every_figure(capsys):
    assert bench.main(["--quick", "--threads", "1"]) == 0  # the memory probes' processes too
    result = json.loads(capsys.readouterr().out)  # the whole stdout is one JSON object

    for key in ("steps_speedup_1_vs_4", "kv_cache_speedup", "kv_cache_max_abs_diff", "rolling_cache_mem_growth",
                "full_cache_mem_growth", "config", "num_chunks", "device", "seconds", "torch", "threads", "targets"):
        assert key in result, key
    assert result["benchmark"] == "ratios"
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
    model, context = build(s)
    cached = cached_video(model, parse_plan(plan), context, s, 3)
    recomputed = recompute_video(model, parse_plan(plan), context, s, 3)
    assert cached.shape == (1, 16, 6, 16, 16)
    torch.testing.assert_close(recomputed, cached, rtol=1e-4, atol=1e-4)
    other_seed = settings("--seed", "1")
    assert (recompute_video(model, parse_plan(plan), context, other_seed, 3) - cached).abs().max() > 0.1


def test_benchmark_refuses_to_time_videos_that_differ():
    with pytest.raises(RuntimeError, match="disagree"):
        run_benchmark(settings("--tolerance", "1e-12"), skip_memory=True)


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


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--trainer"], "python -m trainer.bench"),
        (["--real-size", "--layers", "3"], "--layers set the ratio benchmark's sizes"),
        (["--compile"], "apply to --real-size only"),
        (["--real-size", "--repeats", "0"], "--repeats must be >= 1"),
    ],
)
def test_misplaced_flags_are_one_line_errors(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--quick", *flags])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a CUDA-less machine gives")
def test_cuda_without_a_gpu_says_so(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--real-size", "--quick", "--device", "cuda"])
    assert "torch sees no CUDA device; use --device cpu" in capsys.readouterr().err


# --- the real-size benchmark, at its reduced size ---------------------------------------------

def test_real_size_quick_runs_the_gpu_code_path_on_cpu(capsys):
    assert bench.main(["--real-size", "--quick", "--device", "cpu", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)

    assert result["benchmark"] == "real_size" and result["quick"] is True and result["dtype"] == "bfloat16"
    video = result["video"]
    assert (video["latent_frames"], video["chunks"], video["pixel_frames"]) == (12, 4, 45)
    assert set(result["plans"]) == {"4", "2", "1*", "1"}
    # 4 chunks, the last one fills no cache: 4 = 4x5-1, 2 = 4x3-1, 1* = 5+3x2-1, 1 = 4x2-1.
    assert {p: r["model_calls"] for p, r in result["plans"].items()} == {"4": 19, "2": 11, "1*": 10, "1": 7}
    for run in (*result["plans"].values(), result["rolling_window_plan_1*"]):
        assert run["seconds"] > 0 and 0 < run["first_chunk_latency_s"] <= run["seconds"]
        assert run["fps"] == pytest.approx(45 / run["seconds"])
        assert run["peak_memory_bytes"] is None  # CPU: no peak counter, and no fake figure
    assert result["rolling_window_plan_1*"]["window_frames"] == 9
    reference = result["bidirectional_reference"]
    assert reference["fps_50_steps"] == pytest.approx(45 / (50 * reference["seconds_per_step"]))
    assert reference["fps_50_steps_cfg"] == pytest.approx(reference["fps_50_steps"] / 2)
    assert all(t["met"] == "not evaluated: CPU" for t in result["targets"].values())
    assert result["targets"]["fps_plan_1*"]["value"] == result["plans"]["1*"]["fps"]
    assert result["memory"]["computed"]["kv_cache_bytes_whole_video"] == kv_cache_bytes(
        tiny_config(num_layers=2, num_attention_heads=2, attention_head_dim=64), 12, 8, 8)


def test_random_model_holds_weights_as_the_loader_does(tmp_path):
    config = tiny_config()
    model = random_model(config, dtype=torch.bfloat16, seed=3)
    path = save_checkpoint(tmp_path / "m.safetensors", {k: v.float() for k, v in model.state_dict().items()}, config)
    loaded = load_model(path, dtype=torch.bfloat16)
    for (name, param), (_, reference) in zip(model.named_parameters(), loaded.named_parameters(), strict=True):
        assert param.dtype == reference.dtype, name
        assert (param.dtype == torch.float32) == any(p in name for p in FP32_PARAMETER_PATTERNS), name
        assert not param.requires_grad
    assert any(p.dtype == torch.bfloat16 for p in model.parameters())
    torch.testing.assert_close(model.rope.freqs_cos, loaded.rope.freqs_cos)  # rebuilt, not left empty

    x = torch.randn(1, 16, 4, 8, 8, dtype=torch.bfloat16)
    context = torch.randn(1, 8, config.text_dim, dtype=torch.bfloat16)
    with torch.no_grad():
        out = model(x, 500.0, context)
        torch.testing.assert_close(out, loaded(x, 500.0, context))
        assert out.isfinite().all() and out.abs().mean() > 0.01
        again = random_model(config, dtype=torch.bfloat16, seed=3)(x, 500.0, context)
        other = random_model(config, dtype=torch.bfloat16, seed=4)(x, 500.0, context)
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_bidirectional_view_shares_the_weights_and_drops_the_causal_mask():
    config = tiny_config(num_layers=1, chunk_frames=2)  # one layer: earlier frames' keys see no future
    model = random_model(config, dtype=torch.float32)
    view = bidirectional_view(model, 4)
    for (name, param), (_, shared) in zip(model.named_parameters(), view.named_parameters(), strict=True):
        assert shared.data_ptr() == param.data_ptr(), name  # no copy of the weights
    x, context = torch.randn(1, 16, 4, 8, 8), torch.randn(1, 8, config.text_dim)
    with torch.no_grad():
        causal, full = model(x, 500.0, context), view(x, 500.0, context)
    # The last chunk sees every frame either way; the first sees the future only without the mask.
    torch.testing.assert_close(full[:, :, 2:], causal[:, :, 2:])
    assert (full[:, :, :2] - causal[:, :, :2]).abs().max() > 1e-3


def test_compiled_blocks_give_the_eager_output():
    """torch.compile (inductor, C++ on this CPU) on the smallest model: one block, float32.
    A first run on a machine compiles for about a minute; inductor's cache makes reruns ~10 s."""
    config = tiny_config(num_layers=1, chunk_frames=2)
    context = torch.randn(1, 8, config.text_dim)
    x = torch.randn(1, 16, 4, 8, 8)
    video = dict(plan=parse_plan("1"), context=context, num_frames=4, latent_height=8, latent_width=8, seeds=[0])
    eager = random_model(config, dtype=torch.float32)
    with torch.no_grad():
        expected_forward = eager(x, 500.0, context)
    expected_video = generate_latents(eager, **video)

    from torch._dynamo.utils import counters

    counters.clear()
    compiled = compile_blocks(random_model(config, dtype=torch.float32))
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, 500.0, context), expected_forward, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(generate_latents(compiled, **video), expected_video, rtol=1e-4, atol=1e-4)
    assert counters["stats"]["unique_graphs"] >= 1  # compiled, not silently run eager


# --- the computed memory budget ----------------------------------------------------------------

def test_kv_cache_formula_is_the_caches_own_size():
    config = tiny_config(num_layers=3, chunk_frames=2)
    with torch.device("meta"):
        model = CausalWanTransformer(config).to(torch.bfloat16)
    cache = model.new_kv_cache(batch_size=2, capacity_frames=6, latent_height=8, latent_width=12)
    assert kv_cache_bytes(config, 6, 8, 12, torch.bfloat16, batch=2) == cache.nbytes()


def test_real_size_budget_figures():
    config = wan21_t2v_1_3b()
    # 30 layers x (keys, values) x 21 frames x 1560 tokens x 12 heads x 128 x 2 bytes.
    assert kv_cache_bytes(config, 21, 60, 104) == 30 * 2 * 21 * 1560 * 12 * 128 * 2 == 6_038_323_200
    weights = weight_bytes(config)
    assert weights["parameters"] == 1_418_996_800
    assert weights["bytes"] == 2 * weights["parameters"] + 2 * weights["fp32_parameters"]
    budget = memory_budget(config, REAL_VIDEO, window_frames=9)
    assert budget["kv_cache_bytes_window"] == kv_cache_bytes(config, 9, 60, 104)
    assert budget["peak_bytes_window"] < 12e9 and budget["peak_bytes_whole_video"] < 12e9
    # Activations grow with the chunk, not the video: one chunk of 3 frames at 60x104.
    assert chunk_activation_bytes(config, 60, 104)["chunk_tokens"] == 3 * 1560
    assert REAL_VIDEO.pixel_frames == 81 and (REAL_VIDEO.width, REAL_VIDEO.height) == (832, 480)


def test_inspect_reports_kv_cache_bytes(tmp_path, capsys):
    config = tiny_config()
    path = save_checkpoint(tmp_path / "m.safetensors", CausalWanTransformer(config).state_dict(), config)
    assert inspect_main([str(path), "--video", "6x8x8", "--dtype", "float32"]) == 0
    cache = json.loads(capsys.readouterr().out)["kv_cache"]
    assert cache["trained_video"]["whole_video_bytes"] == kv_cache_bytes(config, 6, 8, 8, torch.float32)
    assert cache["trained_video"]["window_frames"] == 6  # 3 chunks of 2 frames
    assert cache["real_video"]["whole_video_bytes"] == kv_cache_bytes(config, 21, 60, 104, torch.float32)
    assert cache["real_video"]["window_bytes"] == kv_cache_bytes(config, 6, 60, 104, torch.float32)
    assert "not cached" in cache["cross_attention"]

    assert inspect_main([str(path)]) == 0  # a tiny config of no known family: no trained size to guess
    assert json.loads(capsys.readouterr().out)["kv_cache"]["trained_video"] is None
    assert inspect_main([str(path), "--video", "6x8"]) == 2
    assert "21x60x104" in capsys.readouterr().err


def test_inspect_takes_a_wan_sized_config_to_be_trained_at_81_frames_of_832x480():
    from asd_core.cli.inspect import _trained_video

    video, source = _trained_video(wan21_t2v_1_3b())
    assert video == REAL_VIDEO and "records no size" in source


def test_inspect_tells_the_shipped_students_trained_size(capsys):
    from asd_core.toy.defaults import default_file

    assert inspect_main([str(default_file("student"))]) == 0
    trained = json.loads(capsys.readouterr().out)["kv_cache"]["trained_video"]
    assert trained["video"] == VideoSize(9, 8, 8).describe() and "toy" in trained["source"]


def test_inspect_tells_a_resized_toy_models_trained_size_and_not_a_wider_texts():
    """The toy teacher and students may be deeper or wider than the base toy (the 5.3M teacher
    is 6 layers, 4 heads, FFN 512): still the toy domain's size. Another text width is not."""
    from dataclasses import replace

    from asd_core.cli.inspect import _trained_video
    from asd_core.toy.defaults import toy_model_config

    resized = replace(toy_model_config(), num_layers=6, num_attention_heads=4, ffn_dim=512)
    video, source = _trained_video(resized)
    assert video == VideoSize(9, 8, 8) and "toy" in source
    video, source = _trained_video(replace(resized, text_dim=96))
    assert video is None and "--video" in source


# --- the trainer's own benchmark ---------------------------------------------------------------

def test_trainer_bench_is_its_own_command(capsys):
    from trainer import bench as trainer_bench

    assert trainer_bench.main(["--quick", "--skip-procs"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["asd_step_overhead"] == pytest.approx(
        result["sec_per_iteration_asd_on"] / result["sec_per_iteration_asd_off"])
    assert result["cycles"] == 1 and isinstance(result["targets"]["asd_step_overhead"]["met"], bool)
    with pytest.raises(SystemExit):
        trainer_bench.main(["--cycles", "0"])
    assert "--cycles must be >= 1" in capsys.readouterr().err
