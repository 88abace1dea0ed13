"""The generator's training-time rollouts and the teacher's ODE trajectories.

`self_forcing_rollout` is the sampler of `asd_core.sampler` run for training: the same chunk
loop, the same x0 prediction and re-noising, the same cache-filling pass. Differences: every
step before the exit step runs without gradients, the exit step keeps them, and the chunk's
output is the x0 predicted at the exit step (Self Forcing's random exit). The exit step never
writes into the KV cache in place (autograd would see later writes to the same storage);
it reads the cached context into a fresh tensor instead (`_ReadOnlyCache`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from asd_core.kv_cache import KVCache
from asd_core.schedule import NUM_TRAIN_TIMESTEPS, timestep_to_sigma


class _ReadOnlyCache:
    """The KVCache protocol for a pass with gradients: cached context + this chunk, no in-place write."""

    def __init__(self, cache: KVCache):
        self.cache = cache

    def begin(self, num_frames: int, *, commit: bool) -> None:
        if commit:
            raise ValueError("a gradient pass never commits to the cache; fill it with a no-grad pass")
        if self.cache.length_frames + num_frames > self.cache.capacity_frames:
            raise ValueError("the rollout cache is too small for this video")

    def update(self, layer: int, keys: torch.Tensor, values: torch.Tensor):
        held = self.cache.length_frames * self.cache.tokens_per_frame
        return (torch.cat([self.cache.keys[layer, :, :held], keys], dim=1),
                torch.cat([self.cache.values[layer, :, :held], values], dim=1))

    def finish(self) -> None:
        pass


def noise_like(shape, generator: torch.Generator, device, dtype=torch.float32) -> torch.Tensor:
    """Gaussian noise drawn on the CPU from `generator` (identical on any device), then moved."""
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


def renoise_batch(x0: torch.Tensor, timestep: float, generator: torch.Generator) -> torch.Tensor:
    """x0 re-noised to `timestep` (rectified flow), the whole batch's noise drawn from one generator.

    Unlike `asd_core.sampler.renoise`, which draws each sample from its own generator (so a
    video does not depend on its batch), training draws one stream per (rank, step): cheaper,
    and exactly reproducible on resume, which is all training needs.
    """
    sigma = timestep_to_sigma(timestep)
    return (1 - sigma) * x0 + sigma * noise_like(x0.shape, generator, x0.device)


def predict_x0(model, x: torch.Tensor, timestep, context: torch.Tensor, **kwargs) -> torch.Tensor:
    """x0 = x - sigma * flow, with sigma scalar or per frame (B, F); float32 out."""
    flow = model(x, timestep, context, **kwargs).float()
    sigma = timestep_to_sigma(torch.as_tensor(timestep, dtype=torch.float32, device=x.device))
    if sigma.ndim == 1:  # (B,)
        sigma = sigma[:, None, None, None, None]
    elif sigma.ndim == 2:  # (B, F)
        sigma = sigma[:, None, :, None, None]
    return x.float() - sigma * flow


@dataclass
class RolloutOutput:
    video: torch.Tensor  # (B, C, F, H, W): each chunk's x0 at its exit step (grad there when asked)
    next_video: torch.Tensor | None  # (B, C, F, H, W): one step further (no grad), when asked


def self_forcing_rollout(
    model,
    noise: torch.Tensor,
    context: torch.Tensor,
    *,
    first_steps: tuple[float, ...],
    rest_steps: tuple[float, ...],
    exit_first: int,
    exit_rest: int,
    generator: torch.Generator,
    grad: bool = True,
    one_more_step: bool = False,
    context_noise: float = 0.0,
) -> RolloutOutput:
    """Roll the causal student out chunk by chunk with its own KV cache, as at inference.

    noise: (B, C, F, H, W) the starting noise of every chunk. exit_first / exit_rest: 0-based
    index of the step whose x0 is the chunk's output (first chunk / later chunks).
    one_more_step: also return the output of one more step from there (the ASD "real" branch:
    the same context, the chunk re-noised to the next timestep and denoised once more; a chunk
    already at its last step gives its own output).
    """
    config = model.config
    chunk = config.chunk_frames
    batch, _, frames, height, width = noise.shape
    if frames % chunk:
        raise ValueError(f"{frames} latent frames do not split into chunks of {chunk}")
    if not 0 <= exit_first < len(first_steps) or not 0 <= exit_rest < len(rest_steps):
        raise ValueError(f"exit steps ({exit_first}, {exit_rest}) outside the plans {first_steps} / {rest_steps}")
    cache = model.new_kv_cache(batch_size=batch, capacity_frames=frames, latent_height=height, latent_width=width)
    outputs, further = [], []
    num_chunks = frames // chunk
    for index in range(num_chunks):
        offset = index * chunk
        steps = first_steps if index == 0 else rest_steps
        exit_at = exit_first if index == 0 else exit_rest
        x = noise[:, :, offset : offset + chunk]
        for k in range(exit_at + 1):
            keep_grad = grad and k == exit_at
            with torch.set_grad_enabled(keep_grad):
                x0 = predict_x0(model, x, steps[k], context, frame_offset=offset,
                                kv_cache=_ReadOnlyCache(cache) if keep_grad else cache)
            if k < exit_at:
                x = renoise_batch(x0, steps[k + 1], generator)
        outputs.append(x0)
        clean = x0.detach()
        if one_more_step:
            if exit_at + 1 < len(steps):
                with torch.no_grad():
                    x_next = renoise_batch(clean, steps[exit_at + 1], generator)
                    further.append(predict_x0(model, x_next, steps[exit_at + 1], context, frame_offset=offset,
                                              kv_cache=cache))
            else:
                further.append(clean)
        if index + 1 < num_chunks:
            seen = renoise_batch(clean, context_noise, generator) if context_noise > 0 else clean
            with torch.no_grad():
                model(seen.to(model.dtype), context_noise, context, frame_offset=offset, kv_cache=cache, update_cache=True)
    return RolloutOutput(torch.cat(outputs, dim=2), torch.cat(further, dim=2) if one_more_step else None)


def guided_flow(model, x: torch.Tensor, timestep, context: torch.Tensor, uncond: torch.Tensor | None,
                cfg_scale: float, **kwargs) -> torch.Tensor:
    """Classifier-free guided flow: uncond + s * (cond - uncond), both halves in one batch."""
    if uncond is None or cfg_scale == 1.0:
        return model(x, timestep, context, **kwargs).float()
    batch = x.shape[0]
    t = torch.as_tensor(timestep, dtype=torch.float32, device=x.device)
    t2 = torch.cat([t, t]) if t.ndim >= 1 else t
    both = model(torch.cat([x, x]), t2, torch.cat([context, uncond.expand(batch, -1, -1)]), **kwargs).float()
    cond, free = both.chunk(2)
    return free + cfg_scale * (cond - free)


def ode_grid(record_at: tuple[float, ...], ode_steps: int, shift: float) -> list[float]:
    """Teacher Euler timesteps: a shifted uniform grid merged with the timesteps to record, then 0."""
    from asd_core.schedule import uniform_timesteps, warp_timesteps

    grid = set(round(t, 6) for t in warp_timesteps(uniform_timesteps(ode_steps), shift))
    grid |= set(round(float(t), 6) for t in record_at)
    return sorted(grid, reverse=True) + [0.0]


@torch.no_grad()
def teacher_trajectory(teacher, noise: torch.Tensor, context: torch.Tensor, uncond: torch.Tensor | None,
                       cfg_scale: float, record_at: tuple[float, ...], ode_steps: int, shift: float,
                       start: float = NUM_TRAIN_TIMESTEPS):
    """Deterministic Euler ODE of the flow teacher from noise (at t=1000) to a clean video.

    `start` < 1000 runs the same grid from a part-noised latent `noise` at that timestep instead
    (the grid's steps below it; research's `restore` check). Returns ({timestep: x_t (B, C, F, H, W)}
    for every timestep in `record_at`, x0).
    """
    grid = [start] + [t for t in ode_grid(record_at, ode_steps, shift) if t < start]
    wanted = {round(float(t), 6) for t in record_at}
    x = noise.float()
    recorded = {}
    for t, t_next in zip(grid[:-1], grid[1:]):
        if t in wanted:
            recorded[t] = x.clone()
        flow = guided_flow(teacher, x.to(teacher.dtype), t, context, uncond, cfg_scale)
        x = x + (timestep_to_sigma(t_next) - timestep_to_sigma(t)) * flow
    return recorded, x
