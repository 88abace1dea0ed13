"""Nodes for the built-in default model's own text encoder and VAE.

Real Wan checkpoints use ComfyUI's CLIPLoader (umt5, type wan) / CLIPTextEncode /
VAEEncode / VAEDecode instead; the LATENT these nodes read and write is in the same raw
space, so either side can be swapped for the other with the matching model.
"""

from __future__ import annotations

import logging

import torch
from einops import rearrange

from ..asd_core.toy.defaults import DEFAULT_PROMPT
from ..asd_core.toy.domain import BUILTIN_WORDS
from . import host
from .loader import default_pipeline
from .sampler import FRAMES_PER_LATENT, PIXELS_PER_LATENT


class ASDTextEncode:
    DESCRIPTION = (
        "Encodes a prompt with the built-in default model's own small text encoder "
        "(it knows the names of the shapes and colours it was trained on). For Wan checkpoints use "
        "CLIPLoader (umt5_xxl, type wan) + CLIPTextEncode instead."
    )
    CATEGORY = "ASD/built-in"
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Text conditioning for the ASD Causal Sampler with the built-in default model.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text": ("STRING", {
                    "default": DEFAULT_PROMPT, "multiline": True,
                    "tooltip": "What the video shows, e.g. 'a red circle and a blue square'. The built-in "
                               f"model knows only these words: {BUILTIN_WORDS}; others are ignored (a warning "
                               "is logged). At one step it draws circles more reliably than squares.",
                }),
            }
        }

    def encode(self, text: str):
        from ..asd_core.text import conditioning_to_comfy

        pipeline = default_pipeline()
        unknown = pipeline.text_encoder.unknown_words(text)
        if unknown:
            logging.warning("ASD Text Encode: the built-in text encoder does not know %s; it knows: %s",
                            ", ".join(map(repr, unknown[:8])), BUILTIN_WORDS)
        with torch.no_grad():
            context = pipeline.text_encoder.encode([text])  # (1, L, D)
        return (conditioning_to_comfy(context),)


def _images_from_video(video: torch.Tensor) -> torch.Tensor:
    """(B, 3, F, H, W) in [-1, 1] -> ComfyUI IMAGE (B*F, H, W, 3) in [0, 1]."""
    return rearrange((video.float().clamp(-1, 1) + 1) / 2, "b c f h w -> (b f) h w c").cpu()


class ASDDecode:
    DESCRIPTION = (
        "Decodes a LATENT from the ASD Causal Sampler into frames with the built-in default model's VAE, "
        "chunk by chunk (streaming, constant memory per chunk). For Wan checkpoints use VAELoader + VAEDecode."
    )
    CATEGORY = "ASD/built-in"
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("Video frames [frames, height, width, 3] in 0..1; a batch of videos is laid out one after another.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": ("LATENT", {"tooltip": "Video latent from the ASD Causal Sampler."})}}

    def decode(self, latent):
        from ..asd_core.vae import from_raw

        samples = _video_latent(latent, "latent")
        pipeline = default_pipeline()
        latents = from_raw(samples)
        spans = _chunk_spans(latents.shape[2], pipeline.model.config.chunk_frames)
        progress = host.Progress(len(spans))
        pieces = []
        with pipeline.codec.decode_stream() as stream:  # the VAE's causal cache carries across chunks
            for done, (start, stop) in enumerate(spans, start=1):
                host.check_interrupted()  # Cancel between chunks; ComfyUI's exception propagates as is
                pieces.append(stream.push(latents[:, :, start:stop]))
                progress.update(done)  # inside ComfyUI also an interrupt point
        return (_images_from_video(torch.cat(pieces, dim=2)),)


