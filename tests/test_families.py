"""Checkpoint families: each release's packaging, built from tiny weights, is recognised as its
family with its trained settings; LongLive's base + LoRA merges to what an unmerged adapter
computes; mismatched files fail with one-line errors that say what to do.

Fixtures are tiny (2 layers, width 128 so the config is inferred as for real files) and written
exactly as each family releases them (families.py names the repository and commit of each).
"""

import json

import pytest
import safetensors.torch
import torch

from asd_core.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from asd_core.cli.inspect import main as inspect_main
from asd_core.config import tiny_config
from asd_core.families import BY_NAME, FAMILIES, NAMES
from asd_core.layouts import COMFYUI_PREFIX, diffusers_key_to_wan, diffusers_to_wan
from asd_core.lora import merge_lora
from asd_core.model import CausalWanTransformer
from asd_core.schedule import parse_plan

CONFIG = tiny_config(num_attention_heads=1, attention_head_dim=128)  # 128-wide heads: inferable from shapes
RANK, ALPHA = 4, 8.0


@pytest.fixture(scope="module")
def weights():
    torch.manual_seed(0)
    return CausalWanTransformer(CONFIG).state_dict()


def generator(weights, offset=0.0, fsdp=False):
    """The generator wrapper's state dict: Wan names under `model.` (FSDP names optional)."""
    prefix = "model._fsdp_wrapped_module." if fsdp else "model."
    return {prefix + k: v + offset for k, v in diffusers_to_wan(weights).items()}


def training_dict(weights):
    """{"generator", "generator_ema"} as Self Forcing's trainer saves; the two entries differ by 1."""
    return {"generator": generator(weights, 1.0, fsdp=True), "generator_ema": generator(weights)}


