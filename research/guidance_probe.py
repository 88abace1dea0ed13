"""Does guidance that depends on the noise level lay out the captioned shapes better?

    python -m research.guidance_probe --checkpoint TEACHER --vae VAE [--num 32] [--seed 0]

The teacher loses the caption where the layout is decided, above sigma 0.75 (docs/results.md,
"Where the quality goes", item 3). This samples the teacher as `asd-eval --model teacher` does
(50 steps, the same captions and noise), once per guidance schedule: a scale above a sigma
threshold and another below it, and scores each with the evaluator. A probe, not a product
setting: the sampler's guidance stays one scale; the schedule is applied by wrapping the model.
"""

from __future__ import annotations

import argparse

import torch

from asd_core.schedule import parse_plan, timestep_to_sigma
from asd_core.toy.model_eval import eval_captions, eval_noise_seeds, generate_videos
from asd_core.toy.scores import evaluate_videos
from research.quality_causes import _teacher

# (scale above the threshold, scale at or below it, threshold sigma); the first is constant guidance.
SCHEDULES = ((2.0, 2.0, 0.75), (4.0, 2.0, 0.75), (4.0, 1.0, 0.75), (2.0, 1.0, 0.75), (6.0, 2.0, 0.75))
KEYS = ("total", "quality", "semantic", "colour", "object_class", "multiple_objects", "empty_frames")


class ScheduledGuidance:
    """The model, but a guided call returns (cond', uncond) with cond' rescaled so that the
    sampler's `uncond + base * (cond' - uncond)` equals `uncond + w(sigma) * (cond - uncond)`.
    Everything else (config, device, dtype, blocks) is the wrapped model's."""

    def __init__(self, model, base: float, high: float, low: float, threshold: float):
        self._model, self._base, self._high, self._low, self._threshold = model, base, high, low, threshold

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, x, timestep, context, **kwargs):
        flow = self._model(x, timestep, context, **kwargs)
        cond, uncond = flow.chunk(2)
        sigma = timestep_to_sigma(float(timestep))
        scale = self._high if sigma > self._threshold else self._low
        return torch.cat([uncond + (scale / self._base) * (cond - uncond), uncond])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a teacher export (its text encoder beside it)")
    p.add_argument("--vae", required=True, help="the VAE the teacher was trained on (a run's model.safetensors)")
    p.add_argument("--num", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    pipeline, _, _ = _teacher(args.checkpoint, args.vae)
    captions, seeds = eval_captions(args.num, args.seed), eval_noise_seeds(args.num, args.seed)
    print(f"{args.checkpoint}: {args.num} videos of evaluation seed {args.seed}, plan 50")
    print("| guidance | " + " | ".join(KEYS) + " |")
    print("|---" * (len(KEYS) + 1) + "|")
    for high, low, threshold in SCHEDULES:
        base = 2.0  # any scale != 1 turns the sampler's guided path on; the wrapper sets the real one
        model = ScheduledGuidance(pipeline.model, base, high, low, threshold)
        videos = generate_videos(model, pipeline.text_encoder, pipeline.codec, captions, seeds, parse_plan("50"),
                                 base, batch=16)
        scores = evaluate_videos(videos, captions)
        name = f"{high:g}" if high == low else f"{high:g} above sigma {threshold:g}, {low:g} below"
        print(f"| {name} | " + " | ".join(f"{scores[k]:.3f}" for k in KEYS) + " |", flush=True)


if __name__ == "__main__":
    main()
