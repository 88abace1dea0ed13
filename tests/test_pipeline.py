"""`Pipeline.load`: the one place a model, its text encoder and its VAE are assembled and checked."""

import pytest
import torch

from asd_core.checkpoint import save_checkpoint
from asd_core.config import tiny_config
from asd_core.model import CausalWanTransformer
from asd_core.pipeline import Pipeline
from asd_core.toy.defaults import TOY, default_file


def test_builtin_default_and_a_file_with_the_builtin_encoder_and_vae(tmp_path):
    builtin = Pipeline.load(dtype=torch.bfloat16)
    assert builtin.trained and builtin.label.startswith("built-in default student")
    assert builtin.model.dtype == torch.bfloat16 and builtin.text_encoder.width == TOY.text_dim
    teacher = Pipeline.load(which="teacher")
    assert teacher.label.startswith("built-in default teacher")

    path = save_checkpoint(tmp_path / "mine.safetensors", builtin.model.float().state_dict(), builtin.model.config)
    mine = Pipeline.load(path, text_encoder=default_file("text_encoder"))
    assert mine.label == "mine.safetensors, built-in toy VAE"  # every built-in part it samples with is named
    assert Pipeline.load(path).label == "mine.safetensors, built-in toy text encoder and VAE"
    assert mine.text_encoder.width == TOY.text_dim


def test_parts_that_do_not_fit_are_refused_with_what_to_pass(tmp_path):
    config = tiny_config(text_dim=4096, chunk_frames=3)
    path = save_checkpoint(tmp_path / "wanlike.safetensors", CausalWanTransformer(config).state_dict(), config)
    with pytest.raises(ValueError, match="4096-dim text embeddings but the text encoder gives 64.*--text-encoder"):
        Pipeline.load(path)
    config = tiny_config(text_dim=64, in_channels=4, out_channels=4)
    path = save_checkpoint(tmp_path / "four.safetensors", CausalWanTransformer(config).state_dict(), config)
    with pytest.raises(ValueError, match="4-channel latents but the VAE makes 16"):
        Pipeline.load(path)
