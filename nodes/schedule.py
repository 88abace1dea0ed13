"""The prompt-switch node: later prompts that take over the video from given frames (LongLive-style).

The node only collects what the user wired: up to four conditionings, each with the pixel
frame it starts at, and the KV re-cache toggle. The sampler node turns that into
`asd_core.sampler.PromptSwitch`es once it knows the chunk size and the video's length,
because a switch can only happen where a chunk begins (`switch_latent_frames`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..asd_core.request import TEMPORAL_FACTOR as FRAMES_PER_LATENT

SCHEDULE_TYPE = "ASD_PROMPT_SCHEDULE"
SLOTS = 4
DEFAULT_STARTS = (21, 45, 69, 93)  # first pixel frames of latent frames 6, 12, 18, 24: chunk starts for chunks of 3


@dataclass(frozen=True)
class PromptScheduleEntry:
    name: str  # the node input it came from, for messages
    start_frame: int  # pixel frame of the generated video it starts at, as the user typed it
    conditioning: list  # ComfyUI CONDITIONING, converted by the sampler against its model's text width


@dataclass(frozen=True)
class PromptSchedule:
    entries: tuple[PromptScheduleEntry, ...]
    recache: bool = True


def first_pixel_frame(latent_frame: int) -> int:
    """The first pixel frame decoded from a latent frame: latent 0 is pixel 0, latent k >= 1 is 4k-3..4k."""
    return 0 if latent_frame == 0 else FRAMES_PER_LATENT * (latent_frame - 1) + 1


def latent_frame_of(pixel_frame: int) -> int:
    """The latent frame a pixel frame is decoded from (the inverse of `first_pixel_frame`, rounded up)."""
    return -(-pixel_frame // FRAMES_PER_LATENT)


def switch_latent_frames(schedule: PromptSchedule, chunk_frames: int, latent_frames: int) -> list[int]:
    """Each entry's start as a generated latent frame on a chunk boundary, or ValueError saying why not.

    A start between boundaries goes to the nearest one (ties: the later), with a warning that
    names the pixel frame actually used, so a user who typed 17 learns the prompt changes at 21.
    """
    boundaries = []
    for entry in schedule.entries:
        latent = latent_frame_of(entry.start_frame)
        boundary = (2 * latent + chunk_frames) // (2 * chunk_frames) * chunk_frames  # nearest, ties up
        if boundary == 0:
            raise ValueError(
                f"{entry.name} starts at pixel frame {entry.start_frame}, inside the first chunk (pixel frames "
                f"0..{first_pixel_frame(chunk_frames) - 1}), which the sampler's positive prompt fills: use a start "
                f"frame >= {first_pixel_frame(chunk_frames)}"
            )
        if boundary >= latent_frames:
            raise ValueError(
                f"{entry.name} starts at pixel frame {entry.start_frame} (chunk boundary at pixel frame "
                f"{first_pixel_frame(boundary)}), but the video generates only {first_pixel_frame(latent_frames)} "
                f"frames: lower the start frame or raise the sampler's frames"
            )
        if boundaries and boundary <= boundaries[-1]:
            raise ValueError(
                f"{entry.name} starts at pixel frame {entry.start_frame}, which falls on chunk boundary pixel frame "
                f"{first_pixel_frame(boundary)}, not after the previous switch's ({first_pixel_frame(boundaries[-1])}): "
                f"start frames must increase by at least a chunk ({FRAMES_PER_LATENT * chunk_frames} pixel frames)"
            )
        if first_pixel_frame(boundary) != entry.start_frame:
            logging.warning("ASD Prompt Schedule: %s starts at pixel frame %d, the nearest chunk start to %d "
                            "(prompts switch only where a chunk of %d latent frames begins)",
                            entry.name, first_pixel_frame(boundary), entry.start_frame, chunk_frames)
        boundaries.append(boundary)
    return boundaries


class ASDPromptSchedule:
    DESCRIPTION = (
        "Switches the prompt mid-video: each connected conditioning takes over from its start frame (the "
        "sampler's positive prompt fills the video before the first one). Starts snap to the nearest chunk "
        "boundary (a warning says where). With recache on, the KV cache of the frames already made is "
        "recomputed under the new prompt at each switch (LongLive's re-cache); off keeps the old cache."
    )
    CATEGORY = "ASD/sampling"
    FUNCTION = "schedule"
    RETURN_TYPES = (SCHEDULE_TYPE,)
    RETURN_NAMES = ("schedule",)
    OUTPUT_TOOLTIPS = ("Prompt switches for the ASD Causal Sampler's prompt_schedule input.",)

    @classmethod
    def INPUT_TYPES(cls):
        frames = {
            f"start_frame_{i}": ("INT", {
                "default": DEFAULT_STARTS[i - 1], "min": 1, "max": 4096,
                "tooltip": f"Pixel frame of the generated video from which conditioning_{i} is used (only when "
                           "connected). Snapped to the nearest chunk start: 1 + 12*n for chunks of 3 latent frames.",
            })
            for i in range(1, SLOTS + 1)
        }
        return {
            "required": {
                **frames,
                "recache": ("BOOLEAN", {
                    "default": True,
                    "tooltip": "At each switch, recompute the KV cache of the frames already generated under the new "
                               "prompt (LongLive's re-cache: a cleaner change). Off: the old cache is kept and only "
                               "new chunks see the new prompt.",
                }),
            },
            "optional": {
                f"conditioning_{i}": ("CONDITIONING", {"tooltip": f"Prompt used from start_frame_{i} on."})
                for i in range(1, SLOTS + 1)
            },
        }

    def schedule(self, start_frame_1: int, start_frame_2: int, start_frame_3: int, start_frame_4: int,
                 recache: bool, conditioning_1=None, conditioning_2=None, conditioning_3=None, conditioning_4=None):
        starts = (start_frame_1, start_frame_2, start_frame_3, start_frame_4)
        conditionings = (conditioning_1, conditioning_2, conditioning_3, conditioning_4)
        entries = []
        for i, (start, conditioning) in enumerate(zip(starts, conditionings), start=1):
            if conditioning is None:
                continue
            if not isinstance(start, int) or start < 1:
                raise ValueError(f"start_frame_{i} must be a pixel frame >= 1, got {start!r}")
            entries.append(PromptScheduleEntry(f"conditioning_{i}", start, conditioning))
        if not entries:
            raise ValueError("ASD Prompt Schedule has no conditioning connected: connect conditioning_1 (and more) "
                             "or remove the node")
        entries.sort(key=lambda e: e.start_frame)
        return (PromptSchedule(tuple(entries), bool(recache)),)
