"""Previews of finished chunks for ComfyUI's progress bar.

With a decoder (the built-in default carries its small VAE) the preview is the chunk's last
frame decoded to true RGB. Without one (a Wan checkpoint: its VAE is a separate ComfyUI node)
a latent frame's 16 channels are projected onto their first three principal axes and shown as
RGB (false colour: it shows layout and motion, not true colours); the axes and the colour range
are fixed at the first chunk, so colours stay comparable from chunk to chunk.
"""

from __future__ import annotations

import torch
from einops import rearrange

PREVIEW_FORMAT = "JPEG"
PREVIEW_MAX_SIZE = 512  # ComfyUI shrinks previews to fit this box
MIN_SIDE = 256  # latents are small (8x8 for the built-in default): enlarge before sending


class ChunkPreviewer:
    def __init__(self, decode=None):
        self.decode = decode  # normalised latents (1, C, f, h, w) -> pixels (1, 3, T, H, W) in [-1, 1]
        self.mean: torch.Tensor | None = None  # (C,)
        self.axes: torch.Tensor | None = None  # (C, 3)
        self.low: torch.Tensor | None = None  # (3,)
        self.high: torch.Tensor | None = None  # (3,)

    def rgb(self, chunk: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) in [0, 1] for the last frame of the first video in a chunk (B, C, f, H, W)."""
        if self.decode is not None:
            with torch.no_grad():
                pixels = self.decode(chunk[:1].detach().float())  # (1, 3, T, H, W) in [-1, 1]
            return rearrange((pixels[0, :, -1].float().cpu() + 1) / 2, "c h w -> h w c").clamp(0, 1)
        frame = chunk[0, :, -1].detach().float().cpu()  # (C, H, W)
        height, width = frame.shape[1:]
        pixels = rearrange(frame, "c h w -> (h w) c")
        if self.axes is None:
            self.mean = pixels.mean(0)
            _, _, v = torch.linalg.svd(pixels - self.mean, full_matrices=False)  # v: (k, C)
            axes = torch.zeros(pixels.shape[1], 3)
            k = min(3, v.shape[0])
            axes[:, :k] = v[:k].T
            self.axes = axes
            projected = (pixels - self.mean) @ self.axes
            self.low = projected.quantile(0.02, dim=0)
            self.high = projected.quantile(0.98, dim=0)
        projected = (pixels - self.mean) @ self.axes  # (HW, 3)
        span = (self.high - self.low).clamp_min(1e-6)
        rgb = ((projected - self.low) / span).clamp(0, 1)
        return rearrange(rgb, "(h w) c -> h w c", h=height, w=width)

    def image(self, chunk: torch.Tensor):
        """ComfyUI's preview tuple (format, PIL image, max size)."""
        from PIL import Image

        rgb = self.rgb(chunk)
        picture = Image.fromarray((rgb * 255).round().to(torch.uint8).numpy())  # (H, W, 3) uint8 -> RGB
        scale = max(1, -(-MIN_SIDE // min(picture.size)))
        if scale > 1:
            picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
        return (PREVIEW_FORMAT, picture, PREVIEW_MAX_SIZE)
