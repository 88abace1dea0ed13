"""Real-data paths on tiny sizes: videos -> latent shards -> teacher, prompt embeddings -> students, samples."""

import json
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch

from asd_core.checkpoint import load_model
from asd_core.toy.text_encoder import ToyTextConfig, ToyTextEncoder
from asd_core.vae import LatentCodec
from asd_core.video_io import read_video, write_video
from trainer import prepare
from trainer.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "trainer" / "configs"
QUIET = ["progress=false", "tensorboard=false"]
TINY_VIDEO = ["num_frames=3", "latent_height=4", "latent_width=4"]  # = 9 pixel frames of 32x32
TINY_MODEL = ["model.num_layers=1", "model.num_attention_heads=1", "model.attention_head_dim=32",
              "model.ffn_dim=64", "model.freq_dim=32"]
CAPTIONS = {"red.gif": "a red circle", "blue.mp4": "a blue square moving left", "short.gif": "a green circle"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train(config: str, out_dir: Path, *overrides: str) -> int:
    return main([str(CONFIGS / "toy" / config), f"out_dir={out_dir}", *QUIET, *overrides])


def clip(frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """A moving bright square on noise: something for the VAE to encode."""
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 60, (frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        video[t, 8:20, 4 + t : 16 + t, seed % 3] = 255
    return video


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny videos of other sizes (scaled and cropped to 32x32), captions, a VAE file, a text encoder file."""
    root = tmp_path_factory.mktemp("data")
    videos = root / "videos"
    write_video(videos / "red.gif", clip(10, 40, 48, 0))
    write_video(videos / "blue.mp4", clip(9, 48, 32, 1))
    write_video(videos / "short.gif", clip(5, 32, 32, 2))  # fewer than 9 frames: skipped
    (root / "captions.txt").write_text("".join(f"{name}\t{text}\n" for name, text in CAPTIONS.items()))
    LatentCodec.tiny_random().save(root / "vae.safetensors")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ToyTextEncoder(ToyTextConfig(width=64)).save(root / "text_encoder.safetensors")
    (root / "prompts.txt").write_text("a red circle\na blue square\na green triangle\n")
    return root


@pytest.fixture(scope="module")
def shards(data):
    out = data / "latents"
    assert prepare.main(["latents", str(data / "videos"), "--vae", str(data / "vae.safetensors"),
                         "--text-encoder", str(data / "text_encoder.safetensors"), "--out", str(out),
                         "--captions", str(data / "captions.txt"), "--frames", "9", "--height", "32", "--width", "32",
                         "--shard-size", "1", "--device", "cpu"]) == 0
    return out


@pytest.fixture(scope="module")
def prompts(data):
    out = data / "prompt_embeddings.safetensors"
    assert prepare.main(["prompts", str(data / "prompts.txt"), "--text-encoder", str(data / "text_encoder.safetensors"),
                         "--out", str(out), "--device", "cpu"]) == 0
    return out


@pytest.fixture(scope="module")
def teacher_run(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    assert train("teacher.yaml", out, "data=latents", f"latent_dir={shards}", "vae=", "max_steps=2", "batch_size=2",
                 "ema_start=0", "sample_every=1", "gradient_checkpointing=true", *TINY_VIDEO, *TINY_MODEL) == 0
    return out


def test_prepare_writes_one_shard_per_sample_and_skips_short_videos(shards, data, capsys):
    paths = sorted(shards.glob("*.safetensors"))
    assert [p.name for p in paths] == ["shard_00000.safetensors", "shard_00001.safetensors"]
    first = safetensors.torch.load_file(str(paths[0]))
    assert first["latents"].shape == (1, 16, 3, 4, 4) and first["context"].shape == (1, 16, 64)
    with safetensors.safe_open(str(paths[0]), framework="pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["asd.videos"]) == ["blue.mp4"]
    assert json.loads(metadata["asd.captions"]) == ["a blue square moving left"]
    assert metadata["asd.vae"] == str((data / "vae.safetensors").resolve())
    encoder = ToyTextEncoder.load(data / "text_encoder.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(first["context"], encoder.encode(["a blue square moving left"]))


def test_captions_come_from_sidecar_files_and_missing_ones_are_named(tmp_path):
    videos = [tmp_path / "a.mp4", tmp_path / "b.gif"]
    (tmp_path / "a.txt").write_text("a red\n circle\n")
    with pytest.raises(ValueError, match=r"1 video\(s\) have no caption as sidecar NAME.txt files: b.gif"):
        prepare.read_captions(None, videos)
    (tmp_path / "b.txt").write_text("a blue square")
    assert prepare.read_captions(None, videos) == {"a.mp4": "a red circle", "b.gif": "a blue square"}


def test_teacher_trains_on_shards_exports_without_a_text_encoder_and_writes_samples(teacher_run, data):
    model = load_model(teacher_run / "model.safetensors")
    assert model.trained_plan == "50" and model.config.chunk_frames == 3 and model.config.num_layers == 1
    assert not (teacher_run / "text_encoder.safetensors").exists()
    assert json.loads((teacher_run / "run.json").read_text())["vae"] == str((data / "vae.safetensors").resolve())
    samples = sorted(p.name for p in (teacher_run / "samples").iterdir())
    assert samples == [f"step_000000{s}_{k}.gif" for s in (1, 2) for k in (0, 1)]
    assert read_video(teacher_run / "samples" / samples[0]).shape == (9, 32, 32, 3)


def test_students_train_on_prompt_embeddings_and_sample_with_the_teachers_vae(teacher_run, prompts, tmp_path):
    context = safetensors.torch.load_file(str(prompts))["context"]
    uncond = safetensors.torch.load_file(str(prompts.with_name("prompt_embeddings_uncond.safetensors")))["context"]
    assert context.shape == (3, 16, 64) and uncond.shape == (1, 16, 64) and not uncond.any()  # "" = all padding
    embeddings = [f"prompt_embeddings={prompts}", f"uncond_file={prompts.with_name(prompts.stem + '_uncond.safetensors')}"]
    ode = tmp_path / "ode"
    assert train("ode_init.yaml", ode, f"teacher={teacher_run}", "max_steps=1", "batch_size=2", "chunk_frames=1",
                 "plan=2", "num_trajectories=2", "ode_steps=4", "sample_every=1", *embeddings, *TINY_VIDEO) == 0
    assert load_model(ode / "model.safetensors").config.chunk_frames == 1
    assert torch.equal(safetensors.torch.load_file(str(ode / "trajectories_rank0.safetensors"))["context"], context[:2])
    distill = tmp_path / "distill"
    assert train("distill.yaml", distill, f"teacher={teacher_run}", f"init={ode}", "max_steps=1", "batch_size=1",
                 "plan=2", "exit_weights=[3,1]", "export_plan=1*", "gen_update_ratio=1", "sample_every=1", *embeddings,
                 *TINY_VIDEO) == 0
    for run in (ode, distill):
        paths = sorted((run / "samples").iterdir())
        assert [p.name for p in paths] == ["step_0000001_0.gif", "step_0000001_1.gif"]
        assert read_video(paths[1]).shape == (9, 32, 32, 3)


def test_without_a_vae_sampling_is_skipped_with_one_warning(teacher_run, prompts, tmp_path, capsys):
    out = tmp_path / "ode"
    assert train("ode_init.yaml", out, f"teacher={teacher_run / 'model.safetensors'}", "max_steps=2",
                 "batch_size=1", "chunk_frames=3", "plan=1", "num_trajectories=1", "ode_steps=2", "sample_every=1",
                 f"prompt_embeddings={prompts}", *TINY_VIDEO) == 0
    assert capsys.readouterr().err.count("no VAE to decode samples") == 1
    assert not (out / "samples").exists()


def test_bad_latent_dirs_are_named_with_the_fix(shards, tmp_path, capsys):
    def run(latent_dir, *extra):
        code = train("teacher.yaml", tmp_path / "t", "data=latents", f"latent_dir={latent_dir}", "vae=", "max_steps=1",
                     *TINY_VIDEO, *TINY_MODEL, *extra)
        return code, capsys.readouterr().err

    code, err = run(tmp_path / "nowhere")
    assert code == 2 and "is not a folder" in err and "trainer.prepare latents" in err
    (tmp_path / "empty").mkdir()
    code, err = run(tmp_path / "empty")
    assert code == 2 and "holds no *.safetensors shards" in err
    code, err = run(shards, "num_frames=5")
    assert code == 2 and "num_frames=5 (shards have 3)" in err
    code, err = run(shards, "model.in_channels=8", "model.out_channels=8")
    assert code == 2 and "model.in_channels=8 (shards have 16); set model.in_channels=16" in err
    safetensors.torch.save_file({"latents": torch.zeros(2, 16, 3, 4, 4)}, str(tmp_path / "empty" / "bad.safetensors"))
    code, err = run(tmp_path / "empty")
    assert code == 2 and "needs tensors `latents` (N,C,F,H,W) and `context` (N,L,D)" in err
