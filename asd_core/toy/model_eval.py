"""Score a model of the toy domain: the captions, noise, sampling and decoding `asd-eval` uses.

One definition of an evaluation run, so `asd-eval`, the tests and lab scripts compare like
with like: sample i at evaluation seed s has the caption of video i of the stream
EVAL_STREAM + s and its own noise seed s * NOISE_STRIDE + i, so every row of a comparison
sees the same prompts and the same noise. Loading files stays with the caller.

Long videos (`frames` beyond the trained 33) keep those captions and that noise: the first
chunks of a whole-cache run are the trained-length run's, so a drift over the chunks reads
against known numbers. Their ground truth is the same shapes rendered for longer
(`real_videos`); past the trained length the domain no longer keeps shapes apart, so the
real videos' later chunks are the ceiling to read a model's against, not 1.0.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from tqdm import tqdm

from ..request import check_request
from ..sampler import sample_video
from ..schedule import StepPlan, parse_plan
from .defaults import TOY, toy_model_config
from .domain import caption, render, sample_video_spec
from .profile import MIN_CHUNK_FRAMES, chunk_scores
from .scores import evaluate_videos

EVAL_STREAM = 2_000_000  # caption stream of evaluation seed 0; far from training (11) and the FD reference
NOISE_STRIDE = 1_000_000  # noise seed of sample i at evaluation seed s: s * NOISE_STRIDE + i


def eval_captions(num: int, seed: int = 0) -> list[str]:
    """The captions of evaluation seed `seed`: those of the first `num` videos of its stream."""
    stream = EVAL_STREAM + seed
    return [caption(sample_video_spec(stream, i, TOY.pixel_frames, TOY.height, TOY.width)) for i in range(num)]


def eval_noise_seeds(num: int, seed: int = 0) -> list[int]:
    """The noise seeds of evaluation seed `seed`'s first `num` videos: every scorer draws the same noise."""
    return [seed * NOISE_STRIDE + i for i in range(num)]


def real_videos(num: int, seed: int = 0, frames: int = TOY.pixel_frames) -> tuple[np.ndarray, list[str]]:
    """The domain's videos behind `eval_captions(num, seed)`, rendered for `frames` pixel frames.

    The shapes are drawn for the trained length (that is what the captions describe), then
    rendered for any length: at 33 frames these are the stream's own videos.
    """
    stream = EVAL_STREAM + seed
    specs = [sample_video_spec(stream, i, TOY.pixel_frames, TOY.height, TOY.width) for i in range(num)]
    return np.stack([render(s, frames, TOY.height, TOY.width) for s in specs]), [caption(s) for s in specs]


def score_model(model, text_encoder, codec, *, plan: StepPlan | str | None = None, num: int = 64, seed: int = 0,
                cfg_scale: float = 1.0, context_noise: float = 0.0, batch: int = 16, per_chunk: bool = False,
                frames: int = TOY.pixel_frames, window: int | None = None, sink: int | None = None,
                progress: bool = False) -> dict:
    """Sample `num` videos of evaluation seed `seed`, decode them and score them.

    plan: None -> the model's trained plan ("1*" if it records none). frames: pixel frames
    (4k+1, whole chunks). window: a rolling KV-cache window in latent frames, the chunk being
    made included (None: the whole video); sink: latent frames it keeps for ever (default one
    chunk). Returns the flat dict of `evaluate_videos` plus plan (its spec), num, seed, frames,
    window and sink, and with per_chunk a "chunks" dict (`chunk_scores` per chunk of the model,
    and the chunks' pixel frames).
    """
    _check_run(num, batch, seed, cfg_scale, context_noise)
    if sink is not None and not window:
        raise ValueError(f"sink={sink} needs a rolling window: the whole-video cache keeps every frame; pass window")
    latent_frames = check_request(model.config, frames=frames, width=TOY.width, height=TOY.height,
                                  window_frames=window, sink_frames=sink, names=LIBRARY_NAMES).latent_frames
    ranges = _chunk_ranges(latent_frames, model.config.chunk_frames) if per_chunk else None  # before sampling
    if not isinstance(plan, StepPlan):
        plan = parse_plan(plan or model.trained_plan or "1*")
    captions = eval_captions(num, seed)
    videos = generate_videos(model, text_encoder, codec, captions, eval_noise_seeds(num, seed), plan, cfg_scale, batch,
                             context_noise=context_noise, latent_frames=latent_frames, window=window, sink=sink,
                             progress=progress)
    return _scores(videos, captions, ranges) | {
        "plan": plan.spec, "num": num, "seed": seed, "frames": frames, "window": window or None,
        "sink": _sink_used(model.config.chunk_frames, window, sink)}


def score_real(*, num: int = 64, seed: int = 0, codec=None, batch: int = 16, per_chunk: bool = False,
               frames: int = TOY.pixel_frames) -> dict:
    """Score the domain's own videos of evaluation seed `seed`: the ceiling of every score.

    codec: a `LatentCodec` to pass the videos through first (encode, decode), which measures
    what the VAE alone loses. frames: pixel frames (`real_videos`). Same result keys as
    `score_model`, with plan "-" and no window.
    """
    _check_run(num, batch, seed)
    latent_frames = check_request(toy_model_config(), frames=frames, width=TOY.width, height=TOY.height,
                                  names=LIBRARY_NAMES).latent_frames
    videos, captions = real_videos(num, seed, frames)
    if codec is not None:
        videos = vae_round_trip(videos, codec, batch)
    ranges = _chunk_ranges(latent_frames, TOY.chunk_frames) if per_chunk else None
    return _scores(videos, captions, ranges) | {
        "plan": "-", "num": num, "seed": seed, "frames": frames, "window": None, "sink": None}


