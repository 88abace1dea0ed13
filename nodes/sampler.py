"""The causal sampler node: validates everything, then runs `asd_core.sample_video` chunk by chunk.

ComfyUI integration lives here and only here: the progress bar ticks per model call and
shows each finished chunk, Cancel is checked before every model call, and the model is
moved to ComfyUI's compute device for the run and back to its offload device after.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ..asd_core.request import NODE_NAMES, check_request, check_seed, estimate_memory
from ..asd_core.request import SPATIAL_FACTOR as PIXELS_PER_LATENT  # the VAE factors, not redefined here
from ..asd_core.request import TEMPORAL_FACTOR as FRAMES_PER_LATENT
from ..asd_core.samplers import AUTO as AUTO_SAMPLER
from ..asd_core.samplers import NAMES as SAMPLER_NAMES
from . import host
from .loader import MODEL_TYPE, AsdModel
from .plan import PLAN_TYPE
from .preview import ChunkPreviewer
from .sampler_choice import FAMILY_SINKS, FAMILY_WINDOW, choose
from .schedule import SCHEDULE_TYPE, PromptSchedule, switch_latent_frames

MAX_SEED = 0xFFFFFFFFFFFFFFFF
# The frames widget's grid. ComfyUI's frontend snaps an INT widget to min + k*step (offset
# min % step), so min 9 and step 12 offer exactly 4*(3n - 1) + 1 = 12n - 3 frames: 3n latent
# frames, whole chunks of 3 (every released causal Wan 1.3B checkpoint and the built-in
# default) and of 1 (frame-wise). Step 4 offered 1 + 4k, two of every three failing for
# chunks of 3. Rounding requests in the sampler instead would silently change the length
# asked for; API prompts off the grid get the validator's message with the nearest counts.
FRAMES_CHUNK = 3
FRAMES_STEP = FRAMES_PER_LATENT * FRAMES_CHUNK  # 12
FRAMES_MIN = FRAMES_PER_LATENT * (FRAMES_CHUNK - 1) + 1  # 9: one chunk of 3
FRAMES_DEFAULT = FRAMES_MIN + FRAMES_STEP  # 21: two chunks
FRAMES_MAX = FRAMES_MIN + (4097 - FRAMES_MIN) // FRAMES_STEP * FRAMES_STEP  # 4089: the last grid value <= 4097


@contextmanager
def on_compute_device(model, working_bytes: int = 0):
    """Move the model to ComfyUI's compute device for the run and back to its offload device after.

    ComfyUI is asked first to free the weights' bytes plus `working_bytes` (KV cache and
    activations), so it offloads the text encoder and VAE while the transformer runs.
    """
    device, offload = host.compute_device(), host.offload_device()
    moved = device != model.device
    if moved:
        host.free_memory_for(sum(p.numel() * p.element_size() for p in model.parameters()) + working_bytes, device)
        model.to(device)
    try:
        yield device
    finally:
        if moved or model.device != offload:
            model.to(offload)
            host.soft_empty_cache()


def conditioning_tensor(conditioning, text_dim: int, name: str) -> torch.Tensor:
    """The (1, L, D) text embedding of a ComfyUI CONDITIONING, checked against the model's text width."""
    from ..asd_core.text import conditioning_from_comfy

    if not isinstance(conditioning, list) or not conditioning:
        raise ValueError(f"{name} is not a ComfyUI CONDITIONING (a list of [tensor, dict] pairs)")
    context = conditioning_from_comfy(conditioning)
    if context.shape[-1] != text_dim:
        raise ValueError(
            f"{name} conditioning has width {context.shape[-1]} but this model expects {text_dim}: "
            + ("use the ASD Text Encode (built-in) node for the built-in default"
               if text_dim != 4096 else "use CLIPLoader (umt5_xxl, type wan) + CLIPTextEncode for Wan checkpoints")
        )
    return context


