"""Wan 2.1 VAE codec: pixels <-> the normalised latents the transformer works in.

Three spaces meet here:
* raw VAE space: what `AutoencoderKLWan` produces, and what ComfyUI stores in a LATENT;
* normalised space: (raw - mean) / std per channel, what the transformer sees. diffusers'
  WanPipeline decodes with `latents / (1 / std) + mean` (= latents * std + mean, `to_raw`)
  and encodes conditions with `(x - mean) * (1 / std)` (`from_raw`); ComfyUI's Wan21 latent
  format does the same with scale 1;
* pixels in [-1, 1], (B, 3, T, H, W), T = 4k + 1 for k + 1 latent frames.

`decode_stream` decodes chunk by chunk as the sampler finishes them. diffusers' public
`decode()` clears the VAE's causal feature cache on every call, so it cannot continue a
video; a stream keeps its own cache between pushes (checked equal to `decode()` in tests).
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, unpatchify
from einops import rearrange

from .atomic import save_safetensors
from .request import SPATIAL_FACTOR, TEMPORAL_FACTOR, latent_frames_for, pixel_frames_for  # noqa: F401  (the shape rule lives there)

_DEFAULTS = inspect.signature(AutoencoderKLWan.__init__).parameters
# The 16 per-channel statistics of the real Wan 2.1 VAE (diffusers' default config, the
# values Wan's own code and ComfyUI's Wan21 latent format use).
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
    """Normalised (transformer) latents (B, C, F, H, W) -> raw VAE latents, as ComfyUI stores them."""
    return latents * _channel_stats(std, latents) + _channel_stats(mean, latents)


def from_raw(latents: torch.Tensor, mean=WAN21_LATENTS_MEAN, std=WAN21_LATENTS_STD) -> torch.Tensor:
    """Raw VAE latents (a ComfyUI LATENT) (B, C, F, H, W) -> normalised latents for the transformer."""
    return (latents - _channel_stats(mean, latents)) / _channel_stats(std, latents)


def chunk_pixel_ranges(latent_frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """(first, last) pixel frame decoded from each chunk of `chunk_frames` latent frames.

    Latent frame 0 is pixel frame 0 alone; latent frame j >= 1 is pixel frames 4j-3 .. 4j.
    """
    if latent_frames < 1 or chunk_frames < 1 or latent_frames % chunk_frames:
        raise ValueError(f"{latent_frames} latent frames do not split into chunks of {chunk_frames}")
    ranges = []
    for start in range(0, latent_frames, chunk_frames):
        last = start + chunk_frames - 1
        first_pixel = 0 if start == 0 else TEMPORAL_FACTOR * start - (TEMPORAL_FACTOR - 1)
        ranges.append((first_pixel, TEMPORAL_FACTOR * last))
    return ranges


class LatentCodec:
    """An `AutoencoderKLWan` plus the statistics that normalise its latents."""

    def __init__(self, vae: AutoencoderKLWan):
        self.vae = vae.eval().requires_grad_(False)
        self.mean = tuple(vae.config.latents_mean)
        self.std = tuple(vae.config.latents_std)

    @classmethod
    def tiny_random(cls, seed: int = 0, **overrides) -> LatentCodec:
        """A randomly initialised tiny VAE; the global RNG is left untouched."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(AutoencoderKLWan(**tiny_vae_config(**overrides)))

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def latent_channels(self) -> int:
        return self.vae.config.z_dim

    def to_raw(self, latents: torch.Tensor) -> torch.Tensor:
        return to_raw(latents, self.mean, self.std)

    def from_raw(self, latents: torch.Tensor) -> torch.Tensor:
        return from_raw(latents, self.mean, self.std)

    @torch.no_grad()
    def encode(self, video: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Pixels (B, 3, T, H, W) in [-1, 1] -> normalised latents (B, 16, (T-1)/4+1, H/8, W/8).

        The posterior mode by default (deterministic); `sample=True` draws from it.
        """
        if video.ndim != 5:
            raise ValueError(f"expected pixels (B, 3, T, H, W), got {tuple(video.shape)}")
        latent_frames_for(video.shape[2])
        posterior = self.vae.encode(video.to(self.device, self.dtype)).latent_dist
        raw = posterior.sample(generator) if sample else posterior.mode()
        return self.from_raw(raw.float())

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, 16, F, h, w) -> pixels (B, 3, 4(F-1)+1, 8h, 8w) in [-1, 1]."""
        raw = self.to_raw(latents.to(self.device, torch.float32))
        return self.vae.decode(raw.to(self.dtype)).sample.float()

    def decode_stream(self) -> StreamingDecoder:
        return StreamingDecoder(self)

    def save(self, path: str | os.PathLike) -> None:
        """safetensors with the diffusers VAE config in metadata; written atomically."""
        metadata = {"asd.vae_config": json.dumps(dict(self.vae.config))}
        state = {k: v.contiguous() for k, v in self.vae.state_dict().items()}
        save_safetensors(state, path, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike, device="cpu", dtype: torch.dtype = torch.float32) -> LatentCodec:
        """A file written by `save` (our format: config in the metadata)."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"VAE file not found: {path}")
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if "asd.vae_config" not in metadata:
            raise ValueError(f"{path} has no 'asd.vae_config' metadata: it is not a VAE file written by comfyui-asd")
        config = {k: v for k, v in json.loads(metadata["asd.vae_config"]).items() if not k.startswith("_")}
        vae = AutoencoderKLWan(**config)
        vae.load_state_dict(safetensors.torch.load_file(str(path), device="cpu"))
        return cls(_place(vae, device, dtype))


def _place(vae: AutoencoderKLWan, device, dtype: torch.dtype) -> AutoencoderKLWan:
    """Move to the device; cast only when asked (diffusers warns on any dtype `.to()` of this VAE, even a no-op)."""
    vae = vae.to(device)
    return vae if dtype == torch.float32 else vae.to(dtype)


class StreamingDecoder:
    """Decodes latent chunks in order, keeping the VAE's causal feature cache between them.

    Does what `AutoencoderKLWan._decode` does frame by frame (post_quant_conv, then the
    decoder on one latent frame with the shared cache), but with a cache of its own: two
    streams on one codec do not disturb each other. The first latent frame becomes 1 pixel
    frame, every later one 4, exactly as `decode()`.
    """

    def __init__(self, codec: LatentCodec):
        self.codec = codec
        self.frames_done = 0  # latent frames decoded so far
        vae = codec.vae
        self._feat_cache = [None] * sum(isinstance(m, WanCausalConv3d) for m in vae.decoder.modules())

    @torch.no_grad()
    def push(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, 16, f, h, w) -> their pixels (B, 3, 4f or 4f-3, 8h, 8w) in [-1, 1]."""
        if latents.ndim != 5 or latents.shape[1] != self.codec.latent_channels:
            raise ValueError(
                f"expected latents (B, {self.codec.latent_channels}, f, h, w), got {tuple(latents.shape)}"
            )
        vae = self.codec.vae
        raw = self.codec.to_raw(latents.to(self.codec.device, torch.float32)).to(self.codec.dtype)
        x = vae.post_quant_conv(raw)  # a 1x1x1 conv: frame by frame or all at once is the same
        pieces = []
        for index in range(x.shape[2]):
            pieces.append(vae.decoder(x[:, :, index : index + 1], feat_cache=self._feat_cache, feat_idx=[0],
                                      first_chunk=self.frames_done == 0))
            self.frames_done += 1
        out = torch.cat(pieces, dim=2)
        if vae.config.patch_size is not None:
            out = unpatchify(out, patch_size=vae.config.patch_size)
        return out.clamp(-1.0, 1.0).float()

    def close(self) -> None:
        """Free the cached features (the stream cannot be pushed to afterwards)."""
        self._feat_cache = [None] * len(self._feat_cache)
        self.frames_done = -1

    def __enter__(self) -> StreamingDecoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_FOREIGN_PREFIXES = ("first_stage_model.", "vae.", "model.")


def load_codec(path: str | os.PathLike, *, device="cpu", dtype: torch.dtype = torch.float32,
               config: dict | None = None) -> LatentCodec:
    """Any Wan 2.1 VAE a user may have, as a LatentCodec; never downloads, never unpickles.

    * our own file (`LatentCodec.save`, config in metadata);
    * a diffusers folder (`AutoencoderKLWan`, or a Wan diffusers repo holding `vae/`);
    * a single original Wan / ComfyUI file (`Wan2.1_VAE.pth`, `wan_2.1_vae.safetensors`),
      converted with diffusers' `convert_wan_vae_to_diffusers`; its architecture is the real
      Wan 2.1 VAE unless `config` (AutoencoderKLWan kwargs) says otherwise.
    """
    path = Path(path)
    if path.is_dir():
        folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no config.json in {folder}: not a diffusers AutoencoderKLWan folder")
        vae = AutoencoderKLWan.from_pretrained(str(folder), local_files_only=True, torch_dtype=dtype)
        return LatentCodec(vae.to(device))
    if not path.is_file():
        raise FileNotFoundError(f"VAE file not found: {path}")

    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        with safetensors.safe_open(str(path), framework="pt") as handle:
            if "asd.vae_config" in (handle.metadata() or {}):
                return LatentCodec.load(path, device=device, dtype=dtype)
        state = safetensors.torch.load_file(str(path), device="cpu")
    elif suffix in (".pt", ".pth", ".ckpt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickled objects: refused, never unpickled
            raise ValueError(f"{path} is not a plain state dict loadable with weights_only=True ({err})") from err
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    else:
        raise ValueError(f"unsupported VAE file {path.name!r}: use a .safetensors / .pth file or a diffusers folder")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a dict of tensors")

    for prefix in _FOREIGN_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    if "encoder.conv1.weight" in state:  # original Wan / ComfyUI names
        from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

        state = convert_wan_vae_to_diffusers(dict(state))
    elif "encoder.conv_in.weight" not in state:
        raise ValueError(f"{path} does not look like a Wan VAE (no encoder.conv1 / encoder.conv_in weights)")

    from diffusers.models.modeling_utils import no_init_weights

    with no_init_weights():  # every weight is overwritten: skip the random init
        vae = AutoencoderKLWan(**(config or {}))
    expected = {k: v.shape for k, v in vae.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k, v in state.items() if k in expected and expected[k] != v.shape)
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{path} does not fit a {'Wan 2.1' if config is None else 'configured'} AutoencoderKLWan "
            f"(Wan 2.2's 48-channel VAE is not supported): missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shapes {wrong_shape[:5]}"
        )
    vae.load_state_dict(state, strict=True)
    return LatentCodec(_place(vae, device, dtype))


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
