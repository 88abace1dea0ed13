"""Training stages; `build_stage` picks the class for a config's `stage:`.

Built: `vae` (the toy domain's VAE) and `teacher` (flow-matching teacher + toy text encoder).
`ode_init` and `distill` have configs (trainer/config.py) but no stage class yet: asking for
them is a clear error, not a silent no-op.
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
    raise ValueError(
        f"stage {config.stage!r} is configured but not implemented in this release "
        "(built: vae, teacher; ode_init and distill are the next milestone)"
    )
