"""Text conditioning: the toy domain's own small encoder, umt5-xxl for real Wan, ComfyUI CONDITIONING.

All three produce the same contract: (B, L, D) embeddings with padding positions zeroed, as
Wan's umt5 output is (`[B, 512, 4096]`). In ComfyUI the real embeddings come from the core
CLIPLoader (type "wan") + CLIPTextEncode and arrive through `conditioning_from_comfy`;
outside ComfyUI `UMT5TextEncoder` reads a local umt5-xxl folder. The built-in toy model uses
`ToyTextEncoder`: a vocabulary of the synthetic domain's caption words.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import safetensors
import safetensors.torch
import torch
import torch.nn as nn

from .atomic import save_safetensors

PAD, UNK = "<pad>", "<unk>"
WAN_TEXT_LENGTH = 512  # tokens Wan pads every prompt to


def _toy_vocab() -> tuple[str, ...]:
    from .toy.domain import CAPTION_VOCAB

    return (PAD, UNK, *CAPTION_VOCAB)


@dataclass
class ToyTextConfig:
    width: int = 64  # = the transformer's text_dim
    max_length: int = 16  # tokens; the domain's longest caption has 14
    num_layers: int = 2
    num_heads: int = 4
    vocab: tuple[str, ...] = field(default_factory=_toy_vocab)  # ids are positions; 0 = <pad>, 1 = <unk>

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
                    f"{text!r}"
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
