"""The built-in default's own text encoder: a small transformer over the toy domain's caption words.

It gives the same contract as Wan's umt5 (`asd_core.text`): (B, L, D) embeddings with
padding positions zeroed, so the sampler and the trainer treat both alike; its vocabulary is
the domain's caption grammar (`CAPTION_VOCAB`), which is why it lives with the domain.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import safetensors
import safetensors.torch
import torch
import torch.nn as nn

from ..atomic import save_safetensors
from .domain import CAPTION_VOCAB

ECHO_LIMIT = 60  # characters of a prompt quoted in an error (a ComfyUI node shows the whole message)

PAD, UNK = "<pad>", "<unk>"
VOCAB = (PAD, UNK, *CAPTION_VOCAB)  # the default vocabulary: every word a caption of the domain can contain


@dataclass
class ToyTextConfig:
    width: int = 64  # = the transformer's text_dim
    max_length: int = 16  # tokens; the domain's longest caption has 14
    num_layers: int = 2
    num_heads: int = 4
    vocab: tuple[str, ...] = VOCAB  # ids are positions; 0 = <pad>, 1 = <unk>

    def __post_init__(self):
        self.vocab = tuple(self.vocab)
        if self.vocab[:2] != (PAD, UNK):
            raise ValueError(f"the vocabulary must start with {PAD!r}, {UNK!r}, got {list(self.vocab[:2])}")
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} must be divisible by num_heads {self.num_heads}")


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

    def unknown_words(self, text: str) -> list[str]:
        """Words of `text` this encoder has no embedding for (they become <unk>): worth a warning,
        since the built-in default then ignores them."""
        return list(dict.fromkeys(w for w in tokenize(text) if w not in self.index))

    def known_words(self) -> list[str]:
        return [w for w in self.config.vocab if w not in (PAD, UNK, ",")]

    @property
    def width(self) -> int:
        return self.config.width

    def token_ids(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) ids and (B, L) bool mask of real tokens; too-long prompts are an error."""
        ids = torch.zeros(len(texts), self.config.max_length, dtype=torch.long)
        for row, text in enumerate(texts):
            words = tokenize(text)
            if len(words) > self.config.max_length:
                raise ValueError(
                    f"prompt has {len(words)} tokens, the toy text encoder takes at most {self.config.max_length}: "
                    + (repr(text) if len(text) <= ECHO_LIMIT else f"{text[:ECHO_LIMIT]!r}... ({len(text)} characters)")
                )
            ids[row, : len(words)] = torch.tensor([self.index.get(w, self.index[UNK]) for w in words], dtype=torch.long)
        return ids.to(self.device), ids.to(self.device) != self.index[PAD]

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.token_embedding(ids) + self.position_embedding[: ids.shape[1]]  # (B, L, D)
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
        """safetensors with the config (vocabulary included) as JSON metadata; written atomically."""
        config = dataclasses.asdict(self.config)
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        save_safetensors(state, path, {"asd.text_config": json.dumps(config)})

    @classmethod
    def load(cls, path: str | os.PathLike, device="cpu") -> ToyTextEncoder:
        if not Path(path).is_file():
            raise FileNotFoundError(f"toy text encoder not found: {path}")
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if "asd.text_config" not in metadata:
            raise ValueError(f"{path} has no 'asd.text_config' metadata: it is not a toy text encoder file")
        encoder = cls(ToyTextConfig(**json.loads(metadata["asd.text_config"])))
        encoder.load_state_dict(safetensors.torch.load_file(str(path), device="cpu"))
        return encoder.to(device).eval()
