"""Every dtype end to end, as real users run it: weights in bfloat16 / float16 on a GPU take the
float32 CONDITIONING ComfyUI's text encoders hand over, and give float32 results.

Runs on the CPU (bf16 and fp16 kernels exist there). Tolerances, relative to the float32 run of
the same weights and noise (||x - x_fp32|| / ||x_fp32||): bfloat16 5e-2, float16 1e-2. Measured
on the shipped student at `1*`: 1.5e-2 and 1.7e-3.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from asd_core.checkpoint import load_model, save_checkpoint
from asd_core.config import tiny_config
from asd_core.layouts import COMFYUI_PREFIX, diffusers_to_wan
from asd_core.model import FP32_PARAMETER_PATTERNS, CausalWanTransformer
from asd_core.sampler import generate_latents
from asd_core.schedule import parse_plan

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_executor  # noqa: E402

TOLERANCE = {"float32": 1e-6, "bfloat16": 5e-2, "float16": 1e-2}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LOW = ["bfloat16", "float16"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def relative(x: torch.Tensor, reference: torch.Tensor) -> float:
    return ((x.float() - reference.float()).norm() / reference.float().norm()).item()


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    torch.manual_seed(0)
    config = tiny_config(chunk_frames=2)
    return save_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.safetensors",
                           CausalWanTransformer(config).state_dict(), config, plan="2*")


# --- the model's boundary ---------------------------------------------------------------------


@pytest.mark.parametrize("model_dtype", list(DTYPES))
def test_forward_takes_inputs_of_any_dtype(tiny_file, model_dtype):
    """Latents, context and timestep in any float type: the model casts them to its own."""
    reference_model = load_model(tiny_file)
    model = load_model(tiny_file, dtype=DTYPES[model_dtype])
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 4, 8, 8, generator=generator)
    context = torch.randn(1, 5, 32, generator=generator)
    with torch.no_grad():
        expected = reference_model(x, 700.0, context)
        for input_dtype in DTYPES.values():
            out = model(x.to(input_dtype), torch.tensor(700.0, dtype=input_dtype), context.to(input_dtype))
            assert out.dtype == DTYPES[model_dtype] and out.isfinite().all()
            # Inputs rounded to a lower precision add their own error on top of the weights'.
            tolerance = max(TOLERANCE[model_dtype], TOLERANCE[str(input_dtype).removeprefix("torch.")])
            assert relative(out, expected) < tolerance, (model_dtype, input_dtype)


def test_loaded_low_precision_model_keeps_the_sensitive_parts_float32(tiny_file):
    model = load_model(tiny_file, dtype=torch.bfloat16)
    for name, param in model.named_parameters():
        assert (param.dtype == torch.float32) == any(p in name for p in FP32_PARAMETER_PATTERNS), name


@pytest.mark.parametrize("model_dtype", LOW)
def test_sampler_mixes_dtypes_and_returns_float32(tiny_file, model_dtype):
    """A bf16/fp16 model, float32 text, a float16 prefix and CFG: float32 chunks close to float32's."""
    generator = torch.Generator().manual_seed(2)
    context = torch.randn(1, 5, 32, generator=generator)
    negative = torch.zeros(1, 3, 32)
    prefix = torch.randn(1, 16, 2, 8, 8, generator=generator)
    kwargs = dict(plan=parse_plan("2*"), num_frames=4, latent_height=8, latent_width=8, seeds=[3],
                  negative_context=negative, cfg_scale=2.0)
    expected = generate_latents(load_model(tiny_file), context=context, prefix=prefix, **kwargs)
    got = generate_latents(load_model(tiny_file, dtype=DTYPES[model_dtype]), context=context,
                           prefix=prefix.to(torch.float16), **kwargs)
    assert got.dtype == torch.float32 and got.isfinite().all()
    assert relative(got, expected) < TOLERANCE[model_dtype]


# --- node chains ------------------------------------------------------------------------------

pack = comfy_executor.load_pack()
MAPPINGS = pack.NODE_CLASS_MAPPINGS


def run_node(node: str, **kwargs):
    cls = MAPPINGS[node]
    output = getattr(cls(), cls.FUNCTION)(**kwargs)
    return output["result"] if isinstance(output, dict) else output


