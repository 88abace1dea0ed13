"""Long-video evaluation: `asd-eval --frames N --window W --sink S` scores every chunk of a long video.

The per-chunk numbers are checked against an independent path: the sampler called directly,
its video decoded, and each chunk's frames scored as a video of their own by `score_videos`.
"""

import json

import numpy as np
import pytest
import torch

from asd_core.checkpoint import save_checkpoint
from asd_core.cli.evaluate import main
from asd_core.model import CausalWanTransformer
from asd_core.sampler import sample_video
from asd_core.schedule import parse_plan
from asd_core.toy.defaults import TOY, toy_model_config
from asd_core.toy.domain import BACKGROUND_RGB, make_batch
from asd_core.toy.measures import analyse
from asd_core.toy.model_eval import EVAL_STREAM, NOISE_STRIDE, eval_captions, real_videos
from asd_core.toy.profile import chunk_scores, slice_analysis
from asd_core.toy.scores import score_videos
from asd_core.toy.text_encoder import ToyTextConfig, ToyTextEncoder
from asd_core.toy.thresholds import default_min_area
from asd_core.vae import LatentCodec, chunk_pixel_ranges, pixels_to_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FRAMES = 45  # 12 latent frames = 4 chunks of 3: a window of 6 rolls from the third chunk on


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory):
    """A random student of the domain's sizes, its text encoder beside it, and a VAE."""
    folder = tmp_path_factory.mktemp("toy_long")
    torch.manual_seed(0)
    model = CausalWanTransformer(toy_model_config())
    student = save_checkpoint(folder / "student.safetensors", model.state_dict(), toy_model_config(), plan="1*")
    ToyTextEncoder(ToyTextConfig(width=TOY.text_dim, max_length=TOY.text_length)).save(folder / "text_encoder.safetensors")
    vae = folder / "vae.safetensors"
    LatentCodec.tiny_random(seed=0).save(vae)
    return {"student": student, "vae": vae, "text_encoder": folder / "text_encoder.safetensors"}


def run_json(capsys, *args) -> dict:
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _noisy_long_videos(num: int = 3, frames: int = FRAMES) -> tuple[np.ndarray, list[str]]:
    """Real long videos made imperfect in different ways per chunk, so no score is trivially 1."""
    videos, captions = real_videos(num, seed=2, frames=frames)
    rng = np.random.default_rng(0)
    videos = np.clip(videos.astype(np.int16) + rng.integers(-40, 40, videos.shape), 0, 255).astype(np.uint8)
    videos[0, 14:18] = BACKGROUND_RGB  # empty frames inside the second chunk
    videos[1, 25:] = videos[1, 25:, ::-1]  # shapes jump (flipped rows) from frame 25 on
    return videos, captions


def test_chunk_scores_equal_scoring_each_chunk_alone():
    videos, captions = _noisy_long_videos()
    ranges = chunk_pixel_ranges(12, 3)
    per_chunk = chunk_scores(videos, captions, ranges)
    for i, (first, last) in enumerate(ranges):
        alone = score_videos(videos[:, first : last + 1], captions)
        assert set(per_chunk) == set(alone)
        for key, values in alone.items():
            assert per_chunk[key][i] == pytest.approx(float(values.mean()), abs=1e-12), (key, i)
    assert per_chunk["empty_frames"][1] > 0 and per_chunk["empty_frames"][0] == 0


def test_a_slice_of_the_analysis_is_the_analysis_of_the_slice():
    videos, _ = _noisy_long_videos(2)
    area = default_min_area(*videos.shape[2:4])
    whole = analyse(videos[1], area)
    part = slice_analysis(whole, 21, 32)  # the flip at frame 25 inside
    alone = analyse(videos[1, 21:33], area)
    for name in ("classes", "count", "area", "cx", "cy", "x0", "x1", "y0", "y1", "kind"):
        np.testing.assert_array_equal(getattr(part, name), getattr(alone, name), err_msg=name)
    order = np.lexsort((part.blobs["cx"], part.blobs["frame"]))
    order_alone = np.lexsort((alone.blobs["cx"], alone.blobs["frame"]))
    for key in alone.blobs:
        np.testing.assert_array_equal(part.blobs[key][order], alone.blobs[key][order_alone], err_msg=key)


def test_ranges_too_short_or_outside_are_one_line_errors():
    videos, captions = _noisy_long_videos(2, 13)
    with pytest.raises(ValueError, match=r"has 1 frames; scoring it needs >= 3"):
        chunk_scores(videos, captions, [(0, 0), (1, 12)])
    with pytest.raises(ValueError, match="outside the videos' 13 frames"):
        chunk_scores(videos, captions, [(1, 13)])


def test_real_long_videos_are_the_eval_shapes_rendered_longer():
    long, captions = real_videos(3, seed=1, frames=FRAMES)
    short, short_captions = make_batch(EVAL_STREAM + 1, 3, TOY.pixel_frames)
    assert long.shape[1] == FRAMES and captions == short_captions == eval_captions(3, seed=1)
    np.testing.assert_array_equal(long[:, : TOY.pixel_frames], short)


