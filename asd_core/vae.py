"""Wan 2.1 VAE codec: pixels <-> the normalised latents the transformer works in.

Three latent spaces meet here:
* raw VAE space: what `AutoencoderKLWan` produces, and what ComfyUI stores in a LATENT;
* normalised space: (raw - mean) / std per channel, what the transformer sees;
* pixels in [-1, 1], (B, 3, T, H, W), T = 4k + 1 for k + 1 latent frames.

`decode_stream` decodes chunk by chunk as the sampler finishes them. diffusers' public
`decode()` clears the VAE's causal feature cache on every call, so it cannot continue a
video; the stream keeps the cache between pushes (checked equal to `decode()` in tests).
"""

from __future__ import annotations

import inspect
import json
import os

import safetensors.torch
import torch
from diffusers import AutoencoderKLWan
from einops import rearrange

from .atomic import save_safetensors

_DEFAULTS = inspect.signature(AutoencoderKLWan.__init__).parameters
# The 16 per-channel statistics of the real Wan 2.1 VAE (diffusers' default config).
WAN21_LATENTS_MEAN: tuple[float, ...] = tuple(_DEFAULTS["latents_mean"].default)
WAN21_LATENTS_STD: tuple[float, ...] = tuple(_DEFAULTS["latents_std"].default)


def tiny_vae_config(**overrides) -> dict:
    """A ~2.6M-parameter Wan VAE (base_dim 16) for the built-in toy domain and tests."""
    config = dict(base_dim=16, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1, attn_scales=[],
                  temperal_downsample=[False, True, True])
    config.update(overrides)
    return config


def _channel_stats(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1, 1)


def to_raw(latents: torch.Tensor, mean=WAN21_LATENTS_MEAN, std=WAN21_LATENTS_STD) -> torch.Tensor:
    """Normalised (transformer) latents -> raw VAE latents, as ComfyUI stores them."""
    return latents * _channel_stats(std, latents) + _channel_stats(mean, latents)


def from_raw(latents: torch.Tensor, mean=WAN21_LATENTS_MEAN, std=WAN21_LATENTS_STD) -> torch.Tensor:
    """Raw VAE latents (a ComfyUI LATENT) -> normalised latents for the transformer."""
    return (latents - _channel_stats(mean, latents)) / _channel_stats(std, latents)


def latent_frames_for(pixel_frames: int) -> int:
    """The Wan VAE compresses time 4x causally: 4k + 1 pixel frames -> k + 1 latent frames."""
    if pixel_frames < 1 or (pixel_frames - 1) % 4:
        raise ValueError(f"{pixel_frames} pixel frames: the Wan VAE needs 4k+1 frames (1, 5, 9, ..., 33, ..., 81)")
    return (pixel_frames - 1) // 4 + 1


def pixel_frames_for(latent_frames: int) -> int:
    return (latent_frames - 1) * 4 + 1


class LatentCodec:
    """An `AutoencoderKLWan` plus the statistics that normalise its latents."""

    def __init__(self, vae: AutoencoderKLWan):
        self.vae = vae.eval().requires_grad_(False)
        self.mean = tuple(vae.config.latents_mean)
        self.std = tuple(vae.config.latents_std)

    @classmethod
    def tiny_random(cls, seed: int = 0) -> "LatentCodec":
        torch.manual_seed(seed)
        return cls(AutoencoderKLWan(**tiny_vae_config()))

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def to_raw(self, latents: torch.Tensor) -> torch.Tensor:
        return to_raw(latents, self.mean, self.std)

    def from_raw(self, latents: torch.Tensor) -> torch.Tensor:
        return from_raw(latents, self.mean, self.std)

    @torch.no_grad()
    def encode(self, video: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Pixels (B, 3, T, H, W) in [-1, 1] -> normalised latents (B, 16, (T-1)/4+1, H/8, W/8)."""
        latent_frames_for(video.shape[2])
        posterior = self.vae.encode(video.to(self.device)).latent_dist
        raw = posterior.sample(generator) if sample else posterior.mode()
        return self.from_raw(raw)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> pixels (B, 3, T, H, W) in [-1, 1]."""
        return self.vae.decode(self.to_raw(latents.to(self.device))).sample

    def decode_stream(self) -> "StreamingDecoder":
        return StreamingDecoder(self)

    def save(self, path: str | os.PathLike) -> None:
        """safetensors with the diffusers VAE config in metadata; written atomically."""
        metadata = {"asd.vae_config": json.dumps(dict(self.vae.config))}
        state = {k: v.contiguous() for k, v in self.vae.state_dict().items()}
        save_safetensors(state, path, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike, device="cpu") -> "LatentCodec":
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if "asd.vae_config" not in metadata:
            raise ValueError(f"{path} has no 'asd.vae_config' metadata: it is not a VAE file written by comfyui-asd")
        config = {k: v for k, v in json.loads(metadata["asd.vae_config"]).items() if not k.startswith("_")}
        vae = AutoencoderKLWan(**config)
        vae.load_state_dict(safetensors.torch.load_file(str(path), device="cpu"))
        return cls(vae.to(device))


class StreamingDecoder:
    """Decodes latent chunks in order, keeping the VAE's causal cache between them.

    The first latent frame becomes 1 pixel frame, every later one 4, exactly as `decode()`.
    """

    def __init__(self, codec: LatentCodec):
        self.codec = codec
        self.frames_done = 0
        codec.vae.clear_cache()

    @torch.no_grad()
    def push(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, 16, f, h, w) -> their pixels (B, 3, f*4 or f*4-3, H, W) in [-1, 1]."""
        vae = self.codec.vae
        x = vae.post_quant_conv(self.codec.to_raw(latents.to(self.codec.device)))
        pieces = []
        for index in range(x.shape[2]):
            vae._conv_idx = [0]
            pieces.append(vae.decoder(x[:, :, index : index + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx,
                                      first_chunk=self.frames_done == 0))
            self.frames_done += 1
        return torch.cat(pieces, dim=2).clamp(-1.0, 1.0)

    def close(self) -> None:
        self.codec.vae.clear_cache()


def video_to_pixels(frames: torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) or (B, T, H, W, 3) uint8/[0,1] frames -> (B, 3, T, H, W) in [-1, 1]."""
    if frames.dtype == torch.uint8:
        frames = frames.float() / 255.0
    if frames.ndim == 4:
        frames = frames[None]
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3) or (B, T, H, W, 3), got {tuple(frames.shape)}")
    return rearrange(frames, "b t h w c -> b c t h w") * 2.0 - 1.0


def pixels_to_video(pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) in [-1, 1] -> (B, T, H, W, 3) float in [0, 1] (ComfyUI IMAGE per sample)."""
    return rearrange((pixels.float().clamp(-1, 1) + 1.0) / 2.0, "b c t h w -> b t h w c")
