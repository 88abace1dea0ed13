"""Checkpoint files: every supported layout reads back to the same tensors; bad files fail clearly.

Files are tiny (2 layers) and written in the real layouts: ours, plain diffusers, ComfyUI's
`model.diffusion_model.` Wan names (with its causal_ar metadata) and Self Forcing `.pt`.
"""

import argparse
import dataclasses
import json
import os
import re

import pytest
import safetensors.torch
import torch
from diffusers import WanTransformer3DModel
from safetensors import safe_open

from asd_core.checkpoint import (
    FORMAT,
    CheckpointError,
    infer_config,
    load_model,
    read_checkpoint,
    save_checkpoint,
    save_comfyui_checkpoint,
    validate_state_dict,
)
from asd_core.cli.inspect import main as inspect_main
from asd_core.config import tiny_config
from asd_core.layouts import COMFYUI_PREFIX, diffusers_to_wan
from asd_core.model import FP32_PARAMETER_PATTERNS, CausalWanTransformer

CONFIG = tiny_config()  # width 64 (2 heads x 32): its heads cannot be inferred from shapes
WAN_SHAPED = tiny_config(num_attention_heads=1, attention_head_dim=128)  # width 128: can


def random_state_dict(config, seed=0):
    torch.manual_seed(seed)
    return CausalWanTransformer(config).state_dict()


@pytest.fixture(scope="module")
def weights():
    return random_state_dict(CONFIG)


def assert_same_tensors(got, expected):
    assert set(got) == set(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


# --- every layout reads back -------------------------------------------------------------------

def test_ours_round_trip(tmp_path, weights):
    transposed = dict(weights, **{"proj_out.weight": weights["proj_out.weight"].t().contiguous().t()})
    assert not transposed["proj_out.weight"].is_contiguous()  # safetensors alone would refuse it
    path = save_checkpoint(tmp_path / "student.safetensors", transposed, CONFIG, plan="1*", extra={"asd.step": "1200"})
    loaded = read_checkpoint(path)
    assert (loaded.layout, loaded.source, loaded.plan, loaded.entry) == ("diffusers", "asd", "1*", None)
    assert loaded.config == CONFIG
    assert loaded.metadata["asd.format"] == FORMAT and loaded.metadata["asd.step"] == "1200"
    assert json.loads(loaded.metadata["asd.config"])["num_attention_heads"] == 2
    assert_same_tensors(loaded.state_dict, weights)


def test_plain_diffusers_safetensors(tmp_path, weights):
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    safetensors.torch.save_file(weights, path)
    loaded = read_checkpoint(path, config=CONFIG)
    assert (loaded.layout, loaded.source, loaded.plan, loaded.config) == ("diffusers", "foreign", None, CONFIG)
    assert_same_tensors(loaded.state_dict, weights)


def test_comfyui_causal_file_infers_config_and_chunk_size(tmp_path):
    weights = random_state_dict(WAN_SHAPED)
    path = tmp_path / "causal_wan.safetensors"
    causal = {"transformer": {"causal_ar": True, "num_frame_per_block": 3}}
    bf16 = {k: v.to(torch.bfloat16) for k, v in diffusers_to_wan(weights, prefix=COMFYUI_PREFIX).items()}
    safetensors.torch.save_file(bf16, path, metadata={"config": json.dumps(causal)})
    loaded = read_checkpoint(path)  # no config given: inferred from shapes, chunk size from metadata
    assert (loaded.layout, loaded.source) == ("wan", "comfyui_causal")
    assert loaded.config.num_attention_heads == 1 and loaded.config.attention_head_dim == 128
    assert loaded.config.chunk_frames == 3
    assert_same_tensors(loaded.state_dict, {k: v.to(torch.bfloat16) for k, v in weights.items()})


def test_infer_config_recovers_every_shape_field():
    weights = random_state_dict(WAN_SHAPED)
    inferred = infer_config(weights)
    # Not in the weights: RoPE length and chunk size; text_len is Wan's umt5 padding for every foreign file.
    assert inferred == dataclasses.replace(WAN_SHAPED, rope_max_seq_len=1024, chunk_frames=3, text_len=512)
    with pytest.raises(CheckpointError, match="width 64 is not a multiple of Wan's head size 128.*config="):
        infer_config(random_state_dict(CONFIG))


def test_self_forcing_pt_prefers_ema(tmp_path, weights):
    wan = diffusers_to_wan(weights)
    ema_weights = {k: v + 1 for k, v in weights.items()}
    checkpoint = {
        "generator": {f"model._fsdp_wrapped_module.{k}": v for k, v in wan.items()},
        "generator_ema": {f"model.{k}": v for k, v in diffusers_to_wan(ema_weights).items()},
        "step": 600,
    }
    path = tmp_path / "self_forcing_dmd.pt"
    torch.save(checkpoint, path)
    loaded = read_checkpoint(path, config=CONFIG)
    assert (loaded.layout, loaded.entry, loaded.metadata) == ("self_forcing", "generator_ema", {})
    assert_same_tensors(loaded.state_dict, ema_weights)
    loaded = read_checkpoint(path, config=CONFIG, prefer_ema=False)
    assert loaded.entry == "generator"
    assert_same_tensors(loaded.state_dict, weights)


def test_wan_pth_without_prefix(tmp_path, weights):
    path = tmp_path / "wan.pth"
    torch.save(diffusers_to_wan(weights), path)
    loaded = read_checkpoint(path, config=CONFIG)
    assert loaded.layout == "wan"
    assert_same_tensors(loaded.state_dict, weights)


def test_comfyui_export_reads_back_fully(tmp_path, weights):
    path = save_comfyui_checkpoint(tmp_path / "asd_comfy.safetensors", weights, CONFIG, plan="2*")
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["config"]) == {"transformer": {"causal_ar": True}}
        assert "model.diffusion_model.blocks.1.self_attn.q.weight" in set(f.keys())
    loaded = read_checkpoint(path)
    assert (loaded.layout, loaded.source, loaded.plan, loaded.config) == ("wan", "asd", "2*", CONFIG)
    assert_same_tensors(loaded.state_dict, weights)