def builtin_chain(dtype: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Loader -> text encode -> scheduler -> sampler -> decode -> prefix encode -> sampler again."""
    model, _ = run_node("ASDModelLoader", model_file="(built-in default)", dtype=dtype)
    (cond,) = run_node("ASDTextEncode", text="a red circle and a blue square")
    plan, _ = run_node("ASDStepScheduler", steps=1, first_chunk_steps=4, shift=5.0, spec="")
    sampler = dict(model=model, plan=plan, positive=cond, seed=4, frames=21, width=64, height=64, batch_size=1,
                   chunk_frames=0, context_noise=0.0, window_frames=0, cfg=1.0)
    (latent,) = run_node("ASDCausalSampler", **sampler)
    (images,) = run_node("ASDDecode", latent=latent)
    (prefix,) = run_node("ASDEncodeVideoPrefix", images=images, last_frames=9)
    (continued,) = run_node("ASDCausalSampler", **(sampler | dict(frames=9)), prefix=prefix, include_prefix=False)
    return images, continued["samples"]


@pytest.fixture(scope="module")
def builtin_float32():
    return builtin_chain("float32")


@pytest.mark.parametrize("dtype", LOW)
def test_builtin_node_chain_in_low_precision(builtin_float32, dtype):
    images, continued = builtin_chain(dtype)
    expected_images, expected_continued = builtin_float32
    assert images.dtype == torch.float32 and continued.dtype == torch.float32
    assert images.isfinite().all() and continued.isfinite().all()
    assert relative(images, expected_images) < TOLERANCE[dtype]
    assert relative(continued, expected_continued) < 2 * TOLERANCE[dtype]  # the prefix carries the first run's error


@pytest.fixture
def wan_file(tmp_path, monkeypatch):
    """A tiny transformer in ComfyUI's Wan layout (128-wide heads, as Wan files infer), in the models folder."""
    import safetensors.torch

    monkeypatch.setenv("ASD_MODELS_DIR", str(tmp_path))
    torch.manual_seed(5)
    config = tiny_config(num_attention_heads=1, attention_head_dim=128, chunk_frames=2)
    weights = diffusers_to_wan(CausalWanTransformer(config).state_dict(), prefix=COMFYUI_PREFIX)
    safetensors.torch.save_file({k: v.to(torch.bfloat16) for k, v in weights.items()}, tmp_path / "causal_wan.safetensors")
    return "causal_wan.safetensors"


def wan_chain(name: str, dtype: str) -> torch.Tensor:
    """Loader -> sampler with a float32 CONDITIONING, as core CLIPTextEncode gives it."""
    model, _ = run_node("ASDModelLoader", model_file=name, dtype=dtype)
    cond = [[torch.randn(1, 12, 32, generator=torch.Generator().manual_seed(6)), {}]]
    plan, _ = run_node("ASDStepScheduler", steps=2, first_chunk_steps=4, shift=5.0, spec="")
    (latent,) = run_node("ASDCausalSampler", model=model, plan=plan, positive=cond, seed=1, frames=21, width=32,
                         height=32, batch_size=1, chunk_frames=0, context_noise=0.0, window_frames=0, cfg=1.0)
    return latent["samples"]


@pytest.mark.parametrize("dtype", LOW)
def test_wan_layout_node_chain_in_low_precision(wan_file, dtype):
    expected = wan_chain(wan_file, "float32")
    got = wan_chain(wan_file, dtype)
    assert got.dtype == torch.float32 and got.isfinite().all()
    assert relative(got, expected) < TOLERANCE[dtype]


# --- command lines ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", LOW)
def test_generate_cli_in_low_precision(tmp_path, dtype):
    from asd_core.cli.generate import main
    from asd_core.video_io import read_video

    small = ["--frames", "21", "--plan", "1*", "--seed", "2"]
    assert main([*small, "--dtype", "float32", "--out", str(tmp_path / "fp32.webp")]) == 0
    assert main([*small, "--dtype", dtype, "--out", str(tmp_path / "low.webp")]) == 0
    expected = torch.from_numpy(read_video(tmp_path / "fp32.webp")).float()
    got = torch.from_numpy(read_video(tmp_path / "low.webp")).float()
    assert relative(got, expected) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", LOW)
def test_eval_cli_in_low_precision(capsys, dtype):
    import json

    from asd_core.cli.evaluate import main

    scores = {}
    for name in ("float32", dtype):
        assert main(["--num", "4", "--plan", "1", "--dtype", name, "--json"]) == 0
        scores[name] = json.loads(capsys.readouterr().out)
    assert scores[dtype]["model"].endswith(f", {dtype}")
    assert abs(scores[dtype]["total"] - scores["float32"]["total"]) < 0.02
