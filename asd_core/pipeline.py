"""A causal model with the text encoder and VAE it samples with, assembled in one place.

`Pipeline.load` is what `asd-generate` (and any script) calls: a checkpoint of any layout, or
the built-in default, plus a text encoder (a umt5 folder for real Wan, or a toy encoder file)
and a VAE (anything `vae.load_codec` reads). A toy checkpoint's own text encoder, written
beside it by `asd-train export`, is used unless another is given; pieces not given come from
the built-in default, and the three are checked to fit each other before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

TEXT_ENCODER_BESIDE = "text_encoder.safetensors"  # where an export puts the toy encoder trained with it


@dataclass
class Pipeline:
    model: torch.nn.Module  # CausalWanTransformer
    text_encoder: torch.nn.Module  # .encode(list[str]) -> (B, L, width), .width
    codec: object  # vae.LatentCodec
    label: str  # what was loaded, shown with every output (says UNTRAINED when it is)
    trained: bool = True

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, *, text_encoder: str | Path | None = None,
             vae: str | Path | None = None, device="cpu", dtype: torch.dtype = torch.float32,
             which: str = "student", family: str | None = None, lora: str | Path | None = None) -> Pipeline:
        """Load and check a pipeline; `which` picks the built-in model ("student" or "teacher").

        `family` names the checkpoint's release (None: recognised from the file) and `lora` a LoRA
        merged into it at load (LongLive); both need `checkpoint`.
        """
        if (family or lora) and not checkpoint:
            raise ValueError("family= and lora= describe a checkpoint file: pass checkpoint= too (the built-in "
                             "default is its own family)")
        beside = text_encoder_beside(checkpoint) if checkpoint and not text_encoder else None
        text_encoder = text_encoder or beside
        default = None
        if not (checkpoint and text_encoder and vae):
            from .toy.defaults import load_default_pipeline

            default = load_default_pipeline(device=device, dtype=dtype, which=which)

        if checkpoint:
            from .checkpoint import load_model

            model = load_model(checkpoint, device=device, dtype=dtype, family=family, lora=lora)
            label = Path(checkpoint).name + (f" + LoRA {Path(lora).name}" if lora else "")
        else:
            model, label = default.model, default.label
        encoder = load_text_encoder(text_encoder, device) if text_encoder else default.text_encoder
        if vae:
            from .vae import load_codec

            codec = load_codec(vae, device=device)
        else:
            codec = default.codec
        trained = default is None or default.trained
        if checkpoint and default is not None:
            builtin = [name for name, given in (("text encoder", text_encoder), ("VAE", vae)) if not given]
            if beside:
                label += ", its text encoder beside it"
            if builtin:
                label += f", built-in toy {' and '.join(builtin)}{'' if default.trained else ' (UNTRAINED)'}"
        check_parts_fit(model, encoder, codec)
        return cls(model, encoder, codec, label, trained)


def text_encoder_beside(checkpoint: str | Path) -> Path | None:
    """The toy text encoder a teacher export writes next to its model file, if there.

    A toy teacher trains its text encoder jointly, so a re-trained model only follows its prompts
    with the encoder trained beside it; the built-in one would map the same words elsewhere.
    """
    file = Path(checkpoint)
    beside = file.parent / TEXT_ENCODER_BESIDE
    return beside if file.is_file() and beside.is_file() else None


def is_toy_text_encoder(path: str | Path) -> bool:
    """A toy encoder is one `.safetensors` file; real Wan's umt5 is a folder (weights + tokenizer)."""
    path = Path(path)
    return path.is_file() and path.suffix == ".safetensors"


def load_text_encoder(path: str | Path, device) -> torch.nn.Module:
    """A umt5 folder (real Wan; bf16 on a GPU, float32 on the CPU) or a toy encoder `.safetensors`."""
    path = Path(path)
    if is_toy_text_encoder(path):
        from .toy.text_encoder import ToyTextEncoder

        return ToyTextEncoder.load(path, device=device)
    from .text import UMT5TextEncoder

    device = torch.device(device)
    return UMT5TextEncoder.from_pretrained(path, device=device,
                                           dtype=torch.float32 if device.type == "cpu" else torch.bfloat16)


def check_parts_fit(model, text_encoder, codec) -> None:
    """Text width and latent channels must agree; the message says which file to change."""
    text_dim = model.config.text_dim
    if text_encoder.width != text_dim:
        hint = ("pass --text-encoder with a local umt5-xxl folder (and --vae with the Wan 2.1 VAE)"
                if text_dim == 4096 else "use the text encoder the model was trained with")
        raise ValueError(f"the model takes {text_dim}-dim text embeddings but the text encoder gives "
                         f"{text_encoder.width}: {hint}")
    if codec.latent_channels != model.config.in_channels:
        raise ValueError(f"the model works on {model.config.in_channels}-channel latents but the VAE makes "
                         f"{codec.latent_channels}: use the Wan 2.1 VAE (16 channels)")
