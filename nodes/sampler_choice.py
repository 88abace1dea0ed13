"""What the sampler node's `sampler`, `window_frames` and `sink_frames` widgets mean for a loaded file.

The widgets default to "what the checkpoint's family was released with" (-1 and -2), so
a LongLive file rolls its 12-frame window with 3 sinks and a Reward Forcing file runs its
EMA sink without the user looking anything up. Explicit values win. Workflows saved before
these defaults existed stored 0 (whole video) and -1 (one chunk of sinks), which keep
their meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..asd_core.families import Family
from ..asd_core.rolling_forcing import ATTENTION_FRAMES
from ..asd_core.samplers import family_window, resolve_sampler

FAMILY_WINDOW = -1  # window_frames: the family's own window (0 = whole video)
FAMILY_SINKS = -2  # sink_frames: the family's own sinks
ONE_CHUNK = -1  # sink_frames: one chunk, Self Forcing's rule


@dataclass(frozen=True)
class SamplerChoice:
    sampler: str  # a name of asd_core.samplers.SAMPLERS
    window_frames: int | None  # `max_cache_frames`; None = the whole video
    sink_frames: int | None  # None = one chunk

    def memory_window(self, chunk: int) -> tuple[int | None, int | None]:
        """(window, sinks) of the cache the sampler really holds, for the memory estimate.

        Rolling Forcing's window is an attention span past its anchor chunk, not a cache size.
        """
        if self.sampler == "rolling_forcing":
            return chunk + (self.window_frames or ATTENTION_FRAMES), chunk
        return self.window_frames, self.sink_frames


def choose(sampler: str, window_frames: int, sink_frames: int, family: Family | None) -> SamplerChoice:
    """Resolve the widgets against the file's family; a one-line ValueError for values out of range."""
    if window_frames < FAMILY_WINDOW:
        raise ValueError(f"window_frames must be >= 0, or -1 for the checkpoint family's own, got {window_frames}")
    if sink_frames < FAMILY_SINKS:
        raise ValueError(f"sink_frames must be >= 0, -1 for one chunk or -2 for the checkpoint family's own, "
                         f"got {sink_frames}")
    released = family_window(family)
    window = released["max_cache_frames"] if window_frames == FAMILY_WINDOW else (window_frames or None)
    if sink_frames == FAMILY_SINKS:
        sinks = released["sink_frames"]
    else:
        sinks = None if sink_frames == ONE_CHUNK else sink_frames
    return SamplerChoice(resolve_sampler(sampler, family), window, sinks)