# --- the loaded model -------------------------------------------------------------------------

def test_load_model_from_wan_file_matches_diffusers_reference(tmp_path, weights):
    """A ComfyUI/Wan file, through our converter, computes what diffusers computes on the originals."""
    path = tmp_path / "wan.safetensors"
    safetensors.torch.save_file(diffusers_to_wan(weights, prefix=COMFYUI_PREFIX), path)
    model = load_model(path, config=CONFIG, chunk_frames=4)  # chunk >= frames: bidirectional
    reference = WanTransformer3DModel(**CONFIG.diffusers_kwargs()).eval()
    reference.load_state_dict(weights)
    torch.manual_seed(1)
    x, context, t = torch.randn(1, 16, 4, 4, 4), torch.randn(1, 5, CONFIG.text_dim), torch.tensor([700.0])
    with torch.no_grad():
        expected = reference(x, t, context).sample
        got = model(x, t, context)
    assert ((got - expected).norm() / expected.norm()).item() < 1e-6
    assert model.checkpoint_layout == "wan" and model.trained_plan is None and model.config.chunk_frames == 4


def test_load_model_dtype_and_attributes(tmp_path, weights):
    path = save_checkpoint(tmp_path / "student.safetensors", weights, CONFIG, plan="4")
    model = load_model(path, dtype=torch.bfloat16)
    assert not model.training and model.trained_plan == "4" and model.checkpoint_layout == "diffusers"
    assert model.config == CONFIG
    for name, param in model.named_parameters():
        keep = any(p in name for p in ("time_embedder", "time_proj", "scale_shift_table", "norm1", "norm2", "norm3",
                                       "norm_q", "norm_k"))
        assert param.dtype == (torch.float32 if keep else torch.bfloat16), name
        assert not param.requires_grad
        assert torch.equal(param.float(), weights[name].to(param.dtype).float()), name
    assert set(FP32_PARAMETER_PATTERNS) >= {"time_embedder", "norm_q", "norm2"}
    assert model.patch_embedding.weight.dtype == torch.bfloat16
    assert model.blocks[0].attn1.norm_q.weight.dtype == torch.float32


# --- errors ------------------------------------------------------------------------------------

def test_missing_key(tmp_path, weights):
    partial = {k: v for k, v in weights.items() if k != "blocks.1.ffn.net.2.bias"}
    path = tmp_path / "partial.safetensors"
    safetensors.torch.save_file(partial, path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path, config=CONFIG)
    message = str(err.value)
    assert "layout guessed: diffusers" in message
    assert "1 missing: blocks.1.ffn.net.2.bias (64,)" in message
    assert "truncated or partial" in message and "partial.safetensors" in message


def test_unexpected_key(tmp_path, weights):
    extra = dict(weights, **{"blocks.0.attn2.add_k_proj.weight": torch.zeros(64, 64)})
    path = tmp_path / "i2v.safetensors"
    safetensors.torch.save_file(extra, path)
    with pytest.raises(CheckpointError, match=r"1 unexpected: blocks.0.attn2.add_k_proj.weight \(64, 64\).*image-to-video"):
        read_checkpoint(path, config=CONFIG)


