"""What a generation request may ask for: one validator for the CLI, the API and the nodes.

Every rule a video request must satisfy lives here, checked before the first model call so a
typo or an impossible size costs nothing:

* the Wan 2.1 VAE packs 1 + 4k pixel frames into 1 + k latent frames and 8x8 pixels into one
  latent pixel; the transformer cuts latents into patches (1, 2, 2) and generates
  `chunk_frames` latent frames per chunk, so pixel sizes are multiples of 8 * patch and the
  latent frames fill whole chunks;
* RoPE has `rope_max_seq_len` positions per axis: frames (prefix included; a rolling cache
  window does not reset positions, so it does not lift this limit), rows and columns;
* a rolling cache window keeps `sink_frames` and needs room for one more chunk;
* `context_noise` is a timestep in [0, 1000]; the guidance scale is a finite number;
* the memory a request needs (KV cache, latents, one pass's activations, optionally the
  weights and the decoded pixels) must fit what the device has.

Errors are `RequestError` (a ValueError) with one line that names the caller's own words for
the setting (`--frames` on the command line, `frames` on a node, `num_frames` in the API) and
a value that works. This module imports no model code: the CLI checks a request before it
loads anything.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass, field

import torch

from .budget import VAE_SPACE_FACTOR, VAE_TIME_FACTOR

# The Wan 2.1 VAE's factors, defined once in budget.py: 4k + 1 pixel frames -> k + 1 latent
# frames, 8x8 pixels -> one latent pixel.
TEMPORAL_FACTOR, SPATIAL_FACTOR = VAE_TIME_FACTOR, VAE_SPACE_FACTOR
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes [0, 2^64)
MAX_CONTEXT_NOISE = 1000.0


class RequestError(ValueError):
    """A request the model cannot run as asked; the message says what to change."""


# The words each caller uses for the settings, so an error names what the user typed.
# "frames"/"width"/"height" are pixels where `pixels` is True, latent units otherwise.
CLI_NAMES = {"frames": "--frames", "width": "--width", "height": "--height", "context_noise": "--context-noise",
             "cfg": "--cfg-scale", "seed": "--seed", "window": None, "pixels": True}
NODE_NAMES = {"frames": "frames", "width": "width", "height": "height", "context_noise": "context_noise",
              "cfg": "cfg", "seed": "seed", "window": "window_frames", "pixels": True}
API_NAMES = {"frames": "num_frames", "width": "latent_width", "height": "latent_height",
             "context_noise": "context_noise", "cfg": "cfg_scale", "seed": "seeds", "window": "max_cache_frames",
             "pixels": False}


def latent_frames_for(pixel_frames: int) -> int:
    """1 + 4k pixel frames -> 1 + k latent frames (the VAE's first frame is encoded on its own)."""
    if pixel_frames < 1 or (pixel_frames - 1) % TEMPORAL_FACTOR:
        raise RequestError(f"{pixel_frames} pixel frames: the Wan VAE needs 4k+1 frames (1, 5, 9, ..., 33, ..., 81)")
    return (pixel_frames - 1) // TEMPORAL_FACTOR + 1


def pixel_frames_for(latent_frames: int) -> int:
    return (latent_frames - 1) * TEMPORAL_FACTOR + 1


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a request needs on its device, by part; `available` is what the device has (None: unknown)."""

    kv_cache: int
    latents: int
    activations: int
    weights: int = 0  # counted only when the model is not loaded yet
    pixels: int = 0  # counted only when the caller keeps the decoded video (the CLI)
    available: int | None = None

    @property
    def total(self) -> int:
        return self.kv_cache + self.latents + self.activations + self.weights + self.pixels

    @property
    def fits(self) -> bool:
        return self.available is None or self.total <= self.available

    def describe(self) -> str:
        parts = [("KV cache", self.kv_cache), ("weights", self.weights), ("activations", self.activations),
                 ("latents", self.latents), ("pixels", self.pixels)]
        return ", ".join(f"{name} {format_bytes(n)}" for name, n in parts if n)


@dataclass(frozen=True)
class VideoRequest:
    """A checked request: the latent shape the sampler runs and the memory it was found to need."""

    latent_frames: int
    latent_height: int
    latent_width: int
    memory: MemoryEstimate | None = field(default=None, compare=False)


def check_request(config, *, frames: int, width: int, height: int, batch: int = 1, guided: bool = False,
                  context_noise: float = 0.0, cfg_scale: float = 1.0, prefix_frames: int = 0,
                  window_frames: int | None = None, sink_frames: int | None = None, chunk_frames: int | None = None,
                  device=None, dtype: torch.dtype | None = None, include_weights: bool = False,
                  decoded_pixels: bool = False, held_bytes: int = 0, recache_frames: int = 0,
                  names: dict = CLI_NAMES) -> VideoRequest:
    """Check a request for `config` (a CausalWanConfig) and return its latent shape, or raise RequestError.

    frames/width/height: pixels when `names["pixels"]`, else latent frames and latent sizes.
    guided: classifier-free guidance doubles the batch the model and the cache see.
    prefix_frames: latent frames of a video being continued (they take RoPE positions and cache).
    window_frames: a rolling KV-cache window in latent frames (None or 0: the whole video).
    chunk_frames: a chunk size other than the config's (frame-wise sampling of a chunked model).
    device/dtype: where and in which dtype the model runs; with a device the memory is checked.
    include_weights: the model is not on the device yet, so its weights count too.
    decoded_pixels: the caller keeps the whole decoded video in memory (the CLI does).
    held_bytes: memory the caller already holds that the request will reuse (a KV cache kept
      for the next video), counted as available.
    recache_frames: latent frames of the largest prompt-switch re-cache pass (one model pass).
    """
    chunk = config.chunk_frames if not chunk_frames else chunk_frames
    _check_number(frames, names["frames"], minimum=1)
    _check_number(width, names["width"], minimum=1)
    _check_number(height, names["height"], minimum=1)
    if not isinstance(batch, int) or batch < 1:
        raise RequestError(f"give at least one seed (one per sample), got a batch of {batch!r}")
    if not _is_number(context_noise) or not 0 <= context_noise <= MAX_CONTEXT_NOISE:
        raise RequestError(f"{names['context_noise']}: context_noise is a timestep in [0, 1000], got {context_noise}")
    if not _is_number(cfg_scale) or not math.isfinite(cfg_scale):
        raise RequestError(f"{names['cfg']} must be a finite number (1 = no guidance), got {cfg_scale}")

    limits = _Limits(config, chunk, prefix_frames, names)
    latent_frames = limits.latent_frames(frames)
    latent_height, latent_width = limits.latent_size(width, height)
    _check_window(window_frames, chunk, sink_frames, names)

    memory = None
    if device is not None:
        memory = estimate_memory(config, batch=batch, guided=guided, latent_frames=latent_frames,
                                 latent_height=latent_height, latent_width=latent_width, prefix_frames=prefix_frames,
                                 window_frames=window_frames, sink_frames=sink_frames, chunk_frames=chunk,
                                 dtype=dtype or torch.float32, include_weights=include_weights,
                                 decoded_pixels=decoded_pixels, recache_frames=recache_frames,
                                 available=_plus(device_memory(device), held_bytes))
        if not memory.fits:
            raise RequestError(limits.memory_advice(memory, torch.device(device), frames, width, height,
                                                    latent_frames, batch, guided, window_frames, sink_frames,
                                                    dtype or torch.float32, include_weights, decoded_pixels))
    return VideoRequest(latent_frames, latent_height, latent_width, memory)


class _Limits:
    """The frame and size rules of one config, phrased in the caller's units and words."""

    def __init__(self, config, chunk: int, prefix_frames: int, names: dict):
        self.config, self.chunk, self.prefix, self.names = config, chunk, prefix_frames, names
        self.pixels = names["pixels"]
        p_t, self.p_h, self.p_w = config.patch_size
        if chunk % p_t:
            raise RequestError(f"chunks of {chunk} latent frames do not split into temporal patches of {p_t}")
        # RoPE's frame axis counts patches: prefix + new frames must stay within its positions.
        self.max_frames = config.rope_max_seq_len * p_t - prefix_frames
        if self.max_frames < chunk:
            raise RequestError(
                f"a prefix of {prefix_frames} latent frames leaves no room for a chunk of {chunk}: the model has "
                f"{config.rope_max_seq_len * p_t} frame positions (rope_max_seq_len); use a shorter prefix"
            )

    def user_frames(self, latent: int) -> int:
        return pixel_frames_for(latent) if self.pixels else latent

    def latent_frames(self, frames: int) -> int:
        """Latent frames for the user's count, or an error naming counts that work for this model."""
        name, chunk = self.names["frames"], self.chunk
        if self.pixels and (frames - 1) % TEMPORAL_FACTOR:
            below = frames - (frames - 1) % TEMPORAL_FACTOR
            raise RequestError(
                f"{name} {frames}: the Wan VAE needs 4k+1 frames, e.g. {below} or {below + TEMPORAL_FACTOR}; with "
                f"chunks of {chunk} latent frames use {name} {self._nearest(latent_frames_for(below))}"
            )
        latent = latent_frames_for(frames) if self.pixels else frames
        if latent % chunk:
            what = f"{frames} frames make {latent} latent frames, which" if self.pixels else f"{latent} latent frames"
            raise RequestError(f"{name} {frames}: {what} do not split into chunks of {chunk}; "
                               f"use {name} {self._nearest(latent)}")
        if latent > self.max_frames:
            longest = self.max_frames // chunk * chunk
            prefix = f" after a prefix of {self.prefix} latent frames" if self.prefix else ""
            raise RequestError(
                f"{name} {frames}: {latent} latent frames{prefix} exceed the "
                f"{self.config.rope_max_seq_len * self.config.patch_size[0]} frame positions this model has "
                f"(rope_max_seq_len; a rolling window does not extend them); use {name} {self.user_frames(longest)} "
                "or fewer"
            )
        return latent

    def _nearest(self, latent: int) -> str:
        """'9 or 21': the valid counts around `latent` latent frames that fit the model's positions."""
        lower = latent // self.chunk * self.chunk
        counts = [n for n in (lower, lower + self.chunk) if self.chunk <= n <= self.max_frames]
        longest = self.max_frames // self.chunk * self.chunk
        if not counts or counts[-1] < lower + self.chunk:
            return f"{self.user_frames(min(lower, longest))} or fewer (the RoPE frame positions allow no more)"
        return " or ".join(str(self.user_frames(n)) for n in counts)

    def latent_size(self, width: int, height: int) -> tuple[int, int]:
        """(latent height, latent width): multiples of the patch, within RoPE's rows and columns."""
        scale = SPATIAL_FACTOR if self.pixels else 1
        step_w, step_h = scale * self.p_w, scale * self.p_h
        w_name, h_name = self.names["width"], self.names["height"]
        if width % step_w or height % step_h:
            fix_w, fix_h = max(step_w, round(width / step_w) * step_w), max(step_h, round(height / step_h) * step_h)
            unit = f" (VAE {SPATIAL_FACTOR}x, patch {self.p_h}x{self.p_w})" if self.pixels else " (the patch size)"
            raise RequestError(f"{w_name}/{h_name} must be multiples of {step_w}x{step_h}{unit}, got {width}x{height}; "
                               f"try {fix_w}x{fix_h}")
        positions = self.config.rope_max_seq_len
        for name, value, step in ((w_name, width, step_w), (h_name, height, step_h)):
            if value // step > positions:
                raise RequestError(f"{name} {value} is larger than this model can place: RoPE has {positions} positions "
                                   f"of {step} per axis (rope_max_seq_len), so use {name} {positions * step} or less")
        return height // scale, width // scale

    def memory_advice(self, memory: MemoryEstimate, device, frames, width, height, latent_frames, batch, guided,
                      window_frames, sink_frames, dtype, include_weights, decoded_pixels) -> str:
        """The one-line refusal: what it needs, what the device has, and the largest request that fits."""
        names, chunk = self.names, self.chunk
        latent_h, latent_w = self.latent_size(width, height)

        def fits(frames_: int, window: int | None) -> bool:
            return estimate_memory(self.config, batch=batch, guided=guided, latent_frames=frames_,
                                   latent_height=latent_h, latent_width=latent_w, prefix_frames=self.prefix,
                                   window_frames=window, sink_frames=sink_frames, chunk_frames=chunk, dtype=dtype,
                                   include_weights=include_weights, decoded_pixels=decoded_pixels,
                                   available=memory.available).fits

        options = []
        shorter = next((n for n in range(latent_frames - chunk, 0, -chunk) if fits(n, window_frames)), None)
        if shorter is not None:
            options.append(f"{names['frames']} {self.user_frames(shorter)} or fewer")
        if names["window"] and not window_frames:
            sink = chunk if sink_frames is None else sink_frames
            window = next((n for n in range(latent_frames - chunk, sink, -chunk) if fits(latent_frames, n)), None)
            if window is not None:
                options.append(f"a rolling {names['window']} of {window} latent frames")
        options.append(f"a smaller {names['width']}/{names['height']}")
        if batch > 1:
            options.append("a smaller batch")
        what = f"{frames} frames of {width}x{height}" if self.pixels else f"{frames} latent frames of {height}x{width}"
        return (f"{what} need about {format_bytes(memory.total)} ({memory.describe()}) but {device} has "
                f"{format_bytes(memory.available)} available: use " + ", or ".join(options))


def _check_window(window_frames: int | None, chunk: int, sink_frames: int | None, names: dict) -> None:
    if not window_frames:
        return
    sink = chunk if sink_frames is None else sink_frames
    name = names["window"] or "window_frames"
    if not isinstance(sink, int) or sink < 0:
        raise RequestError(f"sink_frames must be a number of latent frames >= 0, got {sink!r}")
    if window_frames < sink + chunk:
        raise RequestError(
            f"{name}={window_frames} is too small: the rolling cache keeps {sink} sink frames and needs room for a "
            f"chunk of {chunk} more, so use >= {sink + chunk} latent frames, or 0 for no rolling window"
        )


def estimate_memory(config, *, batch: int, latent_frames: int, latent_height: int, latent_width: int,
                    guided: bool = False, prefix_frames: int = 0, window_frames: int | None = None,
                    sink_frames: int | None = None, chunk_frames: int | None = None,
                    dtype: torch.dtype = torch.float32, include_weights: bool = False, decoded_pixels: bool = False,
                    recache_frames: int = 0, available: int | None = None) -> MemoryEstimate:
    """Bytes a request needs: a floor, not a promise (allocator slack and a math-kernel attention
    fallback come on top).

    The parts are `asd_core.budget`'s (the figures `asd-inspect` reports): the KV cache for
    the cached frames (the window when rolling) and one pass's activations (a chunk, or a larger
    prompt-switch re-cache pass), for the batch doubled under guidance, and the weights.
    Latents: the float32 video as chunks plus their concatenation. Pixels: the decoded float32
    video, its concatenation and the uint8 copy.
    """
    from .budget import chunk_activation_bytes, kv_cache_bytes

    pass_frames = max(chunk_frames or config.chunk_frames, recache_frames)
    if pass_frames != config.chunk_frames:  # the largest single pass sets the activations
        config = dataclasses.replace(config, chunk_frames=pass_frames)
    model_batch = batch * (2 if guided else 1)
    video = prefix_frames + latent_frames
    cached = window_frames if window_frames and window_frames < video else video
    kv_cache = kv_cache_bytes(config, cached, latent_height, latent_width, dtype=dtype, batch=model_batch)
    text_tokens = config.text_len or 0
    activations = model_batch * chunk_activation_bytes(config, latent_height, latent_width, dtype=dtype,
                                                       text_tokens=text_tokens)["bytes"]
    latents = 2 * batch * config.in_channels * video * latent_height * latent_width * 4
    weights = _weight_bytes(config.to_json(), dtype) if include_weights else 0
    pixels = 0
    if decoded_pixels:
        frames = pixel_frames_for(latent_frames)
        pixels = batch * 3 * frames * latent_height * latent_width * SPATIAL_FACTOR**2 * (2 * 4 + 1)
    return MemoryEstimate(kv_cache, latents, activations, weights, pixels, available)


@functools.lru_cache(maxsize=8)
def _weight_bytes(config_json: str, dtype: torch.dtype) -> int:
    """`budget.weight_bytes` (a meta-device build) once per config: the refusal advice asks often."""
    from .budget import weight_bytes
    from .config import CausalWanConfig

    return weight_bytes(CausalWanConfig.from_json(config_json), dtype)["bytes"]


def device_memory(device) -> int | None:
    """Bytes free for a new allocation on `device`, or None when it cannot be told (mps, ...).

    CPU: available RAM (psutil when installed, else /proc/meminfo, else sysconf), capped by a
    cgroup memory limit when the process runs under one. CUDA: free device memory plus what
    torch's caching allocator holds unused.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return _cpu_available()
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return None


def _cpu_available() -> int | None:
    try:
        import psutil

        available = int(psutil.virtual_memory().available)
    except ImportError:
        available = _meminfo_available()
    limit = _cgroup_headroom()
    if limit is not None:
        available = limit if available is None else min(available, limit)
    return available


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_headroom() -> int | None:
    """cgroup v2 memory.max - memory.current, when this process has a limit (containers)."""
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as f:
            return max(0, int(limit) - int(f.read().strip()))
    except (OSError, ValueError):
        return None


def check_seed(seed, name: str = "--seed") -> int:
    """A seed torch.Generator takes: an integer in [0, 2^64 - 1]."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise RequestError(f"{name} must be an integer in [0, 2^64 - 1], got {shorten(str(seed))}")
    return seed


def format_bytes(n: int | None) -> str:
    if n is None:
        return "an unknown amount"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1e6:.2f} MB"


def shorten(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters with the length said, for echoing user input in an error."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _check_number(value, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RequestError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plus(available: int | None, held: int) -> int | None:
    return None if available is None else available + held
