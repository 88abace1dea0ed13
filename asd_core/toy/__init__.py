"""Toy synthetic video domain (bouncing coloured shapes with captions) and its exact evaluator.

The built-in default model trains on this domain because its ground truth is known: every
score can be exact. `domain` makes the videos; `measures` segments them; `scores` gives the
VBench-like quality, semantic and total, `fd` the Frechet distance to real videos and
`profile` the per-chunk measures, all numpy (64 videos in about a second), with every number
they judge by in `thresholds`. `model_eval.score_model` runs a model the way `asd-eval` does.
"""

from .domain import (
    BACKGROUND_RGB,
    CAPTION_VOCAB,
    COLOUR_RGB,
    COLOURS,
    KINDS,
    ShapeSpec,
    VideoSpec,
    caption,
    make_batch,
    parse_caption,
    render,
    render_video,
    sample_spec,
    sample_video_spec,
    tokenize_caption,
    trajectory,
    video_stream,
)
from .fd import FEATURE_NAMES, ReferenceStats, frechet_distance, reference_stats, video_features
from .model_eval import EVAL_STREAM, NOISE_STRIDE, eval_captions, score_model, score_real
from .profile import frame_profile
from .scores import evaluate_videos, score_videos
from .thresholds import THRESHOLDS, Thresholds

__all__ = [
    "BACKGROUND_RGB",
    "CAPTION_VOCAB",
    "COLOURS",
    "COLOUR_RGB",
    "EVAL_STREAM",
    "FEATURE_NAMES",
    "KINDS",
    "NOISE_STRIDE",
    "THRESHOLDS",
    "ReferenceStats",
    "ShapeSpec",
    "Thresholds",
    "VideoSpec",
    "caption",
    "eval_captions",
    "evaluate_videos",
    "frame_profile",
    "frechet_distance",
    "make_batch",
    "parse_caption",
    "reference_stats",
    "render",
    "render_video",
    "sample_spec",
    "sample_video_spec",
    "score_model",
    "score_real",
    "score_videos",
    "tokenize_caption",
    "trajectory",
    "video_features",
    "video_stream",
]