def test_misshaped_tensors_name_both_shapes(tmp_path, weights):
    path = tmp_path / "small.safetensors"
    safetensors.torch.save_file(diffusers_to_wan(weights), path)
    bigger = tiny_config(ffn_dim=256)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path, config=bigger)
    message = str(err.value)
    assert "layout guessed: wan" in message and "ffn 256" in message
    assert "6 mis-shaped: blocks.0.ffn.net.0.proj.weight file (128, 64) vs model (256, 64)" in message
    assert "different model size" in message
    assert message.count(" vs model ") == 5  # 6 wrong (3 per block), 5 listed


def test_at_most_five_keys_listed(weights):
    with pytest.raises(CheckpointError) as err:
        validate_state_dict({}, CONFIG, "diffusers")
    message = str(err.value)
    assert f"{len(weights)} missing: " in message
    listed = re.findall(r"([\w.]+) \(", message.split("missing: ")[1].split(". Hint")[0])
    assert listed == list(weights)[:5]


def test_non_wan_safetensors(tmp_path):
    path = tmp_path / "vae.safetensors"
    safetensors.torch.save_file({"encoder.conv1.weight": torch.zeros(4, 3, 3, 3)}, path)
    with pytest.raises(CheckpointError, match="not a Wan2.1 transformer checkpoint.*encoder.conv1.weight"):
        read_checkpoint(path)


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "trainer_state.pt"
    torch.save({"generator": {}, "args": argparse.Namespace(lr=1e-5)}, path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert "weights_only=True" in message and "argparse.Namespace" in message
    assert "never unpickled" in message and ".safetensors" in message
    assert "weights_only=False" not in message and "\x1b" not in message  # none of torch's unsafe advice


def test_pt_holding_a_tensor_is_refused(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="holds a Tensor, not a state dict"):
        read_checkpoint(path)


def test_unknown_extension_and_missing_file(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"model.bin.*\.safetensors, \.pt, \.pth"):
        read_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "nope.safetensors")


def test_truncated_safetensors(tmp_path, weights):
    path = save_checkpoint(tmp_path / "cut.safetensors", weights, CONFIG)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_checkpoint(path)


def test_save_refuses_bad_input(tmp_path, weights):
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "a.safetensors", weights, CONFIG, plan="fast please")
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "a.safetensors", weights, CONFIG, extra={"asd.plan": "4"})
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_checkpoint(tmp_path / "a.pt", weights, CONFIG)
    with pytest.raises(CheckpointError, match="mis-shaped"):
        save_checkpoint(tmp_path / "a.safetensors", weights, tiny_config(text_dim=48))
    assert list(tmp_path.iterdir()) == []


def test_newer_format_is_refused(tmp_path, weights):
    path = tmp_path / "future.safetensors"
    safetensors.torch.save_file(weights, path, metadata={"asd.format": "comfyui-asd/9", "asd.config": CONFIG.to_json()})
    with pytest.raises(CheckpointError, match="comfyui-asd/9.*Update"):
        read_checkpoint(path)


# --- atomic writes -----------------------------------------------------------------------------

def test_failed_save_keeps_previous_file_and_leaves_no_temp(tmp_path, weights, monkeypatch):
    path = save_checkpoint(tmp_path / "student.safetensors", weights, CONFIG, plan="4")
    before = path.read_bytes()
    written = []

    def failing_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        written.append(filename)
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {k: v + 1 for k, v in weights.items()}, CONFIG, plan="1*")
    assert written and os.path.dirname(written[0]) == str(tmp_path)  # the temp file was in the same dir
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.safetensors"]
    assert read_checkpoint(path).plan == "4"


# --- asd-inspect -------------------------------------------------------------------------------

