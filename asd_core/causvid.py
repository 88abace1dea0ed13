"""CausVid's sampling: Self Forcing's chunk loop with its scheduler's timestep grid.

CausVid (tianweiy/CausVid) runs the chunk loop of `asd_core.sampler` (3-frame blocks, fresh
noise at each re-noise, a cache-filling pass at timestep 0) with its released step list
[1000, 757, 522] not warped. Its scheduler does not compute sigma from the timestep it is given:
it takes the sigma of the nearest of its 1000 training timesteps (shift 8), so the model is
told 757 while x0 and the re-noise use sigma 0.75676 (not 0.757). That gap moves the output by
about 1e-3 of its range; `sample_causvid_video` reproduces it: the plan's timesteps are moved to
the grid (so the sampler's sigma is the scheduler's) and the model is told the plan's own ones.
For a warped list (its later 4-step config) the timesteps already lie on the grid: nothing moves.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .sampler import sample_video
from .schedule import NUM_TRAIN_TIMESTEPS, StepPlan, sigma_to_timestep, warp_sigma

SCHEDULER_SHIFT = 8.0  # causvid/models/wan/wan_wrapper.py: FlowMatchScheduler(shift=8.0, sigma_min=0.0)


def scheduler_grid(shift: float = SCHEDULER_SHIFT) -> torch.Tensor:
    """The scheduler's training timesteps: sigmas 1, 0.999, ..., 0.001 warped by `shift`, x 1000."""
    sigmas = [1 - k / NUM_TRAIN_TIMESTEPS for k in range(NUM_TRAIN_TIMESTEPS)]
    return torch.tensor([sigma_to_timestep(warp_sigma(s, shift)) for s in sigmas], dtype=torch.float64)


def on_grid(timestep: float, grid: torch.Tensor) -> float:
    """The grid timestep whose sigma the scheduler uses for `timestep` (the nearest one)."""
    return float(grid[(grid - timestep).abs().argmin()])


class _ToldTimesteps:
    """The model, told the plan's timestep for each grid timestep the sampler passes."""

    def __init__(self, model, told: dict[float, float]):
        self._model, self._told = model, told

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, x, timestep, *args, **kwargs):
        return self._model(x, self._told.get(timestep, timestep), *args, **kwargs)


def sample_causvid_video(model, *, plan: StepPlan, **sample_video_arguments) -> Iterator[torch.Tensor]:
    """`asd_core.sampler.sample_video` with CausVid's sigma lookup (same arguments)."""
    grid = scheduler_grid()
    told = {}
    for timestep in (*plan.first, *plan.rest):
        told[on_grid(timestep, grid)] = timestep
    gridded = StepPlan(first=tuple(on_grid(t, grid) for t in plan.first),
                       rest=tuple(on_grid(t, grid) for t in plan.rest), spec=plan.spec)
    return sample_video(_ToldTimesteps(model, told), plan=gridded, **sample_video_arguments)