def _direct_videos(files, frames_latent: int, window: int | None, sink: int | None, num: int) -> np.ndarray:
    """The sampler called directly (not through score_model): the same captions, noise seeds and decode."""
    from asd_core.checkpoint import load_model

    model = load_model(files["student"])
    text_encoder = ToyTextEncoder.load(files["text_encoder"])
    codec = LatentCodec.load(files["vae"])
    seeds = [i for i in range(num)]  # evaluation seed 0: noise seed 0 * NOISE_STRIDE + i
    assert NOISE_STRIDE * 0 + 1 == seeds[1]
    with torch.no_grad():
        chunks = sample_video(model, plan=parse_plan("1*"), context=text_encoder.encode(eval_captions(num)),
                              num_frames=frames_latent, latent_height=TOY.latent_height,
                              latent_width=TOY.latent_width, seeds=seeds, max_cache_frames=window, sink_frames=sink)
        pixels = pixels_to_video(codec.decode(torch.cat(list(chunks), dim=2)))
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def test_long_video_report_equals_scoring_each_chunk_of_the_sampled_video(toy_files, capsys):
    common = ["--checkpoint", str(toy_files["student"]), "--vae", str(toy_files["vae"]), "--num", "2",
              "--frames", str(FRAMES)]
    rolled = run_json(capsys, *common, "--window", "6", "--sink", "3")
    assert (rolled["frames"], rolled["window"], rolled["sink"]) == (FRAMES, 6, 3)
    ranges = chunk_pixel_ranges(12, 3)
    assert rolled["chunks"]["pixel_frames"] == [list(r) for r in ranges]  # per chunk without --per-chunk

    videos = _direct_videos(toy_files, 12, window=6, sink=3, num=2)
    captions = eval_captions(2)
    for i, (first, last) in enumerate(ranges):
        alone = score_videos(videos[:, first : last + 1], captions)
        for key in ("colour", "object_class", "multiple_objects", "empty_frames", "quality", "semantic", "total",
                    "sharpness", "motion_smoothness"):
            assert rolled["chunks"][key][i] == pytest.approx(float(alone[key].mean()), abs=1e-12), (key, i)

    # The window only starts to roll at the third chunk: the first two are the whole-cache run's.
    whole = run_json(capsys, *common)
    assert whole["window"] is None and whole["sink"] is None
    for key in ("sharpness", "flicker", "total"):
        assert whole["chunks"][key][:2] == rolled["chunks"][key][:2]
    assert whole["chunks"]["sharpness"][2:] != rolled["chunks"]["sharpness"][2:]
    no_sink = run_json(capsys, *common, "--window", "6", "--sink", "0")
    assert no_sink["sink"] == 0 and no_sink["chunks"]["sharpness"][2:] != rolled["chunks"]["sharpness"][2:]


def test_whole_cache_long_video_starts_as_the_trained_length_video(toy_files, capsys):
    """Same captions, same noise: a longer video's first chunks are the trained-length video's."""
    common = ["--checkpoint", str(toy_files["student"]), "--vae", str(toy_files["vae"]), "--num", "2"]
    short = run_json(capsys, *common, "--per-chunk")
    long = run_json(capsys, *common, "--frames", str(FRAMES))
    assert short["frames"] == TOY.pixel_frames and len(short["chunks"]["total"]) == TOY.num_chunks
    for key in ("colour", "sharpness", "quality"):
        assert long["chunks"][key][: TOY.num_chunks] == pytest.approx(short["chunks"][key], abs=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--sink", "3"], "--sink 3 needs --window"),
    (["--window", "4", "--sink", "3"], "--window=4 is too small"),
    (["--window", "-1"], "--window must be >= 0"),
    (["--frames", "140"], "--frames 140: the Wan VAE needs 4k+1 frames"),
    (["--frames", "41"], "--frames 41: 41 frames make 11 latent frames, which do not split into chunks of 3"),
    (["--frames", "1029"], "258 latent frames exceed the 256 frame positions"),
    (["--model", "real", "--window", "6"], "--model real renders the domain's videos: drop them"),
])
def test_bad_long_video_flags_are_one_line_errors(args, message, capsys):
    assert main([*args, "--num", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asd-eval: error:") and message in err and len(err.strip().splitlines()) == 1


def test_chunks_too_short_to_score_alone_are_refused_before_sampling(toy_files, capsys):
    """A frame-wise model's first chunk decodes to one pixel frame: refused at once, not after sampling."""
    config = toy_model_config().__class__(**{**toy_model_config().__dict__, "chunk_frames": 1})
    torch.manual_seed(0)
    framewise = save_checkpoint(toy_files["student"].parent / "framewise.safetensors",
                                CausalWanTransformer(config).state_dict(), config, plan="1")
    args = ["--checkpoint", str(framewise), "--vae", str(toy_files["vae"]), "--num", "2", "--frames", "37"]
    assert main(args) == 2  # 10 latent frames: whole chunks of 1, not of 3
    err = capsys.readouterr().err
    assert "first chunk of 1 latent frame(s) decodes to 1 pixel frame(s)" in err and len(err.splitlines()) == 1
