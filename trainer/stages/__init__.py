"""Training stages; `build_stage` picks the class for a config's `stage:`.

`vae` (the toy domain's VAE), `teacher` (flow-matching teacher + toy text encoder),
`ode_init` (student regressed onto teacher ODE trajectories) and `distill` (Self Forcing DMD + ASD).
"""

from __future__ import annotations

from ..config import RunConfig
from ..dist import Runtime


def build_stage(config: RunConfig, runtime: Runtime):
    if config.stage == "vae":
        from .vae import VaeStage

        return VaeStage(config, runtime)
    if config.stage == "teacher":
        from .teacher import TeacherStage

        return TeacherStage(config, runtime)
    if config.stage == "ode_init":
        from .ode_init import OdeInitStage

        return OdeInitStage(config, runtime)
    if config.stage == "distill":
        from .distill import DistillStage

        return DistillStage(config, runtime)
    raise ValueError(f"unknown stage {config.stage!r}; stages: vae, teacher, ode_init, distill")
