"""FFE step scheduler node: builds the per-chunk step plan the causal sampler walks."""

from __future__ import annotations

from ..asd_core.schedule import ACCEPTED_SPECS, DEFAULT_SHIFT, ffe_plan, parse_plan

PLAN_TYPE = "ASD_PLAN"


class ASDStepScheduler:
    """Steps for the first chunk and for every later chunk (first-frame enhancement)."""

    DESCRIPTION = (
        "Step plan for the causal sampler. First-frame enhancement (FFE) gives the first chunk more "
        "steps because its errors carry into every later chunk: steps=1 with first_chunk_steps=4 is "
        "the paper's 1*, steps=2 with 4 is 2*, steps=4 with 4 is plain 4-step sampling. A typed spec "
        "overrides the numbers."
    )
    CATEGORY = "ASD/sampling"
    FUNCTION = "build"
    RETURN_TYPES = (PLAN_TYPE, "STRING")
    RETURN_NAMES = ("plan", "description")
    OUTPUT_TOOLTIPS = (
        "The step plan, for the ASD Causal Sampler.",
        "The plan in words: timesteps of the first and the later chunks.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "steps": ("INT", {
                    "default": 1, "min": 1, "max": 1000,
                    "tooltip": "Denoising steps of every chunk after the first (1, 2 or 4 with ASD checkpoints).",
                }),
                "first_chunk_steps": ("INT", {
                    "default": 4, "min": 0, "max": 1000,
                    "tooltip": "Steps of the first chunk (FFE). 4 gives the paper's 1* / 2*; 0 = same as steps.",
                }),
                "shift": ("FLOAT", {
                    "default": DEFAULT_SHIFT, "min": 0.01, "max": 100.0, "step": 0.01,
                    "tooltip": "Timestep shift (Wan 2.1 / Self Forcing use 5.0); higher spends more steps at high noise.",
                }),
                "spec": ("STRING", {
                    "default": "", "multiline": False,
                    "tooltip": "Optional typed plan that overrides the numbers above: '4', '2*', '1*', or "
                               "'first=1000,750,500,250;rest=1000' (timesteps before the shift, optional ';shift=5').",
                }),
            }
        }

    def build(self, steps: int, first_chunk_steps: int, shift: float, spec: str):
        if spec.strip():
            try:
                plan = parse_plan(spec, shift=shift)
            except ValueError as err:
                raise ValueError(f"ASD Step Scheduler: {err}. Clear 'spec' to use the numbers instead.") from None
        else:
            if steps < 1:
                raise ValueError(f"ASD Step Scheduler: steps must be >= 1, got {steps}; accepted specs: {ACCEPTED_SPECS}")
            if not shift > 0:
                raise ValueError(f"ASD Step Scheduler: shift must be > 0, got {shift}")
            plan = ffe_plan(steps, first_chunk_steps or steps, shift)
        text = plan.describe()
        return {"ui": {"text": [text]}, "result": (plan, text)}
