"""`asd-eval` end to end on small files of the toy domain's sizes (random weights)."""

import json

import pytest
import torch

from asd_core.checkpoint import save_checkpoint
from asd_core.cli.evaluate import main
from asd_core.model import CausalWanTransformer
from asd_core.toy.defaults import TOY, toy_model_config
from asd_core.toy.text_encoder import ToyTextConfig, ToyTextEncoder
from asd_core.vae import LatentCodec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory):
    """A random student, teacher-role copy, text encoder beside them and a VAE, at the domain's sizes."""
    folder = tmp_path_factory.mktemp("toy")
    torch.manual_seed(0)
    model = CausalWanTransformer(toy_model_config())
    student = save_checkpoint(folder / "student.safetensors", model.state_dict(), toy_model_config(), plan="1*")
    teacher_config = toy_model_config().__class__(**{**toy_model_config().__dict__, "chunk_frames": TOY.latent_frames})
    teacher = save_checkpoint(folder / "teacher.safetensors", model.state_dict(), teacher_config, plan="2",
                              extra={"asd.role": "teacher"})
    ToyTextEncoder(ToyTextConfig(width=TOY.text_dim, max_length=TOY.text_length)).save(folder / "text_encoder.safetensors")
    vae = folder / "vae.safetensors"
    LatentCodec.tiny_random(seed=0).save(vae)
    return {"student": student, "teacher": teacher, "vae": vae}


def run_json(capsys, *args) -> dict:
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_real_videos_score_at_the_top(capsys):
    result = run_json(capsys, "--model", "real", "--num", "6", "--seed", "1")
    for key in ("quality", "semantic", "total"):
        assert result[key] == pytest.approx(1.0)
    assert result["fd"] >= 0
    assert result["num"] == 6 and result["plan"] == "-"


def test_per_chunk_reports_each_chunk_of_the_video(capsys):
    result = run_json(capsys, "--model", "real", "--num", "4", "--per-chunk")
    chunks = result["chunks"]
    assert chunks["pixel_frames"] == [[0, 8], [9, 20], [21, 32]]  # 3 chunks of 3 latent frames, 33 pixel frames
    assert chunks["colour"] == [1.0, 1.0, 1.0] and chunks["empty_frames"] == [0.0, 0.0, 0.0]
    assert "chunks" not in run_json(capsys, "--model", "real", "--num", "4")


def test_checkpoint_is_scored_reproducibly_and_below_real(toy_files, capsys):
    args = ["--checkpoint", str(toy_files["student"]), "--vae", str(toy_files["vae"]), "--num", "3", "--batch", "2"]
    first = run_json(capsys, *args)
    again = run_json(capsys, *args)
    for key in ("quality", "semantic", "total", "fd"):
        assert first[key] == again[key]  # same captions, same noise
    assert first["plan"] == "1*"  # the checkpoint's trained plan
    assert 0 <= first["total"] < 0.9  # random weights make no shapes
    real = run_json(capsys, "--model", "real", "--num", "3")
    assert first["fd"] > 2 * real["fd"]  # same captions, videos of no shapes: far from the real ones
    other = run_json(capsys, *args, "--plan", "2")
    assert other["plan"] == "2" and other["fd"] != first["fd"]


def test_teacher_role_gets_guidance_and_its_own_plan(toy_files, capsys):
    result = run_json(capsys, "--checkpoint", str(toy_files["teacher"]), "--vae", str(toy_files["vae"]),
                      "--num", "2")
    assert result["plan"] == "2" and "cfg 2" in result["model"] and result["model"].startswith("teacher")


