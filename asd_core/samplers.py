"""Every sampling algorithm by name, and the one each checkpoint family was released with.

The CLI (`asd-generate --sampler`) and the nodes choose by name. `sample_with` takes the
arguments of `asd_core.sampler.sample_video`, the cache window included (`max_cache_frames`,
`sink_frames`: a family's `local_attn_size` / `sink_size`), and hands each sampler what it takes:

  self_forcing       the causal chunk loop (`sampler.sample_video`); a window rolls with its sinks
                     kept at their first positions (Self Forcing, Causal Forcing, LongLive,
                     One-Forcing, ours)
  causvid            the same loop with CausVid's sigma lookup on its shift-8 grid (`causvid`)
  rolling_forcing    a window of chunks at staggered noise levels denoised in one pass, the first
                     chunk an anchor (`rolling_forcing`); `max_cache_frames` is its attention span
  repositioned_sink  the loop with the sink moved next to the oldest kept frame (Infinite Forcing)
  ema_sink           that, plus evicted frames folded into the sink (Reward Forcing)

Arguments a sampler does not take are refused with a one-line error, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .causvid import sample_causvid_video
from .ema_sink import sample_ema_sink_video, sample_repositioned_sink_video
from .families import Family
from .rolling_forcing import ATTENTION_FRAMES, sample_rolling_video
from .sampler import sample_video

SAMPLERS = {
    "self_forcing": "Self Forcing's chunk loop",
    "causvid": "CausVid's chunk loop (shift-8 grid sigmas)",
    "rolling_forcing": "Rolling Forcing's staggered window",
    "repositioned_sink": "Infinite Forcing's V-sink window",
    "ema_sink": "Reward Forcing's EMA-Sink window",
}
AUTO = "auto"
NAMES = (AUTO, *SAMPLERS)

# Each family's reference inference, as read at the commit its entry in families.py names.
FAMILY_SAMPLERS = {
    "causvid": "causvid",
    "causal_forcing_longvideo": "rolling_forcing",
    "rolling_forcing": "rolling_forcing",
    "reward_forcing": "ema_sink",
    "infinite_forcing": "repositioned_sink",
}
_ROLLING_REFUSES = ("prefix", "start_latents", "prompt_switches", "cache")


def sampler_for(family: Family | None) -> str:
    """The sampler a family's own inference uses (Self Forcing's loop unless listed above)."""
    return FAMILY_SAMPLERS.get(family.name, "self_forcing") if family is not None else "self_forcing"


def family_window(family: Family | None) -> dict:
    """`sample_with`'s cache arguments as the family's release samples: its window and sinks.

    A family with no sinks of its own (sink_frames 0) keeps one chunk, Self Forcing's rule;
    no family (plain Wan weights) means a whole-video cache.
    """
    if family is None:
        return {"max_cache_frames": None, "sink_frames": None}
    return {"max_cache_frames": family.max_cache_frames, "sink_frames": family.sink_frames or None}


def resolve_sampler(name: str | None, family: Family | None) -> str:
    """`auto` (or None) -> the family's sampler; any other name checked against SAMPLERS."""
    if name in (None, "", AUTO):
        return sampler_for(family)
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(NAMES)}")
    return name


def sample_with(name: str, model, *, max_cache_frames: int | None = None, sink_frames: int | None = None,
                **sample_video_arguments) -> Iterator[torch.Tensor]:
    """Yield each chunk's clean latents with the sampler `name` (arguments as `sample_video`'s)."""
    if name == "self_forcing":
        return sample_video(model, max_cache_frames=max_cache_frames, sink_frames=sink_frames,
                            **sample_video_arguments)
    if name == "causvid":
        return sample_causvid_video(model, max_cache_frames=max_cache_frames, sink_frames=sink_frames,
                                    **sample_video_arguments)
    if name == "rolling_forcing":
        return _rolling(model, max_cache_frames, sink_frames, sample_video_arguments)
    if name in ("repositioned_sink", "ema_sink"):
        if max_cache_frames is None:  # no window: nothing is evicted, the sink never moves
            return sample_video(model, sink_frames=sink_frames, **sample_video_arguments)
        chunk = sample_video_arguments.get("chunk_frames") or model.config.chunk_frames
        moving = sample_repositioned_sink_video if name == "repositioned_sink" else sample_ema_sink_video
        return moving(model, window_frames=max_cache_frames, sink_frames=chunk if sink_frames is None else sink_frames,
                      **sample_video_arguments)
    raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")


def _rolling(model, attention_frames: int | None, sink_frames: int | None, arguments: dict) -> Iterator[torch.Tensor]:
    given = [key for key in _ROLLING_REFUSES if arguments.get(key) not in (None, ())]
    if given:
        raise ValueError(f"the rolling_forcing sampler takes no {', '.join(given)}: use the self_forcing sampler "
                         "for video continuation, start images, prompt switches or a reused cache")
    arguments = {key: value for key, value in arguments.items() if key not in _ROLLING_REFUSES}
    chunk = arguments.get("chunk_frames") or model.config.chunk_frames
    if sink_frames not in (None, chunk):
        raise ValueError(f"the rolling_forcing sampler's sink is the first chunk ({chunk} frames), got "
                         f"sink_frames={sink_frames}; leave it unset")
    return sample_rolling_video(model, attention_frames=attention_frames or ATTENTION_FRAMES, **arguments)

