"""The shared reading of recorded reference runs, for the parity tests tests/test_reference_*.py.

Every family's recording (tests/data/reference/*_io.safetensors, written by
research/reference/record_*.py) ran the reference's own code on the tiny random weights of
self_forcing_weights.safetensors, and stores its tensors with the run's settings as metadata.
Here: where those files are, how one is read, our model at the recording's config, the layout
change from the reference's tensors to ours, and the tolerance every comparison uses. What a
family's reference does (its noise order, its sampler arguments) stays in that family's test file.
"""

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from asd_core.checkpoint import load_model
from asd_core.config import CausalWanConfig

DATA = Path(__file__).parent / "data" / "reference"
WEIGHTS = DATA / "self_forcing_weights.safetensors"
RELATIVE_TOLERANCE = 1e-4  # max abs difference / max abs of the reference
CLEARLY_DIFFERENT = 10 * RELATIVE_TOLERANCE  # what a negative check must exceed


def relative_difference(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours.float() - reference.float()).abs().max() / reference.float().abs().max())


def to_ours(frames_first: torch.Tensor) -> torch.Tensor:
    """The reference's (B, F, C, H, W) -> our (B, C, F, H, W)."""
    return frames_first.float().permute(0, 2, 1, 3, 4).contiguous()


def load_recording(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a recorded reference run."""
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    return tensors, metadata


def reference_config(metadata: dict[str, str], chunk_frames: int) -> CausalWanConfig:
    """Our config for the recording's tiny reference model (metadata["reference.model_config"]):
    its head size (32) is not Wan's 128, so the loader cannot infer it from shapes; text_len is
    the reference's (Wan's) 512."""
    ref = json.loads(metadata["reference.model_config"])
    return CausalWanConfig(
        num_layers=ref["num_layers"], num_attention_heads=ref["num_heads"],
        attention_head_dim=ref["dim"] // ref["num_heads"], ffn_dim=ref["ffn_dim"], in_channels=ref["in_dim"],
        out_channels=ref["out_dim"], text_dim=ref["text_dim"], freq_dim=ref["freq_dim"],
        patch_size=tuple(ref["patch_size"]), cross_attn_norm=ref["cross_attn_norm"], eps=ref["eps"],
        chunk_frames=chunk_frames, text_len=ref["text_len"],
    )


def tiny_reference_model(metadata: dict[str, str], chunk_frames: int):
    """Our model on self_forcing_weights.safetensors, at the recording's tiny reference config."""
    return load_model(WEIGHTS, config=reference_config(metadata, chunk_frames))
