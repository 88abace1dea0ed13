"""Random-weight models at any size, built the way the loader builds a real checkpoint.

The speed of a transformer does not depend on its weights' values, so the real-size benchmark
needs no 1.3B download. It must however hold the weights as `load_model` does (model dtype,
float32 for `FP32_PARAMETER_PATTERNS`: `cast_for_inference`), or it would time different kernels. The model is built
on the meta device and materialised directly on the target device in its final dtypes: no
float32 copy, no CPU copy, and no 19 s of random init at 1.3B on a CPU.
"""

from __future__ import annotations

import dataclasses

import torch

from ..attention import OffsetRotaryEmbedding
from ..config import CausalWanConfig
from ..model import CausalWanTransformer, cast_for_inference


def _fresh_rope(config: CausalWanConfig, device) -> OffsetRotaryEmbedding:
    """RoPE tables are non-persistent buffers computed in __init__: rebuild them on the device."""
    with torch.device(device):
        return OffsetRotaryEmbedding(config.attention_head_dim, config.patch_size, config.rope_max_seq_len)


def random_model(config: CausalWanConfig, *, device="cpu", dtype: torch.dtype = torch.bfloat16,
                 seed: int = 0) -> CausalWanTransformer:
    """An eval-mode, no-grad model with random weights, in the loader's dtype convention.

    Weights: N(0, 1/fan_in) for matrices (activations keep their scale through 30 blocks),
    ones for norm gains, zeros for biases; drawn on the device from `seed`.
    """
    with torch.device("meta"):
        model = cast_for_inference(CausalWanTransformer(config), dtype)  # free on meta
    model.to_empty(device=device)
    model.rope = _fresh_rope(config, device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2:
                param.normal_(0.0, (param[0].numel()) ** -0.5, generator=generator)
            elif "norm" in name and name.endswith("weight"):
                param.fill_(1.0)
            else:
                param.zero_()
    return model.eval().requires_grad_(False)


def bidirectional_view(model: CausalWanTransformer, frames: int) -> CausalWanTransformer:
    """The same weights (shared, no copy) as a model whose one chunk spans `frames` frames:
    its full forward is a plain bidirectional Wan forward, the many-step reference."""
    config = dataclasses.replace(model.config, chunk_frames=frames,
                                 rope_max_seq_len=max(model.config.rope_max_seq_len, frames))
    with torch.device("meta"):
        view = CausalWanTransformer(config)
    view.load_state_dict(model.state_dict(), strict=True, assign=True)
    view.rope = _fresh_rope(config, model.device)
    return view.eval().requires_grad_(False)


def compile_blocks(model: CausalWanTransformer, **options) -> CausalWanTransformer:
    """`torch.compile` each transformer block in place (regional compilation).

    Why blocks, not the whole model: identical blocks can reuse compiled code (parameters are
    graph inputs), the model's host-side logic (timestep checks, cache bookkeeping between
    blocks) stays eager, and the model object keeps its attributes for the sampler. Returns
    the same model.
    """
    for block in model.blocks:
        block.compile(**options)
    return model