def test_guidance_the_checkpoint_records_is_the_default_and_cfg_scale_overrides_it(toy_files, capsys):
    model = CausalWanTransformer(toy_model_config())
    config = toy_model_config().__class__(**{**toy_model_config().__dict__, "chunk_frames": TOY.latent_frames})
    teacher = save_checkpoint(toy_files["teacher"].parent / "teacher_cfg25.safetensors", model.state_dict(), config,
                              plan="2", extra={"asd.role": "teacher", "asd.cfg": "2.5"})
    common = ["--checkpoint", str(teacher), "--vae", str(toy_files["vae"]), "--num", "2"]
    recorded = run_json(capsys, *common)
    assert recorded["model"].endswith("cfg 2.5")  # the file's scale, not the teacher fallback 2
    explicit = run_json(capsys, *common, "--cfg-scale", "2.5")
    assert explicit["fd"] == recorded["fd"] and explicit["total"] == recorded["total"]
    unguided = run_json(capsys, *common, "--cfg-scale", "1")
    assert unguided["model"].endswith("cfg 1") and unguided["fd"] != recorded["fd"]


def test_context_noise_renoises_the_cache_and_is_named(toy_files, capsys):
    common = ["--checkpoint", str(toy_files["student"]), "--vae", str(toy_files["vae"]), "--num", "2", "--plan", "1"]
    clean = run_json(capsys, *common)
    noised = run_json(capsys, *common, "--context-noise", "500")
    assert "context noise" not in clean["model"] and noised["model"].endswith("context noise 500")
    assert noised["fd"] != clean["fd"]  # later chunks attend to a different cache
    assert run_json(capsys, *common, "--context-noise", "0")["fd"] == clean["fd"]


def test_a_checkpoint_with_unreadable_guidance_is_a_one_line_error(toy_files, capsys):
    model = CausalWanTransformer(toy_model_config())
    bad = save_checkpoint(toy_files["teacher"].parent / "teacher_bad_cfg.safetensors", model.state_dict(),
                          toy_model_config(), plan="2", extra={"asd.role": "teacher", "asd.cfg": "strong"})
    assert main(["--checkpoint", str(bad), "--vae", str(toy_files["vae"]), "--num", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asd-eval: error:") and "asd.cfg='strong' is not a guidance scale" in err
    assert len(err.strip().splitlines()) == 1


def test_the_library_scores_a_model_as_asd_eval_does(toy_files, capsys):
    """score_model / score_real are what asd-eval runs: the same numbers from objects instead of flags."""
    from asd_core.checkpoint import load_model
    from asd_core.toy import score_model, score_real

    args = ["--checkpoint", str(toy_files["student"]), "--vae", str(toy_files["vae"]), "--num", "3", "--batch", "2",
            "--seed", "1", "--per-chunk"]
    cli = run_json(capsys, *args)
    model = load_model(toy_files["student"])
    text_encoder = ToyTextEncoder.load(toy_files["student"].parent / "text_encoder.safetensors")
    library = score_model(model, text_encoder, LatentCodec.load(toy_files["vae"]), num=3, seed=1, batch=2,
                          per_chunk=True)
    assert library == {k: v for k, v in cli.items() if k not in ("model", "seconds")}
    assert library["plan"] == "1*" and len(library["chunks"]["colour"]) == 3
    real = run_json(capsys, "--model", "real", "--num", "3", "--seed", "1")
    assert score_real(num=3, seed=1) == {k: v for k, v in real.items() if k not in ("model", "seconds")}
    with pytest.raises(ValueError, match="batch must be >= 1"):
        score_real(num=3, batch=0)


def test_table_output_names_every_main_score(toy_files, capsys):
    assert main(["--model", "real-vae", "--vae", str(toy_files["vae"]), "--num", "2"]) == 0
    out = capsys.readouterr().out
    assert "VAE round trip" in out
    for key in ("total", "quality", "semantic", "fd", "sharpness"):
        assert f"  {key}" in out


@pytest.mark.parametrize("args, message", [
    (["--plan", "3x"], "step plan"),
    (["--num", "1"], "num must be >= 2"),
    (["--checkpoint", "missing.safetensors"], "no such file"),
    (["--checkpoint", "."], "is a directory, not a checkpoint file"),  # issue 25 item 7: was "no such file"
    (["--cfg-scale", "-1"], "cfg_scale must be >= 0"),
    (["--context-noise", "1001"], "context_noise is a timestep in [0, 1000]"),
])
def test_bad_input_is_a_one_line_error(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("asd-eval: error:") and message in err