class ASDEncodeVideoPrefix:
    DESCRIPTION = (
        "Encodes frames of a video (e.g. Load Video -> Get Video Components) with the built-in default "
        "model's VAE into a prefix LATENT the ASD Causal Sampler continues. For Wan checkpoints use VAEEncode."
    )
    CATEGORY = "ASD/built-in"
    FUNCTION = "encode"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("prefix",)
    OUTPUT_TOOLTIPS = ("Prefix latent [1, 16, T, H/8, W/8] (raw VAE space) for the sampler's prefix input.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Frames [N, H, W, 3] in 0..1; height and width multiples of 16."}),
                "last_frames": ("INT", {
                    "default": 0, "min": 0, "max": 4097,
                    "tooltip": "Use only the last this many frames as the prefix (0 = all). The count used is "
                               "rounded down to 1 + 4*k, what the VAE packs into whole latent frames.",
                }),
            }
        }

    def encode(self, images, last_frames: int):
        from ..asd_core.vae import to_raw

        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError("images must be a ComfyUI IMAGE [frames, height, width, 3]")
        count, height, width, _ = images.shape
        if height % 16 or width % 16:
            raise ValueError(
                f"frames are {width}x{height}; width and height must be multiples of 16: resize or crop first "
                f"(e.g. to {max(16, width // 16 * 16)}x{max(16, height // 16 * 16)})"
            )
        if last_frames < 0:
            raise ValueError(f"last_frames must be >= 0 (0 = all), got {last_frames}")
        usable = min(count, last_frames) if last_frames else count
        usable = (usable - 1) // FRAMES_PER_LATENT * FRAMES_PER_LATENT + 1
        frames = images[count - usable :]
        video = rearrange(frames.float() * 2 - 1, "f h w c -> 1 c f h w")
        pipeline = default_pipeline()
        latents = _encode_in_chunks(pipeline.codec, video, pipeline.model.config.chunk_frames)
        samples = to_raw(latents).float().cpu()  # (1, 16, T, H/8, W/8)
        assert samples.shape[3:] == (height // PIXELS_PER_LATENT, width // PIXELS_PER_LATENT)
        return ({"samples": samples},)


class ASDEncodeStartImage:
    DESCRIPTION = (
        "Encodes a start image with the built-in default model's VAE into the start_latent the ASD Causal "
        "Sampler begins the video with (image to video). For Wan checkpoints use VAEEncode with the Wan VAE."
    )
    CATEGORY = "ASD/built-in"
    FUNCTION = "encode"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("start_latent",)
    OUTPUT_TOOLTIPS = ("Start latent [1, 16, 1, H/8, W/8] (raw VAE space) for the sampler's start_latent input.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE", {
            "tooltip": "The video's first frame (Load Image), 64x64 for the built-in default; or 4k+1 frames "
                       "that begin the video (a start video).",
        })}}

    def encode(self, image):
        from ..asd_core.start_image import encode_start_image
        from ..asd_core.vae import to_raw

        latents = encode_start_image(default_pipeline().codec, image)  # one-line errors for bad images
        return ({"samples": to_raw(latents).float().cpu()},)


def _video_latent(latent, name: str) -> torch.Tensor:
    if not isinstance(latent, dict) or "samples" not in latent:
        raise ValueError(f"{name} must be a LATENT ({{'samples': tensor}})")
    samples = latent["samples"]
    if samples.ndim != 5:
        raise ValueError(f"{name} must be a video latent [B, 16, T, H/8, W/8], got shape {tuple(samples.shape)}")
    return samples


def _chunk_spans(latent_frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """[start, stop) latent-frame ranges of `chunk_frames` each (the last may be shorter)."""
    step = max(1, chunk_frames)
    return [(start, min(start + step, latent_frames)) for start in range(0, latent_frames, step)]


@torch.no_grad()
def _encode_in_chunks(codec, video: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """`codec.encode(video)` (the posterior mode, normalised), one model chunk at a time.

    diffusers' `encode()` runs the whole clip in one call, so a long prefix gave no progress
    and could not be cancelled. This walks the same causal encoder the same way it does
    (the first frame alone, then 4 frames per latent frame, one feature cache carried
    across; checked equal to `codec.encode` in tests), ticking ComfyUI's progress bar and
    looking at Cancel once per chunk of `chunk_frames` latent frames.
    """
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, patchify

    vae = codec.vae
    x = video.to(codec.device, codec.dtype)
    if vae.config.patch_size is not None:
        x = patchify(x, patch_size=vae.config.patch_size)
    latent_frames = (x.shape[2] - 1) // FRAMES_PER_LATENT + 1
    feat_cache = [None] * sum(isinstance(m, WanCausalConv3d) for m in vae.encoder.modules())
    spans = _chunk_spans(latent_frames, chunk_frames)
    progress = host.Progress(len(spans))
    pieces = []
    for done, (start, stop) in enumerate(spans, start=1):
        host.check_interrupted()  # Cancel between chunks; ComfyUI's exception propagates as is
        for index in range(start, stop):
            first = 0 if index == 0 else 1 + FRAMES_PER_LATENT * (index - 1)
            last = 1 + FRAMES_PER_LATENT * index
            pieces.append(vae.encoder(x[:, :, first:last], feat_cache=feat_cache, feat_idx=[0]))
        progress.update(done)  # inside ComfyUI also an interrupt point
    moments = vae.quant_conv(torch.cat(pieces, dim=2))
    mean = moments[:, : codec.latent_channels]  # the posterior's mode: its mean half
    return codec.from_raw(mean.float())