class ASDCausalSampler:
    DESCRIPTION = (
        "Generates a video chunk by chunk with a causal (autoregressive) Wan model: each chunk is denoised "
        "with the plan's steps, then cached so later chunks attend to it. Outputs a standard Wan LATENT "
        "(raw VAE space) that VAEDecode or ASD Decode turns into frames. A prefix latent continues a video, "
        "a start latent begins it with an image (I2V), a prompt schedule switches prompts mid-video, and a "
        "rolling window with sink frames makes videos longer than the model was trained on. The sampler, window and "
        "sinks default to those the checkpoint's family was released with."
    )
    CATEGORY = "ASD/sampling"
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Video latent [batch, 16, latent frames, height/8, width/8] in raw Wan-VAE space.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "Causal video model from an ASD loader."}),
                "plan": (PLAN_TYPE, {"tooltip": "Step plan from the ASD Step Scheduler (e.g. 1*, 2*, 4)."}),
                "positive": ("CONDITIONING", {
                    "tooltip": "Text conditioning: ASD Text Encode for the built-in default, "
                               "CLIPTextEncode with umt5 (type wan) for Wan checkpoints.",
                }),
                "seed": ("INT", {
                    "default": 0, "min": 0, "max": MAX_SEED,
                    "tooltip": "Noise seed; sample i of a batch uses seed + i, so each video depends only on its seed.",
                }),
                "frames": ("INT", {
                    "default": FRAMES_DEFAULT, "min": FRAMES_MIN, "max": FRAMES_MAX, "step": FRAMES_STEP,
                    "tooltip": "Video length in pixel frames. The widget steps through 9, 21, 33, ..., 81, ...: "
                               "1 + 4*k frames whose 1 + k latent frames fill whole chunks of 3 (Wan 1.3B, "
                               "Self Forcing, the built-in default) and also suit frame-wise sampling "
                               "(chunk_frames 1). Other chunk sizes: the error names the nearest valid counts.",
                }),
                "width": ("INT", {"default": 64, "min": 16, "max": 4096, "step": 16,
                                  "tooltip": "Width in pixels, a multiple of 16 (Wan: 832)."}),
                "height": ("INT", {"default": 64, "min": 16, "max": 4096, "step": 16,
                                   "tooltip": "Height in pixels, a multiple of 16 (Wan: 480)."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Videos generated at once."}),
                "chunk_frames": ("INT", {
                    "default": 0, "min": 0, "max": 64,
                    "tooltip": "Latent frames per chunk: 0 = what the model was trained with "
                               "(Self Forcing: 3, chunk-wise); 1 = frame-wise.",
                }),
                "context_noise": ("FLOAT", {
                    "default": 0.0, "min": 0.0, "max": 1000.0, "step": 1.0,
                    "tooltip": "Timestep the model is told when a finished chunk is written to the KV cache; "
                               "the chunk itself stays clean, as in Self Forcing's inference (0 = its default).",
                }),
                "window_frames": ("INT", {
                    "default": FAMILY_WINDOW, "min": FAMILY_WINDOW, "max": 4096,
                    "tooltip": "Rolling KV-cache window in latent frames, sinks included, for videos longer than "
                               "training (keeps the sinks, drops the oldest others). -1 = the checkpoint family's "
                               "own (LongLive 12, Reward Forcing 9; the built-in default: whole video); "
                               "0 = cache the whole video.",
                }),
                "cfg": ("FLOAT", {
                    "default": 1.0, "min": 0.0, "max": 30.0, "step": 0.1,
                    "tooltip": "Classifier-free guidance scale, used only with a negative conditioning. "
                               "Distilled (ASD / Self Forcing) models need none: keep 1.0. A teacher file "
                               "records its scale as metadata asd.cfg (the built-in teacher: 2).",
                }),
            },
            "optional": {
                "negative": ("CONDITIONING", {"tooltip": "Negative text conditioning for cfg > 1 (optional)."}),
                "prefix": ("LATENT", {
                    "tooltip": "Latent of a video to continue (VAEEncode / ASD Encode Video Prefix); "
                               "its frames fill the cache first.",
                }),
                "include_prefix": ("BOOLEAN", {
                    "default": True,
                    "tooltip": "Put the prefix frames in front of the new ones in the output, so the decoded "
                               "video is the whole continued clip.",
                }),
                "start_latent": ("LATENT", {
                    "tooltip": "Image to video: the latent of a start image (ASD Encode Start Image for the built-in "
                               "default, VAEEncode with the Wan VAE for Wan files). It seeds the cache and is the "
                               "video's first latent frame; `frames` counts the frames generated after it.",
                }),
                "prompt_schedule": (SCHEDULE_TYPE, {
                    "tooltip": "Prompt switches from ASD Prompt Schedule: later prompts take over from their start "
                               "frames (positive fills the video before the first).",
                }),
                # Widgets added after the existing ones, so workflows saved before keep their values in place.
                "sink_frames": ("INT", {
                    "default": FAMILY_SINKS, "min": FAMILY_SINKS, "max": 4096,
                    "tooltip": "With a rolling window: latent frames at the start of the video kept in the cache "
                               "for ever (attention sinks). -2 = the checkpoint family's own (one chunk unless it "
                               "defines others); -1 = one chunk (Self Forcing's); 0 = none.",
                }),
                "sampler": (list(SAMPLER_NAMES), {
                    "default": AUTO_SAMPLER,
                    "tooltip": "Sampling algorithm. auto = the one the checkpoint's family was released with: "
                               "Self Forcing's chunk loop for most, CausVid's grid sigmas, Rolling Forcing's "
                               "staggered window, Infinite Forcing's V-sink, Reward Forcing's EMA sink.",
                }),
            },
        }

    def sample(self, model: AsdModel, plan, positive, seed: int, frames: int, width: int, height: int,
               batch_size: int, chunk_frames: int, context_noise: float, window_frames: int, cfg: float,
               negative=None, prefix=None, include_prefix: bool = True, start_latent=None, prompt_schedule=None,
               sink_frames: int = FAMILY_SINKS, sampler: str = AUTO_SAMPLER):
        from ..asd_core.samplers import sample_with
        from ..asd_core.start_image import start_latents_from_latent
        from ..asd_core.vae import from_raw, to_raw

        if not isinstance(model, AsdModel):
            raise ValueError("model must come from an ASD loader node")
        net = model.model
        if chunk_frames < 0:
            raise ValueError(f"chunk_frames must be >= 0 (0 = the model's own), got {chunk_frames}")
        if not 1 <= batch_size <= 64:
            raise ValueError(f"batch_size must be in [1, 64], got {batch_size}")
        check_seed(seed, "seed")
        choice = choose(sampler, window_frames, sink_frames, getattr(net, "family", None))
        if prefix is not None and start_latent is not None:
            raise ValueError("connect either prefix (continue a video) or start_latent (begin with an image), not both")
        if prompt_schedule is not None and not isinstance(prompt_schedule, PromptSchedule):
            raise ValueError("prompt_schedule must come from the ASD Prompt Schedule node")

        chunk = chunk_frames or net.config.chunk_frames  # 1 = frame-wise; the cached path needs no mask
        prefix_latents = None if prefix is None else video_latent(prefix, "prefix", batch_size, width, height, net)
        start_latents = (None if start_latent is None
                         else video_latent(start_latent, "start_latent", batch_size, width, height, net))
        cached_before = sum(x.shape[2] for x in (prefix_latents, start_latents) if x is not None)
        window, sinks = choice.memory_window(chunk)
        request = dict(frames=frames, width=width, height=height, batch=batch_size,
                       guided=negative is not None and cfg != 1.0, context_noise=context_noise, cfg_scale=cfg,
                       prefix_frames=cached_before, window_frames=window, sink_frames=sinks, chunk_frames=chunk,
                       names=NODE_NAMES)
        shape = check_request(net.config, **request)  # the shape rules; memory once ComfyUI has made room
        num_latent, latent_h, latent_w = shape.latent_frames, shape.latent_height, shape.latent_width
        context = conditioning_tensor(positive, net.config.text_dim, "positive")
        negative_context = None
        if negative is not None and cfg != 1.0:
            negative_context = conditioning_tensor(negative, net.config.text_dim, "negative")
        normalised_prefix = None if prefix_latents is None else from_raw(prefix_latents)
        optional = {}  # I2V and prompt-switch arguments only when used, so the sampler's defaults hold otherwise
        if prompt_schedule is not None:
            optional = prompt_switches(prompt_schedule, chunk, num_latent, net.config.text_dim)
            if optional["recache"]:  # the largest re-cache pass is one model call over the cached frames
                from ..asd_core.prompt_switch import largest_recache

                request["recache_frames"] = largest_recache(
                    optional["prompt_switches"], prefix_frames=cached_before,
                    cached_frames=window or cached_before + num_latent)
        if start_latents is not None:
            optional["start_latents"] = start_latents_from_latent({"samples": start_latents})

        seeds = [(seed + i) % (MAX_SEED + 1) for i in range(batch_size)]
        progress = None
        # The built-in default brings its VAE: previews in true colour; Wan files: latent false colour.
        previewer = ChunkPreviewer(decode=model.pipeline.codec.decode if model.pipeline is not None else None)

        def on_progress(p):
            nonlocal progress
            if progress is None:
                progress = host.Progress(p.total_calls)
            preview = previewer.image(p.finished_chunk) if p.finished_chunk is not None else None
            progress.update(p.call, preview)

        working = estimate_memory(net.config, batch=batch_size, guided=request["guided"], latent_frames=num_latent,
                                  latent_height=latent_h, latent_width=latent_w, prefix_frames=cached_before,
                                  window_frames=window, sink_frames=sinks, chunk_frames=chunk,
                                  recache_frames=request.get("recache_frames", 0), dtype=net.dtype)
        with on_compute_device(net, working.total):  # ComfyUI frees the weights' bytes plus cache and activations
            check_request(net.config, device=net.device, dtype=net.dtype, **request)  # before any model call
            chunks = list(sample_with(
                choice.sampler, net, plan=plan, context=context, num_frames=num_latent, latent_height=latent_h,
                latent_width=latent_w, seeds=seeds, negative_context=negative_context, cfg_scale=cfg,
                context_noise=context_noise, prefix=normalised_prefix, chunk_frames=chunk,
                max_cache_frames=choice.window_frames, sink_frames=choice.sink_frames, callback=on_progress,
                should_cancel=_cancel_requested, **optional,
            ))
        latents = torch.cat(chunks, dim=2)  # (B, C, F, H, W), normalised
        samples = to_raw(latents)
        if prefix_latents is not None and include_prefix:
            samples = torch.cat([prefix_latents.to(samples), samples], dim=2)
        return ({"samples": samples.to(torch.float32).cpu()},)


