"""Training stages; `build_stage` picks the class for a config's `stage:`.

`vae` (the toy domain's VAE), `teacher` (flow-matching teacher + toy text encoder),
`ode_init` (student regressed onto teacher ODE trajectories) and `distill` (Self Forcing DMD + ASD).
Each derives from `base.Stage`; the loop (trainer/loop.py) drives them.
"""

from __future__ import annotations

from ..config import RunConfig
from ..dist import Runtime
from .base import Stage
from .distill import DistillStage
from .ode_init import OdeInitStage
from .teacher import TeacherStage
from .vae import VaeStage

STAGE_CLASSES: dict[str, type[Stage]] = {
    "vae": VaeStage,
    "teacher": TeacherStage,
    "ode_init": OdeInitStage,
    "distill": DistillStage,
}


def build_stage(config: RunConfig, runtime: Runtime) -> Stage:
    if config.stage not in STAGE_CLASSES:
        raise ValueError(f"unknown stage {config.stage!r}; stages: {', '.join(STAGE_CLASSES)}")
    return STAGE_CLASSES[config.stage](config, runtime)
