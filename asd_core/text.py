"""Text conditioning: the toy domain's own small encoder, and ComfyUI CONDITIONING.

Real Wan models take umt5-xxl embeddings `[B, 512, 4096]` with padding zeroed; in ComfyUI
those come from the core CLIPLoader (type "wan") + CLIPTextEncode and arrive here through
`conditioning_from_comfy`. The built-in toy model uses `ToyTextEncoder`: same output
contract (padding positions zeroed), a vocabulary of the synthetic domain's caption words.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass

import safetensors
import safetensors.torch
import torch
import torch.nn as nn

from .atomic import save_safetensors

from .toy.domain import CAPTION_VOCAB

PAD, UNK = "<pad>", "<unk>"


@dataclass
class ToyTextConfig:
    width: int = 64  # = the transformer's text_dim
    max_length: int = 16  # tokens; the domain's longest caption has 14
    num_layers: int = 2
    num_heads: int = 4
    vocab: tuple[str, ...] = (PAD, UNK, *CAPTION_VOCAB)


def tokenize(text: str) -> list[str]:
    """Lower-case words and commas; lenient: words outside the vocabulary become <unk> later."""
    return re.sub(r"\s*,\s*", " , ", text.strip().lower()).split()


class ToyTextEncoder(nn.Module):
    """Word embeddings + learned positions + a small transformer encoder -> (B, L, width).

    Trained with the teacher (the trainer's teacher stage); padding positions are zeroed, as
    ComfyUI's umt5 output is, so an empty prompt gives an all-zero (unconditional) context.
    """

    def __init__(self, config: ToyTextConfig | None = None):
        super().__init__()
        self.config = config or ToyTextConfig()
        c = self.config
        self.index = {word: i for i, word in enumerate(c.vocab)}
        self.token_embedding = nn.Embedding(len(c.vocab), c.width)
        self.position_embedding = nn.Parameter(torch.randn(c.max_length, c.width) * 0.02)
        layer = nn.TransformerEncoderLayer(c.width, c.num_heads, dim_feedforward=4 * c.width, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, c.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.width)

    @property
    def device(self) -> torch.device:
        return self.token_embedding.weight.device

    def token_ids(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) ids and (B, L) bool mask of real tokens; too-long prompts are an error."""
        ids = torch.zeros(len(texts), self.config.max_length, dtype=torch.long)
        for row, text in enumerate(texts):
            words = tokenize(text)
            if len(words) > self.config.max_length:
                raise ValueError(
                    f"prompt has {len(words)} tokens, the toy text encoder takes at most {self.config.max_length}: "
                    f"{text!r}"
                )
            ids[row, : len(words)] = torch.tensor([self.index.get(w, self.index[UNK]) for w in words], dtype=torch.long)
        return ids.to(self.device), ids.to(self.device) != self.index[PAD]

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.token_embedding(ids) + self.position_embedding[: ids.shape[1]]
        # An all-padding row would make attention undefined: let it attend to itself, then zero it.
        key_padding = ~mask
        key_padding[~mask.any(dim=1), 0] = False
        hidden = self.norm(self.encoder(hidden, src_key_padding_mask=key_padding))
        return hidden * mask[..., None]

    def encode(self, texts: list[str] | str) -> torch.Tensor:
        """Prompts -> (B, max_length, width) embeddings with padding zeroed."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self(*self.token_ids(texts))

    def save(self, path: str | os.PathLike) -> None:
        config = dataclasses.asdict(self.config)
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        save_safetensors(state, path, {"asd.text_config": json.dumps(config)})

    @classmethod
    def load(cls, path: str | os.PathLike, device="cpu") -> "ToyTextEncoder":
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if "asd.text_config" not in metadata:
            raise ValueError(f"{path} has no 'asd.text_config' metadata: it is not a toy text encoder file")
        values = json.loads(metadata["asd.text_config"])
        values["vocab"] = tuple(values["vocab"])
        encoder = cls(ToyTextConfig(**values))
        encoder.load_state_dict(safetensors.torch.load_file(str(path), device="cpu"))
        return encoder.to(device).eval()


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
