"""Key layouts: the real 1.3B key set converts diffusers <-> Wan2.1 one to one.

The reverse table (diffusers -> Wan) is ours; diffusers' converter (Wan -> diffusers) is the
independent reference it must invert. The Wan names are also checked against a literal list
of the original Wan2.1 module names.
"""

import pytest
import torch
from diffusers import WanTransformer3DModel

from asd_core.config import wan21_t2v_1_3b
from asd_core.layouts import (
    COMFYUI_PREFIX,
    detect_layout,
    diffusers_key_to_wan,
    diffusers_to_wan,
    to_diffusers,
    unwrap_self_forcing,
    wan_to_diffusers,
)

# Parameters of one original Wan2.1 WanAttentionBlock (norm1 / norm2 carry no weights there).
WAN_BLOCK_PARAMS = {
    "modulation",
    *(f"{attn}.{p}.{wb}" for attn in ("self_attn", "cross_attn") for p in "qkvo" for wb in ("weight", "bias")),
    *(f"{attn}.{n}.weight" for attn in ("self_attn", "cross_attn") for n in ("norm_q", "norm_k")),
    "norm3.weight", "norm3.bias",
    "ffn.0.weight", "ffn.0.bias", "ffn.2.weight", "ffn.2.bias",
}
WAN_TOP_PARAMS = {
    "patch_embedding.weight", "patch_embedding.bias",
    "text_embedding.0.weight", "text_embedding.0.bias", "text_embedding.2.weight", "text_embedding.2.bias",
    "time_embedding.0.weight", "time_embedding.0.bias", "time_embedding.2.weight", "time_embedding.2.bias",
    "time_projection.1.weight", "time_projection.1.bias",
    "head.head.weight", "head.head.bias", "head.modulation",
}


@pytest.fixture(scope="module")
def real_shapes():
    """diffusers key -> meta tensor of the real Wan2.1-T2V-1.3B (no memory used)."""
    with torch.device("meta"):
        model = WanTransformer3DModel(**wan21_t2v_1_3b().diffusers_kwargs())
    return dict(model.state_dict())


def shapes(state_dict):
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def test_real_1_3b_round_trip_is_one_to_one(real_shapes):
    wan = diffusers_to_wan(real_shapes)
    assert len(real_shapes) == len(wan) == 825  # 30 blocks x 27 + 15
    back = wan_to_diffusers(wan)
    assert shapes(back) == shapes(real_shapes)
    assert detect_layout(wan) == "wan" and detect_layout(real_shapes) == "diffusers"

    wan_shapes = shapes(wan)
    assert wan_shapes["blocks.29.self_attn.q.weight"] == (1536, 1536)
    assert wan_shapes["blocks.0.norm3.weight"] == (1536,)
    assert wan_shapes["blocks.0.cross_attn.norm_k.weight"] == (1536,)
    assert wan_shapes["head.modulation"] == (1, 2, 1536)
    assert wan_shapes["head.head.weight"] == (64, 1536)  # 16 channels x patch 1*2*2
    assert wan_shapes["blocks.0.modulation"] == (1, 6, 1536)
    assert wan_shapes["blocks.7.ffn.0.weight"] == (8960, 1536)
    assert wan_shapes["text_embedding.0.weight"] == (1536, 4096)
    assert wan_shapes["time_embedding.0.weight"] == (1536, 256)
    assert wan_shapes["time_projection.1.weight"] == (9216, 1536)
    assert wan_shapes["patch_embedding.weight"] == (1536, 16, 1, 2, 2)

    expected = WAN_TOP_PARAMS | {f"blocks.{i}.{p}" for i in range(30) for p in WAN_BLOCK_PARAMS}
    assert set(wan) == expected


def test_comfyui_prefix_round_trip(real_shapes):
    comfy = diffusers_to_wan(real_shapes, prefix=COMFYUI_PREFIX)
    assert "model.diffusion_model.blocks.3.cross_attn.o.weight" in comfy
    assert detect_layout(comfy) == "wan"
    converted, layout, entry = to_diffusers(comfy)
    assert (layout, entry) == ("wan", None)
    assert shapes(converted) == shapes(real_shapes)


def test_comfyui_all_in_one_file_keeps_only_the_diffusion_model(real_shapes):
    comfy = diffusers_to_wan(real_shapes, prefix=COMFYUI_PREFIX)
    comfy["first_stage_model.decoder.conv_in.weight"] = torch.empty(3, device="meta")
    converted, _, _ = to_diffusers(comfy)
    assert set(converted) == set(real_shapes)


def test_self_forcing_entries_and_wrappers():
    w = {"blocks.0.self_attn.q.weight": torch.zeros(2), "head.modulation": torch.zeros(1)}
    fsdp = {f"model._fsdp_wrapped_module.{k}": v for k, v in w.items()}
    ema = {f"model.{k}": v + 1 for k, v in w.items()}
    checkpoint = {"generator": fsdp, "generator_ema": ema, "critic": {"x": torch.zeros(1)}}
    assert detect_layout(checkpoint) == "self_forcing"

    sd, entry = unwrap_self_forcing(checkpoint)
    assert entry == "generator_ema" and set(sd) == set(w) and sd["head.modulation"].item() == 1
    sd, entry = unwrap_self_forcing(checkpoint, prefer_ema=False)
    assert entry == "generator" and set(sd) == set(w) and sd["head.modulation"].item() == 0
    for no_ema in ({"generator": fsdp}, {"generator": fsdp, "generator_ema": {}}, {"generator": fsdp, "generator_ema": None}):
        sd, entry = unwrap_self_forcing(no_ema)  # no EMA saved (yet): take the generator
        assert entry == "generator" and sd["head.modulation"].item() == 0

    assert detect_layout(fsdp) == "self_forcing"  # a bare generator state dict
    converted, layout, entry = to_diffusers(fsdp)
    assert layout == "self_forcing" and entry is None
    assert set(converted) == {"blocks.0.attn1.to_q.weight", "scale_shift_table"}


def test_unknown_layouts_are_refused():
    with pytest.raises(ValueError, match="not a Wan2.1 transformer checkpoint.*encoder.conv.weight"):
        detect_layout({"encoder.conv.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="not a Wan2.1 transformer"):
        detect_layout({})
    with pytest.raises(ValueError, match="add_k_proj.*image-conditioning"):
        diffusers_key_to_wan("blocks.0.attn2.add_k_proj.weight")
    with pytest.raises(ValueError, match="no Wan2.1 name"):
        diffusers_key_to_wan("proj_out.weight_scale")