SOURCES = {"prefix": "prefix video", "start_latent": "start image"}


def video_latent(latent, name: str, batch_size: int, width: int, height: int, net) -> torch.Tensor:
    """A LATENT input's raw samples (prefix or start image), checked against the requested video."""
    if not isinstance(latent, dict) or "samples" not in latent:
        raise ValueError(f"{name} must be a LATENT ({{'samples': tensor}})")
    samples = latent["samples"]
    if samples.ndim != 5:
        raise ValueError(
            f"{name} latent must be a video latent [B, 16, T, H/8, W/8], got shape {tuple(samples.shape)}; "
            "encode the frames with VAEEncode (Wan VAE) or the ASD Encode (built-in) nodes"
        )
    expected = (net.config.in_channels, height // PIXELS_PER_LATENT, width // PIXELS_PER_LATENT)
    got = (samples.shape[1], samples.shape[3], samples.shape[4])
    if got != expected:
        raise ValueError(
            f"{name} latent has {got[0]} channels and {got[1] * PIXELS_PER_LATENT}x{got[2] * PIXELS_PER_LATENT} "
            f"pixels (HxW) but the video is {height}x{width} with {expected[0]} channels: set width/height to the "
            f"{SOURCES[name]}'s size"
        )
    if samples.shape[0] not in (1, batch_size):
        raise ValueError(f"{name} latent batch {samples.shape[0]} must be 1 or batch_size ({batch_size})")
    return samples.float().expand(batch_size, -1, -1, -1, -1).contiguous()


def prompt_switches(schedule: PromptSchedule, chunk: int, latent_frames: int, text_dim: int) -> dict:
    """`sample_video`'s prompt_switches and recache arguments for a schedule, on this run's chunk boundaries."""
    from ..asd_core.sampler import PromptSwitch

    frames = switch_latent_frames(schedule, chunk, latent_frames)
    switches = tuple(PromptSwitch(frame=frame, context=conditioning_tensor(entry.conditioning, text_dim, entry.name))
                     for frame, entry in zip(frames, schedule.entries))
    return {"prompt_switches": switches, "recache": schedule.recache}


def _cancel_requested() -> bool:
    """Raises ComfyUI's InterruptProcessingException when Cancel was pressed; it must propagate as is."""
    host.check_interrupted()
    return False