def test_inspect_prints_json(tmp_path, weights, capsys):
    path = save_checkpoint(tmp_path / "student.safetensors", weights, CONFIG, plan="1*")
    assert inspect_main([str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layout"] == "diffusers" and report["plan"] == "1*" and report["source"] == "asd"
    assert report["config"]["num_layers"] == 2 and report["config"]["patch_size"] == [1, 2, 2]
    assert report["parameters"] == sum(v.numel() for v in weights.values())
    assert report["dtypes"] == {"float32": len(weights)}
    assert report["metadata_keys"] == ["asd.config", "asd.format", "asd.plan"]


def test_inspect_foreign_file_with_config_option(tmp_path, weights, capsys):
    path = tmp_path / "wan.safetensors"
    safetensors.torch.save_file(diffusers_to_wan(weights), path)
    assert inspect_main([str(path), "--config", CONFIG.to_json()]) == 0
    assert json.loads(capsys.readouterr().out)["layout"] == "wan"


def test_inspect_bad_file_exits_2_without_traceback(tmp_path, capsys):
    path = tmp_path / "vae.safetensors"
    safetensors.torch.save_file({"encoder.conv1.weight": torch.zeros(1)}, path)
    for argv in ([str(path)], [str(tmp_path / "missing.pt")], [str(path.with_suffix(".ckpt"))]):
        assert inspect_main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.startswith("asd-inspect: error:")
        assert "Traceback" not in captured.err


# --- crafted metadata and damaged files (issue 25 items 5 and 7) -----------------------------------

def _with_config(tmp_path, weights, **changes):
    config = json.loads(CONFIG.to_json())
    config.update(changes)
    path = tmp_path / "crafted.safetensors"
    safetensors.torch.save_file(weights, path, metadata={"asd.format": FORMAT, "asd.config": json.dumps(config)})
    return path


@pytest.mark.parametrize("changes, message", [
    (dict(num_layers=10000000), r"num_layers must be a whole number in \[1, 1000\], got 10000000"),
    (dict(num_layers=900), r"the model config says num_layers 900 but the file holds 2 transformer blocks"),
    (dict(num_attention_heads="2"), r"num_attention_heads must be a whole number in \[1, 1024\], got '2' \(str\)"),
    (dict(num_attention_heads=-2), r"num_attention_heads must be a whole number .* got -2"),
    (dict(num_layers=2.0), r"num_layers must be a whole number .* got 2.0 \(float\)"),
    (dict(patch_size=[1, 2]), r"patch_size must be 3 whole numbers"),
    (dict(patch_size=[1, "2", 2]), r"patch_size must be a whole number"),
    (dict(cross_attn_norm="yes"), r"cross_attn_norm must be true or false"),
    (dict(eps=float("inf")), r"eps must be a number in \(0, 1\)"),
    (dict(rope_max_seq_len=10**9), r"rope_max_seq_len must be a whole number in \[1, 65536\]"),
])
def test_crafted_metadata_is_refused_before_any_model_is_built(tmp_path, weights, monkeypatch, changes, message):
    import asd_core.checkpoint as checkpoint

    built = []
    monkeypatch.setattr(checkpoint, "_expected_shapes", lambda *a: built.append(1) or {})
    for read in (read_checkpoint, checkpoint.read_config):
        with pytest.raises(CheckpointError, match=message):
            read(_with_config(tmp_path, weights, **changes))
    assert built == []  # refused from the metadata and the tensor shapes alone
    assert inspect_main([str(_with_config(tmp_path, weights, **changes))]) == 2


def test_metadata_of_another_model_size_names_the_mis_shaped_tensors(tmp_path, weights):
    with pytest.raises(CheckpointError, match=r"mis-shaped: condition_embedder.text_embedder.linear_1.weight file "
                                              r"\(64, 32\) vs model \(64, 48\)"):
        read_checkpoint(_with_config(tmp_path, weights, text_dim=48))


def test_metadata_that_is_not_an_object_is_a_clear_error(tmp_path, weights):
    path = tmp_path / "list.safetensors"
    safetensors.torch.save_file(weights, path, metadata={"asd.format": FORMAT, "asd.config": "[1, 2]"})
    with pytest.raises(CheckpointError, match="a model config is a JSON object of fields, got list"):
        read_checkpoint(path)


def test_block_indices_must_run_from_zero():
    """A foreign file's layer count is inferred from its keys: one key `blocks.10000000.` must not
    make a 10-million-layer model."""
    sparse = {k.replace("blocks.1.", "blocks.10000000."): v for k, v in random_state_dict(WAN_SHAPED).items()}
    with pytest.raises(CheckpointError, match=r"block indices are not 0..N-1 \(found 0, 10000000\)"):
        infer_config(sparse)


def test_a_directory_is_reported_as_a_directory(tmp_path, weights):
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file: it holds no .safetensors"):
        read_checkpoint(tmp_path)
    save_checkpoint(tmp_path / "inside.safetensors", weights, CONFIG)
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file: pass one of the files in it: "
                                              "inside.safetensors"):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize("cut", [0, 100, 0.5])
def test_truncated_pt_is_reported_as_truncated_not_as_pickled_objects(tmp_path, weights, cut):
    path = tmp_path / "cut.pt"
    torch.save(weights, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(cut * len(data)) if isinstance(cut, float) else cut])
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    message = str(error.value)
    assert ("is empty" if cut == 0 else "is truncated or corrupt") in message and "pickled" not in message
    assert "save it again" in message


def test_read_config_reads_only_the_header(tmp_path, weights):
    path = save_checkpoint(tmp_path / "s.safetensors", weights, CONFIG, plan="2*")
    header = read_checkpoint(path, tensors=False)
    assert header.config == CONFIG and header.plan == "2*"
    assert all(t.device.type == "meta" for t in header.state_dict.values())
