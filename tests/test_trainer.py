"""The trainer on tiny configs: stages run end to end, resume is exact, bad runs stop clearly."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

from asd_core.checkpoint import load_model, recorded_guidance
from asd_core.config import CausalWanConfig
from asd_core.model import CausalWanTransformer
from asd_core.toy.text_encoder import ToyTextEncoder
from asd_core.vae import LatentCodec
from trainer.cli import main
from trainer.config import load_config
from trainer.stages.base import step_seed
from trainer.state import TENSORS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "trainer" / "configs"
QUIET = ["progress=false", "tensorboard=false"]
TINY_VIDEO = ["latent_height=4", "latent_width=4"]
TINY_MODEL = ["model.num_layers=1", "model.num_attention_heads=1", "model.attention_head_dim=32",
              "model.ffn_dim=64", "model.freq_dim=32"]


def train(config: str, out_dir: Path, *overrides: str, resume: bool = False) -> int:
    argv = [str(CONFIGS / "toy" / config), f"out_dir={out_dir}", *QUIET, *overrides]
    return main(argv + (["--resume"] if resume else []))


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae")
    assert train("vae.yaml", out, "max_steps=2", "batch_size=1", "clip_frames=5", "stats_clips=2", *TINY_VIDEO) == 0
    return out


def teacher_args(vae_run, steps):
    return [f"vae={vae_run}", f"max_steps={steps}", "batch_size=2", "pool_size=4", "num_frames=3", "ema_start=0",
            *TINY_VIDEO, *TINY_MODEL]


def test_vae_stage_writes_a_loadable_codec_with_measured_statistics(vae_run):
    codec = LatentCodec.load(vae_run / "model.safetensors")
    assert len(codec.mean) == 16 and codec.mean != LatentCodec.tiny_random().mean
    assert codec.decode(torch.zeros(1, 16, 2, 4, 4)).shape == (1, 3, 5, 32, 32)
    summary = json.loads((vae_run / "run.json").read_text())
    assert summary["config"]["stage"] == "vae"


def test_vae_loss_weighs_exactly_the_shape_pixels():
    from asd_core.toy.domain import BACKGROUND_RGB
    from trainer.stages.data import pixel_batch
    from trainer.stages.vae import foreground_mask

    pixels, _ = pixel_batch([0, 1, 2], 5, 64, 64)
    mask = foreground_mask(pixels)[:, 0]
    uint8 = ((pixels + 1) * 127.5).round().permute(0, 2, 3, 4, 1)  # (B, T, H, W, 3)
    is_background = (uint8 == torch.tensor(BACKGROUND_RGB, dtype=uint8.dtype)).all(dim=-1)
    assert torch.equal(mask.bool(), ~is_background) and 0 < mask.mean() < 0.3


def test_edge_loss_charges_blurred_and_shifted_edges_only():
    from trainer.stages.data import pixel_batch
    from trainer.stages.vae import edge_difference, foreground_mask

    pixels, _ = pixel_batch([0, 1], 5, 64, 64)
    weight = 1.0 + 10.0 * foreground_mask(pixels)
    assert edge_difference(pixels, pixels, weight) == 0
    assert edge_difference(pixels + 0.3, pixels, weight) < 1e-6  # a flat colour shift moves no edge
    blurred = torch.nn.functional.avg_pool3d(pixels, (1, 3, 3), stride=1, padding=(0, 1, 1), count_include_pad=False)
    shifted = pixels.roll(2, dims=-1)
    assert edge_difference(blurred, pixels, weight) > 0.01 and edge_difference(shifted, pixels, weight) > 0.01


def test_vae_stage_with_edge_loss_logs_it(tmp_path):
    out = tmp_path / "edges"
    assert train("vae.yaml", out, "edge_weight=1.0", "max_steps=1", "batch_size=1", "clip_frames=5",
                 "stats_clips=2", "tensorboard=true", *TINY_VIDEO) == 0
    logged = (out / "tensorboard").rglob("events.*")
    assert any(b"edges" in path.read_bytes() for path in logged)


def test_decoder_fine_tuning_keeps_the_latent_space(vae_run, tmp_path):
    # Longer clips than `init` trained on: statistics measured on them
    # would differ, and the teacher's latents, normalised with init's, would decode shifted.
    out = tmp_path / "decoder"
    assert train("vae.yaml", out, f"init={vae_run}", "freeze_encoder=true", "max_steps=1", "batch_size=1",
                 "clip_frames=9", "stats_clips=2", *TINY_VIDEO) == 0
    before = safetensors.torch.load_file(vae_run / "model.safetensors")
    after = safetensors.torch.load_file(out / "model.safetensors")
    encoder = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in before if k.startswith("decoder.")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    assert any(not torch.equal(before[k], after[k]) for k in decoder)
    tuned, init = LatentCodec.load(out / "model.safetensors"), LatentCodec.load(vae_run / "model.safetensors")
    assert (tuned.mean, tuned.std) == (init.mean, init.std)


def test_vae_export_at_a_step_is_the_file_a_run_stopped_there_writes(tmp_path, capsys):
    """`asd-train export --step` on a VAE run: the reference is a run of exactly that many steps,
    whose finished export measured its own latent statistics; --raw (no EMA here) is refused."""
    longer = tmp_path / "longer"
    assert train("vae.yaml", longer, "max_steps=2", "save_every=1", "batch_size=1", "clip_frames=5",
                 "stats_clips=2", *TINY_VIDEO) == 0
    out = tmp_path / "step1" / "vae.safetensors"
    assert main(["export", str(longer), "--step", "1", "--out", str(out)]) == 0
    shorter = tmp_path / "shorter"
    assert train("vae.yaml", shorter, "max_steps=1", "batch_size=1", "clip_frames=5", "stats_clips=2",
                 *TINY_VIDEO) == 0
    exported, reference = LatentCodec.load(out), LatentCodec.load(shorter / "model.safetensors")
    assert (exported.mean, exported.std) == (reference.mean, reference.std)
    weights, expected = safetensors.torch.load_file(out), safetensors.torch.load_file(shorter / "model.safetensors")
    assert weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in expected)
    assert not torch.equal(weights["decoder.conv_out.weight"], safetensors.torch.load_file(
        longer / "model.safetensors")["decoder.conv_out.weight"])  # step 1, not the finished step 2
    capsys.readouterr()
    assert main(["export", str(longer), "--step", "1", "--raw", "--out", str(tmp_path / "raw.safetensors")]) == 2
    assert "no EMA" in capsys.readouterr().err


def test_decoder_fine_tune_export_at_a_step_keeps_inits_statistics(vae_run, tmp_path, capsys):
    """A decoder fine-tune's export keeps `init`'s latent statistics, at any step; once `init` is
    gone the export says which file it needs instead of measuring statistics of its own."""
    init = tmp_path / "init"
    init.mkdir()
    (init / "model.safetensors").write_bytes((vae_run / "model.safetensors").read_bytes())
    tuned = tmp_path / "tuned"
    assert train("vae.yaml", tuned, f"init={init}", "freeze_encoder=true", "max_steps=2", "save_every=1",
                 "batch_size=1", "clip_frames=9", "stats_clips=2", *TINY_VIDEO) == 0
    out = tmp_path / "tuned_step1.safetensors"
    assert main(["export", str(tuned), "--step", "1", "--out", str(out)]) == 0
    codec, original = LatentCodec.load(out), LatentCodec.load(vae_run / "model.safetensors")
    assert (codec.mean, codec.std) == (original.mean, original.std)
    (init / "model.safetensors").unlink()
    capsys.readouterr()
    assert main(["export", str(tuned), "--step", "1", "--out", str(tmp_path / "again.safetensors")]) == 2
    err = capsys.readouterr().err
    assert str(init) in err and "restore" in err
    assert not (tmp_path / "again.safetensors").exists()


def test_teacher_stage_exports_model_and_text_encoder(vae_run, tmp_path, capsys):
    out = tmp_path / "teacher"
    assert train("teacher.yaml", out, *teacher_args(vae_run, 2), "sample_cfg=2.5") == 0
    model = load_model(out / "model.safetensors")
    assert model.trained_plan == "50" and model.config.num_layers == 1 and model.config.chunk_frames == 3
    # the guidance asd-eval / asd-generate sample it with unless told otherwise
    assert recorded_guidance(model.checkpoint_metadata, "teacher") == 2.5
    encoder = ToyTextEncoder.load(out / "text_encoder.safetensors")
    assert encoder.encode(["a red circle"]).shape == (1, 16, model.config.text_dim)
    printed = capsys.readouterr().out
    assert "[teacher] done: step 2" in printed and '"stage": "teacher"' in printed


def test_resume_is_exact(vae_run, tmp_path):
    """k steps + resume + k steps gives the same weights, bitwise, as 2k steps in one go."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train("teacher.yaml", straight, *teacher_args(vae_run, 4)) == 0
    assert train("teacher.yaml", split, *teacher_args(vae_run, 2)) == 0
    assert train("teacher.yaml", split, *teacher_args(vae_run, 4), resume=True) == 0
    a = safetensors.torch.load_file(straight / "model.safetensors")
    b = safetensors.torch.load_file(split / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the whole resumable state too: weights, EMA, text encoder, optimizer moments, RNG
    step4 = [safetensors.torch.load_file(run / "checkpoints" / "step_00000004" / TENSORS) for run in (straight, split)]
    assert step4[0].keys() == step4[1].keys() and all(torch.equal(step4[0][k], step4[1][k]) for k in step4[0])
    step2 = safetensors.torch.load_file(split / "checkpoints" / "step_00000002" / TENSORS)
    weight = "model/model/blocks.0.attn1.to_q.weight"
    assert not torch.equal(step2[weight], step4[1][weight])  # training really moved the weights


def test_existing_run_needs_resume_and_missing_inputs_are_named(vae_run, tmp_path, capsys):
    out = tmp_path / "teacher"
    assert train("teacher.yaml", out, *teacher_args(vae_run, 1)) == 0
    assert train("teacher.yaml", out, *teacher_args(vae_run, 2)) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert train("teacher.yaml", tmp_path / "t2", *teacher_args(tmp_path / "nowhere", 1)) == 2
    assert "run that stage first" in capsys.readouterr().err


def test_non_finite_losses_skip_updates_then_abort(vae_run, tmp_path, monkeypatch, capsys):
    from trainer.stages import teacher as teacher_stage

    monkeypatch.setattr(teacher_stage, "flow_matching_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    out = tmp_path / "nan"
    assert train("teacher.yaml", out, *teacher_args(vae_run, 10), "max_nonfinite=3") == 2
    err = capsys.readouterr().err
    assert "update(s) ['teacher'] skipped" in err and "3 consecutive steps had non-finite" in err


def test_config_errors_are_clear(tmp_path, capsys):
    assert main([str(CONFIGS / "toy" / "vae.yaml"), "learning_rate=1"]) == 2
    assert "unknown config key(s) ['learning_rate']" in capsys.readouterr().err
    assert main([str(CONFIGS / "toy" / "nope.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main([str(CONFIGS / "toy" / "teacher.yaml"), "sample_cfg=-1"]) == 2
    assert "sample_cfg must be >= 0" in capsys.readouterr().err
    odeinit = tmp_path / "ode.yaml"
    odeinit.write_text("stage: ode_init\nteacher: runs/x\n")
    assert main([str(odeinit), f"out_dir={tmp_path / 'o'}", *QUIET]) == 2
    assert "run that stage first" in capsys.readouterr().err


def test_bf16_autocast_trains_and_keeps_fp32_weights(vae_run, tmp_path):
    out = tmp_path / "bf16"
    assert train("teacher.yaml", out, *teacher_args(vae_run, 2), "precision=bf16") == 0
    state = safetensors.torch.load_file(out / "checkpoints" / "step_00000002" / TENSORS)
    weights = {k: v for k, v in state.items() if k.startswith("model/model/")}
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights.values())
    fp32 = tmp_path / "fp32"
    assert train("teacher.yaml", fp32, *teacher_args(vae_run, 2)) == 0
    other = safetensors.torch.load_file(fp32 / "checkpoints" / "step_00000002" / TENSORS)
    key = "model/model/blocks.0.attn1.to_q.weight"
    assert not torch.equal(state[key], other[key])  # the matmuls really ran in bf16


def test_unknown_parallel_mode_is_refused_with_the_choices(capsys):
    assert main([str(CONFIGS / "toy" / "vae.yaml"), "parallel=zero3"]) == 2
    assert "parallel must be ddp (replicated weights) or fsdp (sharded weights), got 'zero3'" in capsys.readouterr().err


def test_fsdp_in_one_process_trains_as_ddp(vae_run, tmp_path):
    """One process has nothing to shard: parallel=fsdp runs the ddp code path, same weights."""
    runs = {mode: tmp_path / mode for mode in ("ddp", "fsdp")}
    for mode, out in runs.items():
        assert train("teacher.yaml", out, *teacher_args(vae_run, 1), f"parallel={mode}") == 0
    a, b = (safetensors.torch.load_file(out / "model.safetensors") for out in runs.values())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_real_size_config_builds_on_the_meta_device():
    config = load_config(CONFIGS / "wan2.1-1.3b" / "teacher.yaml")
    model_config = CausalWanConfig.from_dict({**CausalWanConfig().__dict__, **config.model})
    with torch.device("meta"):
        model = CausalWanTransformer(model_config)
    assert sum(p.numel() for p in model.parameters()) == 1_418_996_800
    assert model_config.tokens_per_frame(config.latent_height, config.latent_width) == 1560


def test_step_seeds_differ_per_rank_and_step():
    seeds = {step_seed(0, rank, step) for rank in range(4) for step in range(100)}
    assert len(seeds) == 400


def test_log_figures_reads_the_run_logs_and_summary(tmp_path, capsys):
    from research.log_figures import main as log_figures

    out = tmp_path / "vae"
    assert train("vae.yaml", out, "max_steps=4", "batch_size=1", "clip_frames=5", "stats_clips=2", "tensorboard=true",
                 "log_every=1", *TINY_VIDEO) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 4 and summary["sec_per_step"] > 0
    capsys.readouterr()
    assert log_figures([str(out)]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()[2:]]
    assert [row[4].strip() for row in rows] == ["loss", "l1", "mse"]
    losses = [float(x) for x in (rows[0][5], rows[0][6])]
    assert all(x > 0 for x in losses) and float(rows[0][3]) == pytest.approx(summary["sec_per_step"], rel=0.01)

    log_file = tmp_path / "vae.log"
    log_file.write_text("a shell glob over runs/* also catches this")
    with pytest.raises(SystemExit):
        log_figures([str(out), str(log_file)])
    error = capsys.readouterr().err
    assert "not a run directory" in error and "vae.log" in error

    # `python -m research.log_figures runs/* | head`: the reader leaves early; no traceback
    reader_gone = subprocess.Popen([sys.executable, "-m", "research.log_figures", str(out)], cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader_gone.stdout.close()
    assert reader_gone.wait(timeout=120) == 1
    assert b"Traceback" not in reader_gone.stderr.read()


def test_scalars_only_some_steps_have_still_reach_tensorboard(tmp_path):
    """The generator's losses exist on every gen_update_ratio-th step only; log_every must not hide them."""
    from research.log_figures import read_scalars
    from trainer.config import DistillConfig
    from trainer.dist import Runtime
    from trainer.logs import RunLogger

    config = DistillConfig(out_dir=str(tmp_path), max_steps=8, log_every=4, progress=False, tensorboard=True)
    logger = RunLogger(config, Runtime())
    for step in range(1, 9):  # the generator's loss on odd steps only: never on a step that writes
        logs = {"critic_loss": float(step)} | ({"generator_loss": 10.0 * step} if step % 2 == 1 else {})
        logger.log(step, logs, {})
    logger.close()
    scalars = read_scalars(tmp_path)
    assert scalars["critic_loss"].tolist() == [[4, 2.5], [8, 6.5]]  # the mean over each window
    assert scalars["generator_loss"].tolist() == [[4, 20.0], [8, 60.0]]


def test_vae_statistics_pass_scales_with_the_run(monkeypatch, tmp_path):
    """A 3-step smoke run measures the latent statistics on the 12 clips it trained on (at least 8),
    the shipped VAE run (batch 4 x 1000 steps) on all 64 of `stats_clips`."""
    from trainer.config import load_config
    from trainer.stages.vae import VaeStage

    def count(max_steps, batch_size):
        config = load_config(CONFIGS / "toy" / "vae.yaml", [f"max_steps={max_steps}", f"batch_size={batch_size}",
                                                    f"out_dir={tmp_path}"])
        stage = VaeStage.__new__(VaeStage)  # the rule only reads the config
        stage.config = config
        return stage.stats_clip_count()

    assert count(3, 4) == 12
    assert count(1, 2) == 8
    assert count(1000, 4) == 64
