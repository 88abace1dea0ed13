"""Image-to-video: a start image (or start video) turned into the clean latents that begin a video.

`sample_video(..., start_latents=...)` takes normalised latents (B or 1, C, F0, H, W): F0 = 1
for one image. They are yielded first, unchanged, and written into the KV cache before the first
chunk is generated, chunk_frames at a time, each pass labelled timestep 0 whatever
`context_noise` is: Causal Forcing's inference (thu-ml/Causal-Forcing, `CausalInferencePipeline`
with `initial_latent`) does exactly this, and so does Self Forcing's. `num_frames` counts only
the generated frames.

Step plans: the "first chunk" of an FFE plan (`1*`, `2*`, `first=...`) is the first GENERATED
chunk, the one right after the start frames, as Causal Forcing++ applies its
`denoising_step_list_first_chunk` (block 0 of the generated blocks, with or without a start
image). With `chunk_frames=1` (frame-wise) that is the first generated frame. (One-Forcing's
code keys its first-frame list to video frame 0 instead, which a start image takes: a plain plan.)

Where the start latents come from:
* the built-in default (or any `vae.LatentCodec`): `encode_start_image(codec, image)`;
* ComfyUI's VAEEncode with the Wan 2.1 VAE: `start_latents_from_latent(latent)` (raw VAE
  space -> the normalised space the transformer works in).
"""

from __future__ import annotations

import torch

from .request import TEMPORAL_FACTOR
from .vae import from_raw

# The timestep the cache-filling passes over start frames tell the model (the references pass 0).
START_FILL_TIMESTEP = 0.0


def check_start_latents(start_latents, *, batch: int, channels: int, latent_height: int, latent_width: int,
                        prefix=None) -> torch.Tensor:
    """The start latents as float32 (batch, C, F0, H, W) on the CPU, or a one-line ValueError.

    A batch of 1 is shared by every sample. `prefix` (video continuation) and start latents
    both fill the cache first; only one of them may be given.
    """
    if prefix is not None:
        raise ValueError("pass either prefix (frames to continue, not returned) or start_latents (frames that "
                         "begin the returned video), not both")
    if not isinstance(start_latents, torch.Tensor):
        raise ValueError(f"start_latents must be a tensor (B, C, F0, H, W), got {type(start_latents).__name__}")
    if start_latents.ndim != 5:
        hint = "; one image is F0 = 1 frame: start_latents[:, :, None]" if start_latents.ndim == 4 else ""
        raise ValueError(f"start_latents must be (B, C, F0, H, W), got shape {tuple(start_latents.shape)}{hint}")
    got_batch, got_channels, frames, height, width = start_latents.shape
    if got_batch not in (1, batch):
        raise ValueError(f"start_latents batch {got_batch} must be 1 or the number of seeds ({batch})")
    if (got_channels, height, width) != (channels, latent_height, latent_width):
        raise ValueError(
            f"start_latents have {got_channels} channels and latent size {height}x{width}, the video "
            f"{channels} channels and {latent_height}x{latent_width}: encode the start image at the video's size"
        )
    if frames < 1:
        raise ValueError("start_latents have 0 frames; one start image is 1 latent frame")
    start = start_latents.detach().to("cpu", torch.float32)
    if not torch.isfinite(start).all():
        raise ValueError("start_latents hold NaN or infinite values: check the image and the VAE that encoded it")
    return start.expand(batch, -1, -1, -1, -1).contiguous()


def encode_start_image(codec, image: torch.Tensor) -> torch.Tensor:
    """A ComfyUI IMAGE (N, H, W, 3) in [0, 1] -> normalised start latents (1, C, F0, H/8, W/8).

    N = 1 (a start image) gives F0 = 1; a start video needs N = 4k + 1 frames (the Wan VAE
    encodes frame 0 alone and then 4 frames per latent frame).
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"the start image must be an IMAGE (N, H, W, 3) with values in 0..1, got {shape}")
    count, height, width, _ = image.shape
    if (count - 1) % TEMPORAL_FACTOR:
        usable = (count - 1) // TEMPORAL_FACTOR * TEMPORAL_FACTOR + 1
        raise ValueError(f"a start video of {count} frames does not fill whole latent frames: use 1 image or "
                         f"4k+1 frames (e.g. the first {usable})")
    if height % 16 or width % 16:
        raise ValueError(f"the start image is {width}x{height}; width and height must be multiples of 16 "
                         "(the VAE's 8x and the transformer's 2x2 patches): resize or crop it first")
    pixels = image.float().permute(3, 0, 1, 2)[None] * 2.0 - 1.0  # (1, 3, N, H, W) in [-1, 1]
    return codec.encode(pixels).float().cpu()


def start_latents_from_latent(latent) -> torch.Tensor:
    """A ComfyUI LATENT from VAEEncode (Wan 2.1 VAE, raw space) -> normalised start latents.

    VAEEncode of one image gives (B, 16, 1, H/8, W/8); images fed as a batch of stills
    (B, 16, H/8, W/8) are not a video and are refused with a hint.
    """
    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
        raise ValueError("the start latent must be a LATENT ({'samples': tensor}) from VAEEncode")
    samples = latent["samples"]
    if samples.ndim != 5:
        raise ValueError(f"the start latent must be a video latent (B, 16, F0, H/8, W/8), got shape "
                         f"{tuple(samples.shape)}: encode the image with VAEEncode and the Wan 2.1 VAE")
    return from_raw(samples.float().cpu())
