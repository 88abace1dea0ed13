"""The two ways the ratio benchmark makes one video: the real sampler, and no KV cache.

The no-cache path is a second, deliberately independent sampler: without it the benchmark
could not show what the cache buys, nor check that the cached path computes the right video
(both must agree to `--tolerance` before anything is timed). It shares only the noise
helpers with the sampler, so both draw the same noise in the same order.
"""

from __future__ import annotations

import torch

from ..sampler import draw_noise, renoise, sample_video
from ..schedule import StepPlan, timestep_to_sigma
from .settings import Settings


def cached_video(model, plan: StepPlan, context: torch.Tensor, settings: Settings, num_chunks: int,
                 max_cache_frames: int | None = None) -> torch.Tensor:
    """The real sampler (KV cache): all chunks of one video, (1, C, F, H, W)."""
    chunks = sample_video(model, plan=plan, context=context, num_frames=num_chunks * settings.chunk_frames,
                          latent_height=settings.latent_height, latent_width=settings.latent_width,
                          seeds=[settings.seed], max_cache_frames=max_cache_frames)
    return torch.cat(list(chunks), dim=2)


def recompute_video(model, plan: StepPlan, context: torch.Tensor, settings: Settings,
                    num_chunks: int) -> torch.Tensor:
    """No KV cache: each call runs the full block-causal forward over the clean history at t=0
    plus the noisy chunk, and keeps the chunk's part of the output.

    Noise comes from the sampler's own helpers and generator in the sampler's order (chunk
    noise, then one draw per re-noise), so the video must equal `cached_video`'s.
    """
    f, device, dtype = settings.chunk_frames, model.device, model.dtype
    generators = [torch.Generator(device="cpu").manual_seed(settings.seed)]
    shape = (1, settings.config.in_channels, f, settings.latent_height, settings.latent_width)
    history: list[torch.Tensor] = []  # clean chunks on the model's device, (1, C, f, H, W) each
    outputs = []
    for chunk in range(num_chunks):
        steps = plan.timesteps_for_chunk(chunk)
        x = draw_noise(shape, generators)
        for step, t in enumerate(steps):
            frames = torch.cat(history + [x.to(device, dtype)], dim=2)  # (1, C, F, H, W)
            times = torch.zeros(1, frames.shape[2], device=device)  # (1, F): history clean
            times[:, -f:] = t
            with torch.no_grad():
                flow = model(frames, times, context)[:, :, -f:].float()
            x0 = x - timestep_to_sigma(t) * flow.to(x.device)
            if step + 1 < len(steps):
                x = renoise(x0, steps[step + 1], generators)
        history.append(x0.to(device, dtype))
        outputs.append(x0)
    return torch.cat(outputs, dim=2)