# The words of score_model's own arguments, for request errors raised here (the CLI checks with its flags).
LIBRARY_NAMES = {"frames": "frames", "width": "width", "height": "height", "context_noise": "context_noise",
                 "cfg": "cfg_scale", "seed": "seed", "window": "window", "pixels": True}


def _sink_used(chunk_frames: int, window: int | None, sink: int | None) -> int | None:
    """The sink frames a run keeps: none without a window, else `sink` (default one chunk, as the sampler)."""
    if not window:
        return None
    return chunk_frames if sink is None else sink


def _check_run(num: int, batch: int, seed: int, cfg_scale: float = 1.0, context_noise: float = 0.0) -> None:
    """Fail before any sampling (the sampler checks context_noise too, but only once it runs)."""
    if num < 2:
        raise ValueError(f"num must be >= 2 (the Frechet distance needs a covariance), got {num}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not 0 <= context_noise <= 1000:
        raise ValueError(f"context_noise is a timestep in [0, 1000], got {context_noise}")
    if not cfg_scale >= 0:
        raise ValueError(f"cfg_scale must be >= 0 (1 = no guidance), got {cfg_scale}")


def _chunk_ranges(latent_frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """Each chunk's (first, last) pixel frame, or an error when a chunk is too short to score alone."""
    from ..vae import chunk_pixel_ranges

    ranges = chunk_pixel_ranges(latent_frames, chunk_frames)
    first, last = ranges[0]
    if last - first + 1 < MIN_CHUNK_FRAMES:
        raise ValueError(f"the first chunk of {chunk_frames} latent frame(s) decodes to {last - first + 1} pixel "
                         f"frame(s), too few to score alone (>= {MIN_CHUNK_FRAMES}): per-chunk scores (asked for, or implied by "
                         "a longer video or a window) need chunks of >= 2 latent frames")
    return ranges


def _scores(videos: np.ndarray, captions: list[str], ranges: list[tuple[int, int]] | None) -> dict:
    result = evaluate_videos(videos, captions)
    if ranges is not None:
        result["chunks"] = {"pixel_frames": [list(r) for r in ranges]} | chunk_scores(videos, captions, ranges)
    return result


def generate_videos(model, text_encoder, codec, captions: list[str], seeds: list[int], plan: StepPlan,
                    cfg_scale: float, batch: int, context_noise: float = 0.0, latent_frames: int = TOY.latent_frames,
                    window: int | None = None, sink: int | None = None, progress: bool = False) -> np.ndarray:
    """Videos (N, T, H, W, 3) uint8 for the captions, sampled `batch` at a time (with a progress bar).

    window/sink: the sampler's rolling KV cache (`max_cache_frames`, `sink_frames`), latent frames.
    """
    from ..vae import pixels_to_video

    latent = (latent_frames, TOY.latent_height, TOY.latent_width)
    if model.config.chunk_frames > TOY.latent_frames or TOY.latent_frames % model.config.chunk_frames:
        raise ValueError(f"the model's chunks of {model.config.chunk_frames} latent frames do not split the "
                         f"domain's {TOY.latent_frames} latent frames: not a model of the toy domain")
    out = []
    with torch.no_grad():
        negative = text_encoder.encode([""]) if cfg_scale != 1.0 else None
        bar = tqdm(total=len(captions), desc=f"plan {plan.spec}", unit="video", file=sys.stderr, leave=False,
                   disable=not progress)
        for lo in range(0, len(captions), batch):
            texts, batch_seeds = captions[lo:lo + batch], seeds[lo:lo + batch]
            context = text_encoder.encode(texts)
            chunks = list(sample_video(model, plan=plan, context=context, num_frames=latent[0],
                                       latent_height=latent[1], latent_width=latent[2], seeds=batch_seeds,
                                       negative_context=negative, cfg_scale=cfg_scale,
                                       context_noise=context_noise, max_cache_frames=window or None,
                                       sink_frames=sink))
            pixels = codec.decode(torch.cat(chunks, dim=2).float())
            out.append(to_uint8(pixels_to_video(pixels)))
            bar.update(len(texts))
        bar.close()
    return np.concatenate(out)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """Float frames in [0, 1] -> the uint8 numpy video the evaluator reads."""
    return (video.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def vae_round_trip(videos: np.ndarray, codec, batch: int) -> np.ndarray:
    """uint8 videos (N, T, H, W, 3) encoded and decoded by `codec`, `batch` at a time."""
    from ..vae import pixels_to_video, video_to_pixels

    out = []
    with torch.no_grad():
        for lo in range(0, len(videos), batch):
            frames = torch.from_numpy(videos[lo:lo + batch]).float() / 255.0
            latents = codec.encode(video_to_pixels(frames))
            out.append(to_uint8(pixels_to_video(codec.decode(latents))))
    return np.concatenate(out)