def save_pt(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


# --- each release, as published, is recognised with its settings ------------------------------

RELEASES = [  # (file path as published, family, entry its own inference reads)
    ("checkpoints/self_forcing_dmd.pt", "self_forcing", "generator_ema"),
    ("autoregressive_checkpoint/model.pt", "causvid", "generator"),
    ("checkpoints/chunkwise/causal_forcing.pt", "causal_forcing_chunkwise", "generator"),
    ("checkpoints/framewise/causal_forcing.pt", "causal_forcing_framewise", "generator"),
    ("checkpoints/causal-forcing++/framewise-2step.pt", "causal_forcing_framewise_2step", "generator"),
    ("checkpoints/causal-forcing++/framewise-1step.pt", "causal_forcing_framewise_1step", "generator"),
    ("checkpoints/chunkwise/longvideo.pt", "causal_forcing_longvideo", "generator_ema"),
    ("checkpoints/rolling_forcing_dmd.pt", "rolling_forcing", "generator_ema"),
    ("checkpoints/Infinite-Forcing/self_forcing_dmd_vsink1.pt", "infinite_forcing", "generator_ema"),
    ("checkpoints/one_forcing.pt", "one_forcing", "generator"),
]


@pytest.mark.parametrize(("relative", "name", "entry"), RELEASES)
def test_training_dict_releases_are_recognised_by_name(tmp_path, weights, relative, name, entry):
    path = save_pt(tmp_path / relative, training_dict(weights))
    loaded = read_checkpoint(path)
    family = BY_NAME[name]
    assert (loaded.family, loaded.family_basis, loaded.entry) == (family, "file name", entry)
    assert loaded.config.chunk_frames == family.chunk_frames and loaded.plan == family.plan
    offset = 1.0 if entry == "generator" else 0.0
    assert torch.equal(loaded.state_dict["proj_out.weight"], weights["proj_out.weight"] + offset)


def test_trained_settings_as_the_references_configure_them():
    """The facts the references' configs state (families.py cites each), as our plans and windows."""
    cases = {
        "self_forcing": (3, (1000, 937.5, 833.3, 625), (0, None)),
        "causvid": (3, (1000, 757, 522), (0, None)),
        "causal_forcing_framewise": (1, (1000, 937.5, 833.3, 625), (0, None)),
        "causal_forcing_framewise_1step": (1, (1000,), (0, None)),
        "causal_forcing_framewise_2step": (1, (1000, 833.3), (0, None)),
        "longlive": (3, (1000, 937.5, 833.3, 625), (3, 12)),
        "rolling_forcing": (3, (1000, 952.4, 882.4, 769.2, 555.6), (3, 21)),
        "reward_forcing": (3, (1000, 937.5, 833.3, 625), (3, 9)),
        "infinite_forcing": (3, (1000, 937.5, 833.3, 625), (1, 6)),
        "one_forcing": (1, (1000,), (0, None)),
    }
    for name, (chunk, rest, window) in cases.items():
        family = BY_NAME[name]
        plan = parse_plan(family.plan)
        assert family.chunk_frames == chunk, name
        assert [round(t, 1) for t in plan.rest] == list(rest), name
        assert (family.sink_frames, family.max_cache_frames) == window, name
    assert parse_plan(BY_NAME["causal_forcing_framewise_2step"].plan).first == parse_plan("4").first  # FFE
    for name in ("one_forcing", "one_forcing_chunkwise"):  # scripts/infer.sh: a 4-step first block
        assert parse_plan(BY_NAME[name].plan).first == parse_plan("4").first, name


def test_shared_packaging_falls_back_and_family_names_it(tmp_path, weights):
    path = save_pt(tmp_path / "model.pt", training_dict(weights))
    loaded = read_checkpoint(path)
    assert (loaded.family.name, loaded.family_basis, loaded.entry) == ("self_forcing", "packaging", "generator_ema")
    loaded = read_checkpoint(path, family="causvid")
    assert (loaded.family.name, loaded.family_basis, loaded.entry) == ("causvid", "family=", "generator")
    assert loaded.plan == "rest=1000,757,522;shift=1"
    assert read_checkpoint(path, family="causvid", prefer_ema=True).entry == "generator_ema"  # explicit wins


def test_bare_generator_is_reward_forcing(tmp_path, weights):
    path = save_pt(tmp_path / "Reward-Forcing-T2V-1.3B" / "rewardforcing.pt", generator(weights))
    loaded = read_checkpoint(path)
    assert (loaded.family.name, loaded.family_basis, loaded.entry) == ("reward_forcing", "file name", None)
    assert (loaded.family.sink_frames, loaded.family.max_cache_frames, loaded.config.chunk_frames) == (3, 9, 3)
    assert read_checkpoint(save_pt(tmp_path / "gen.pt", generator(weights))).family_basis == "packaging"


def test_comfyui_causal_file(tmp_path, weights):
    path = tmp_path / "wan2.1_causal.safetensors"
    safetensors.torch.save_file(diffusers_to_wan(weights, prefix=COMFYUI_PREFIX), path,
                                metadata={"config": json.dumps({"transformer": {"causal_ar": True}})})
    loaded = read_checkpoint(path)
    assert (loaded.family.name, loaded.family_basis, loaded.source) == ("comfyui_causal", "metadata", "comfyui_causal")
    assert loaded.config.chunk_frames == 1 and loaded.plan == "4"  # ComfyUI's AR sampler default: frame-wise
    named = read_checkpoint(path, family="causal_forcing_chunkwise")
    assert named.config.chunk_frames == 3


def test_ours_and_plain_wan(tmp_path, weights):
    ours = read_checkpoint(save_checkpoint(tmp_path / "s.safetensors", weights, CONFIG, plan="2*"))
    assert (ours.family.name, ours.plan, ours.config.chunk_frames) == ("asd", "2*", CONFIG.chunk_frames)
    plain = tmp_path / "wan.safetensors"
    safetensors.torch.save_file(diffusers_to_wan(weights), plain)
    loaded = read_checkpoint(plain)
    assert loaded.family is None and loaded.plan is None
    assert read_checkpoint(plain, family="one_forcing").config.chunk_frames == 1


def test_every_family_has_facts_and_a_unique_name():
    assert NAMES[0] == "auto" and len(set(NAMES)) == len(NAMES) == len(FAMILIES) + 1
    for family in FAMILIES:
        parse_plan(family.plan)
        assert family.chunk_frames >= 1 and family.packagings
        if family.max_cache_frames:
            assert 0 <= family.sink_frames < family.max_cache_frames


# --- LongLive: base generator + LoRA, merged at load -------------------------------------------

TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
           "attn2.to_v", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2")  # every Linear of a block


def lora_adapters(weights, seed=5):
    """diffusers module -> (A, B), random, for every Linear of every block (LongLive's targets)."""
    torch.manual_seed(seed)
    adapters = {}
    for block in range(CONFIG.num_layers):
        for target in TARGETS:
            out_features, in_features = weights[f"blocks.{block}.{target}.weight"].shape
            adapters[f"blocks.{block}.{target}"] = (torch.randn(RANK, in_features) * 0.05,
                                                    torch.randn(out_features, RANK) * 0.05)
    return adapters


def peft_state_dict(adapters):
    """As get_peft_model_state_dict names them on LongLive's CausalWanModel (Wan names)."""
    state = {}
    for module, (down, up) in adapters.items():
        wan = diffusers_key_to_wan(f"{module}.weight").removesuffix(".weight")
        state[f"base_model.model.{wan}.lora_A.weight"] = down
        state[f"base_model.model.{wan}.lora_B.weight"] = up
    return state


def test_longlive_base_plus_lora_equals_unmerged_adapter_forward(tmp_path, weights):
    adapters = lora_adapters(weights)
    base = save_pt(tmp_path / "longlive_models" / "models" / "longlive_base.pt", {"generator": generator(weights)})
    lora = save_pt(tmp_path / "longlive_models" / "models" / "lora.pt",
                   {"generator_lora": peft_state_dict(adapters), "critic_lora": {}, "step": 3000})
    model = load_model(base, lora=lora, family="longlive")
    assert model.family.name == "longlive" and model.lora_file == str(lora)
    assert model.config.chunk_frames == 3 and model.trained_plan == "4"

    # Independent reference: the base model with each adapter applied at run time, as peft does
    # before merging: y = W x + b + (alpha / rank) * B (A x). LongLive's alpha == rank (256).
    reference = CausalWanTransformer(model.config).eval()
    reference.load_state_dict(weights)
    scale = BY_NAME["longlive"].lora_alpha / RANK
    modules = dict(reference.named_modules())
    for name, (down, up) in adapters.items():
        modules[name].register_forward_hook(
            lambda _m, inputs, output, d=down, u=up: output + scale * (inputs[0] @ d.t() @ u.t()))
    torch.manual_seed(1)
    x, context, t = torch.randn(1, 16, 3, 4, 4), torch.randn(1, 5, CONFIG.text_dim), torch.tensor([700.0])
    with torch.no_grad():
        expected, got = reference(x, t, context), model(x, t, context)
        plain = CausalWanTransformer(model.config).eval()
        plain.load_state_dict(weights)
        base_only = plain(x, t, context)
    assert ((got - expected).norm() / expected.norm()).item() < 1e-5
    assert ((base_only - expected).norm() / expected.norm()).item() > 1e-3  # the LoRA changes the output


def test_lora_alpha_scales_and_bare_peft_keys(weights):
    adapters = lora_adapters(weights, seed=2)
    bare = peft_state_dict(adapters)
    merged = merge_lora(weights, bare, alpha=ALPHA)
    down, up = adapters["blocks.1.ffn.net.2"]
    expected = weights["blocks.1.ffn.net.2.weight"] + (ALPHA / RANK) * up @ down
    assert torch.allclose(merged["blocks.1.ffn.net.2.weight"], expected, atol=1e-6)
    assert torch.equal(merged["proj_out.weight"], weights["proj_out.weight"])  # outside the blocks: untouched
    unscaled = merge_lora(weights, bare)  # no alpha recorded: alpha = rank
    assert torch.allclose(unscaled["blocks.1.ffn.net.2.weight"], weights["blocks.1.ffn.net.2.weight"] + up @ down,
                          atol=1e-6)


# --- mismatches: one line that says what was found and what to do ------------------------------

def one_line_error(call, *fragments):
    with pytest.raises((CheckpointError, ValueError)) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_mismatched_files_fail_in_one_line(tmp_path, weights):
    adapters = lora_adapters(weights)
    lora = save_pt(tmp_path / "lora.pt", peft_state_dict(adapters))
    base = save_pt(tmp_path / "longlive_base.pt", {"generator": generator(weights)})
    shared = save_pt(tmp_path / "model.pt", training_dict(weights))
    one_line_error(lambda: read_checkpoint(lora), "LoRA adapter", "base generator")
    one_line_error(lambda: read_checkpoint(base), "LongLive", "LoRA", "family=self_forcing")
    one_line_error(lambda: read_checkpoint(shared, family="longlive"), "base generator plus a LoRA")
    one_line_error(lambda: read_checkpoint(shared, family="self_forcing", lora=lora), "releases no LoRA")
    one_line_error(lambda: read_checkpoint(shared, family="wan22"), "unknown checkpoint family", "causvid")
    one_line_error(lambda: read_checkpoint(shared, family="comfyui_causal"), "training dict", "family=auto")
    assert read_checkpoint(base, family="self_forcing").family.name == "self_forcing"  # the base alone, on request

    wide = tiny_config(num_attention_heads=2, attention_head_dim=128)
    torch.manual_seed(0)
    other = save_pt(tmp_path / "other" / "longlive_base.pt",
                    {"generator": generator(CausalWanTransformer(wide).state_dict())})
    one_line_error(lambda: read_checkpoint(other, lora=lora), "another model size")
    broken = save_pt(tmp_path / "half_lora.pt", {k: v for k, v in peft_state_dict(adapters).items() if "lora_A" in k})
    one_line_error(lambda: read_checkpoint(base, lora=broken), "lack lora_A or lora_B")


def test_inspect_reports_the_family(tmp_path, weights, capsys):
    path = save_pt(tmp_path / "framewise" / "causal_forcing.pt", training_dict(weights))
    assert inspect_main([str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["family"]["family"] == "causal_forcing_framewise" and report["family"]["chunk_frames"] == 1
    assert report["family"]["recognised_by"] == "file name" and report["entry"] == "generator"
    assert report["config"]["chunk_frames"] == 1 and report["plan"] == "4"
    assert inspect_main([str(path), "--family", "nope"]) == 2
    assert "unknown checkpoint family" in capsys.readouterr().err
