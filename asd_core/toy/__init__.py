"""Toy synthetic video domain (bouncing coloured shapes with captions) and its exact evaluator.

The built-in default model trains on this domain; `evaluate_videos` scores generated videos
like VBench (quality, semantic, total) but exactly, plus a Frechet distance to real videos.
Pure numpy (no torch), fast enough to score 64 videos in about a second.
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
    sample_spec,
    sample_video,
    sample_video_spec,
    tokenize_caption,
    trajectory,
    video_stream,
)
from .evaluate import (
    ReferenceStats,
    evaluate_videos,
    frechet_distance,
    reference_stats,
    score_videos,
    video_features,
)

__all__ = [
    "BACKGROUND_RGB",
    "CAPTION_VOCAB",
    "COLOUR_RGB",
    "COLOURS",
    "KINDS",
    "ReferenceStats",
    "ShapeSpec",
    "VideoSpec",
    "caption",
    "evaluate_videos",
    "frechet_distance",
    "make_batch",
    "parse_caption",
    "reference_stats",
    "render",
    "sample_spec",
    "sample_video",
    "sample_video_spec",
    "score_videos",
    "tokenize_caption",
    "trajectory",
    "video_features",
    "video_stream",
]
