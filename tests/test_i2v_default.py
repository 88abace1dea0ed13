"""Image-to-video end to end on the built-in default (CPU): toy start image -> codec -> sampler -> frames.

A frame rendered by the toy domain is encoded with the default's own codec
(`encode_start_image`) and the shipped student samples after it (`start_latents`) with the
frame's caption. Checked: the video's first frame decodes to the start image within the VAE's
round-trip error, and the generated frames continue it, by the evaluator's own segmentation: the
start's shapes are found near where the start image put them in the first generated frame
(while a text-to-video sample of the same seeds and captions puts them elsewhere), and their
colours stay in the generated frames.
"""

import numpy as np
import pytest
import torch

from asd_core.sampler import generate_latents
from asd_core.schedule import parse_plan
from asd_core.start_image import encode_start_image
from asd_core.toy.defaults import TOY, load_default_pipeline
from asd_core.toy.domain import COLOURS, parse_caption, render_video
from asd_core.toy.measures import analyse
from asd_core.toy.thresholds import default_min_area

RENDER_SEED = 11
SAMPLES = range(6)  # videos 0-5 of that stream; sampler seed = index
GENERATED = 2 * TOY.chunk_frames  # latent frames after the start image: two chunks
NEAR_PIXELS = 8  # a shape "continues" when its centroid is within this many pixels of the start's
MIN_AREA = default_min_area(TOY.height, TOY.width)


@pytest.fixture(scope="module")
def default():
    return load_default_pipeline(allow_untrained=False)


@pytest.fixture(scope="module")
def starts():
    """(first frames (N, H, W, 3) uint8, captions)."""
    videos, captions = zip(*(render_video(RENDER_SEED, index) for index in SAMPLES))
    return np.stack([video[0] for video in videos]), list(captions)


def to_frames(pixels: torch.Tensor) -> np.ndarray:
    """Decoded (B, 3, T, H, W) in [-1, 1] -> uint8 (B, T, H, W, 3), what the evaluator reads."""
    return ((pixels.clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()


@pytest.fixture(scope="module")
def videos(default, starts):
    """Decoded I2V and T2V samples of the same seeds and captions."""
    images, captions = starts
    start = torch.cat([encode_start_image(default.codec, torch.from_numpy(image[None]).float() / 255)
                       for image in images])
    common = dict(plan=parse_plan("1*"), context=default.text_encoder.encode(captions), num_frames=GENERATED,
                  latent_height=TOY.latent_height, latent_width=TOY.latent_width, seeds=list(SAMPLES))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        i2v = generate_latents(default.model, start_latents=start, **common)
        t2v = generate_latents(default.model, **common)
        decoded = {name: to_frames(default.codec.decode(latents)) for name, latents in (("i2v", i2v), ("t2v", t2v))}
        decoded["round_trip"] = to_frames(default.codec.decode(start))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(i2v[:, :, :1], start)
    return decoded


def start_shapes(image: np.ndarray, caption: str) -> list[tuple[int, float, float]]:
    """(colour class, centroid x, y) of each captioned shape the evaluator finds in the image."""
    found = analyse(image[None], MIN_AREA)
    classes = [1 + COLOURS.index(colour) for colour, _ in parse_caption(caption)]
    return [(c, found.cx[0, c], found.cy[0, c]) for c in classes if found.count[0, c] > 0]


def test_the_first_frame_is_the_start_image_within_the_vaes_error(videos, starts):
    images, captions = starts
    first = videos["i2v"][:, 0].astype(np.float64)
    # the start latent decodes alone to what it decodes to at the head of the video (causal VAE)
    assert np.abs(first - videos["round_trip"][:, 0]).max() <= 1
    error = np.abs(first - images).mean(axis=(1, 2, 3)) / 255
    assert (error < 0.05).all(), error  # measured 0.02-0.03: the toy VAE's round trip
    for image, frame, caption in zip(images, videos["i2v"][:, 0], captions):
        assert [c for c, _, _ in start_shapes(frame, caption)] == [c for c, _, _ in start_shapes(image, caption)]


def continued_fraction(video_frames: np.ndarray, images: np.ndarray, captions: list[str], frame: int) -> float:
    """Of the start's shapes, the fraction found within NEAR_PIXELS of their start position in
    pixel frame `frame` (the shapes move, so only the frames right after the start)."""
    near = []
    for frames, image, caption in zip(video_frames, images, captions):
        found = analyse(frames[frame : frame + 1], MIN_AREA)
        for c, x, y in start_shapes(image, caption):
            near.append(bool(np.hypot(found.cx[0, c] - x, found.cy[0, c] - y) <= NEAR_PIXELS))  # NaN: not found
    return float(np.mean(near))


def test_the_generated_frames_continue_the_start_image(videos, starts):
    images, captions = starts
    i2v = continued_fraction(videos["i2v"], images, captions, frame=1)
    t2v = continued_fraction(videos["t2v"], images, captions, frame=1)
    # measured 8 of the 9 start shapes vs none (the text-only sample draws them somewhere else)
    assert i2v >= 0.6 and t2v <= 0.2, (i2v, t2v)


def test_the_start_images_colours_stay_in_the_generated_frames(videos, starts):
    """The evaluator's colour check over the generated frames, for the colours the start shows."""
    images, captions = starts
    present = []
    for frames, image, caption in zip(videos["i2v"], images, captions):
        classes = [c for c, _, _ in start_shapes(image, caption)]
        present.append((analyse(frames[1:], MIN_AREA).count[:, classes] > 0).mean())
    assert np.mean(present) >= 0.7, present  # measured 0.84

