"""Text conditioning for causal Wan: the umt5-xxl wrapper and ComfyUI CONDITIONING.

The contract every text encoder meets: (B, L, D) embeddings with padding positions zeroed, as
Wan's umt5 output is (`[B, 512, 4096]`). In ComfyUI the real embeddings come from the core
CLIPLoader (type "wan") + CLIPTextEncode and arrive through `conditioning_from_comfy`;
outside ComfyUI `UMT5TextEncoder` reads a local umt5-xxl folder. The built-in toy model's
own encoder, which meets the same contract, is `asd_core.toy.text_encoder.ToyTextEncoder`.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import torch

WAN_TEXT_LENGTH = 512  # tokens Wan pads every prompt to


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning: HTML entities unescaped, whitespace collapsed (ftfy first when installed)."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text)).strip()).strip()


class UMT5TextEncoder:
    """umt5-xxl as Wan uses it: tokens padded to 512, encoder output with padding zeroed.

    Matches diffusers' WanPipeline (`_get_t5_prompt_embeds`): the hidden states of the real
    tokens (end-of-sequence included), zeros after them. Output (B, max_length, d_model) =
    `[B, 512, 4096]` for umt5-xxl. Needs `transformers` (the `text` extra); imported lazily.
    """

    def __init__(self, model, tokenizer=None, max_length: int = WAN_TEXT_LENGTH):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, tokenizer_path: str | os.PathLike | None = None,
                        device="cpu", dtype: torch.dtype = torch.bfloat16,
                        max_length: int = WAN_TEXT_LENGTH) -> UMT5TextEncoder:
        """Load a local folder (never downloads).

        `path` is either a umt5 folder (config.json + weights, tokenizer files alongside or at
        `tokenizer_path`) or a Wan diffusers folder holding `text_encoder/` and `tokenizer/`
        (e.g. Wan2.1-T2V-1.3B-Diffusers).
        """
        path = Path(path)
        if path.is_file():
            raise ValueError(
                f"{path} is a single file; give a folder with config.json and the weights (google/umt5-xxl or the "
                "text_encoder/ folder of Wan2.1-T2V-1.3B-Diffusers). ComfyUI's single-file umt5 "
                "(models/text_encoders/) is read by ComfyUI's own CLIPLoader (type wan)"
            )
        if not path.is_dir():
            raise FileNotFoundError(f"text encoder folder not found: {path}")
        model_dir = path / "text_encoder" if (path / "text_encoder" / "config.json").is_file() else path
        if tokenizer_path is None:
            tokenizer_path = path / "tokenizer" if (path / "tokenizer").is_dir() else model_dir
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"no config.json in {model_dir}: not a transformers umt5 folder")
        try:
            from transformers import AutoTokenizer, UMT5EncoderModel
        except ImportError as err:
            raise ImportError("the umt5 text encoder needs transformers: pip install 'comfyui-asd[text]'") from err

        model = UMT5EncoderModel.from_pretrained(str(model_dir), local_files_only=True, torch_dtype=dtype)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path), local_files_only=True)
        except (OSError, ValueError) as err:
            raise ValueError(
                f"could not load the umt5 tokenizer from {tokenizer_path} ({err}); pass tokenizer_path= to a folder "
                "with tokenizer.json or spiece.model (sentencepiece needed for the latter)"
            ) from err
        return cls(model.to(device), tokenizer, max_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def width(self) -> int:
        return self.model.config.d_model

    @torch.no_grad()
    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) and attention mask (B, L), L <= max_length -> (B, max_length, D), padding zeroed."""
        if ids.ndim != 2 or ids.shape != mask.shape:
            raise ValueError(f"ids and mask must both be (B, L), got {tuple(ids.shape)} and {tuple(mask.shape)}")
        if ids.shape[1] > self.max_length:
            raise ValueError(f"{ids.shape[1]} tokens given, at most {self.max_length}: truncate the prompt")
        pad = self.max_length - ids.shape[1]
        pad_id = self.model.config.pad_token_id or 0
        ids = torch.nn.functional.pad(ids, (0, pad), value=pad_id).to(self.device)
        mask = torch.nn.functional.pad(mask.long(), (0, pad)).to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, max_length, D)
        return hidden * mask[..., None].to(hidden.dtype)

    def encode(self, texts: list[str] | str) -> torch.Tensor:
        """Prompts -> (B, max_length, D) as Wan computes them (cleaned, truncated, padding zeroed)."""
        if self.tokenizer is None:
            raise ValueError("this UMT5TextEncoder has no tokenizer; give token ids to encode_ids instead")
        texts = [texts] if isinstance(texts, str) else list(texts)
        tokens = self.tokenizer([clean_prompt(t) for t in texts], padding="max_length", max_length=self.max_length,
                                truncation=True, add_special_tokens=True, return_attention_mask=True,
                                return_tensors="pt")
        return self.encode_ids(tokens["input_ids"], tokens["attention_mask"])


def conditioning_from_comfy(conditioning) -> torch.Tensor:
    """ComfyUI CONDITIONING `[[tensor (B, L, D), {...}], ...]` -> the (B, L, D) text embeddings.

    Only the first entry is used (our sampler has no area/timestep conditioning); its
    tensor is what CLIPTextEncode produced (umt5: [1, 512, 4096], padding zeroed).
    """
    try:
        tensor = conditioning[0][0]
    except (TypeError, IndexError, KeyError):
        raise ValueError(
            "expected ComfyUI CONDITIONING ([[tensor, dict], ...]) from a text encode node, "
            f"got {type(conditioning).__name__}"
        ) from None
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"CONDITIONING tensor must be (B, tokens, dim), got {shape}")
    return tensor


def conditioning_to_comfy(context: torch.Tensor) -> list:
    """(B, L, D) text embeddings -> ComfyUI CONDITIONING `[[tensor, {}]]`."""
    return [[context, {}]]
