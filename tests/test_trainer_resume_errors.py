"""Training runs that never mislead: a changed config on resume, and one-line errors for bad inputs.

Each case is a tiny teacher run (or fails before any stage is built); issue 25's training items.
"""

import errno
import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from trainer import state
from trainer.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "trainer" / "configs" / "toy"
QUIET = ["progress=false", "tensorboard=false"]
TINY_VIDEO = ["latent_height=4", "latent_width=4"]
TINY_MODEL = ["model.num_layers=1", "model.num_attention_heads=1", "model.attention_head_dim=32",
              "model.ffn_dim=64", "model.freq_dim=32"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae")
    argv = [str(CONFIGS / "vae.yaml"), f"out_dir={out}", *QUIET, "max_steps=1", "batch_size=1", "clip_frames=5",
            "stats_clips=2", *TINY_VIDEO]
    assert main(argv) == 0
    return out


def teacher(vae_run, out_dir, *words):
    """argv of a tiny teacher run (2 clips per step, a 1-layer model)."""
    return [str(CONFIGS / "teacher.yaml"), f"out_dir={out_dir}", f"vae={vae_run}", *QUIET, "batch_size=2",
            "pool_size=4", "num_frames=3", "ema_start=0", "warmup_steps=0", "save_every=1", *TINY_VIDEO, *TINY_MODEL,
            *words]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def saved_meta(run: Path, step: int) -> dict:
    return json.loads((run / "checkpoints" / f"step_{step:08d}" / "state.json").read_text())


def test_resume_with_a_changed_learning_rate_is_refused_or_applied_and_recorded(vae_run, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(teacher(vae_run, run, "max_steps=2", "lr=2e-5")) == 0
    capsys.readouterr()
    # the case: the changed rate would be recorded while the restored optimizer kept 2e-5
    assert main(teacher(vae_run, run, "max_steps=4", "lr=1e-3", "--resume")) == 2
    err = one_line_error(capsys)
    assert "lr 2e-05 -> 0.001" in err and "--allow-changes" in err and "max_steps" not in err
    assert not (run / "checkpoints" / "step_00000003").exists()

    assert main(teacher(vae_run, run, "max_steps=4", "lr=1e-3", "--resume", "--allow-changes")) == 0
    assert "resuming at step 2 with config changes: lr 2e-05 -> 0.001" in capsys.readouterr().err
    optimizer = saved_meta(run, 4)["optimizers"]["teacher"]
    assert optimizer["param_groups"][0]["lr"] == 1e-3  # the transformer's group ran at the new rate...
    assert optimizer["param_groups"][1]["lr"] == 3e-4  # ...the text encoder's (text_lr) is unchanged
    assert saved_meta(run, 4)["schedulers"]["teacher"]["base_lrs"] == [1e-3, 3e-4]
    record = [{"step": 2, "changes": {"lr": {"was": 2e-5, "now": 1e-3}}}]
    assert json.loads((run / "run.json").read_text())["config_changes"] == record
    assert saved_meta(run, 4)["extra"]["config_changes"] == record
    assert json.loads((run / "run.json").read_text())["config"]["lr"] == 1e-3

    # a later resume compares against the config the checkpoint now records: no change, no refusal
    assert main(teacher(vae_run, run, "max_steps=5", "lr=1e-3", "--resume")) == 0
    assert saved_meta(run, 5)["extra"]["config_changes"] == record


def test_overrides_after_resume_and_leftover_temporary_files_are_cleaned(vae_run, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(teacher(vae_run, run, "max_steps=1")) == 0
    leftovers = [run / ".model.k2j4.tmp", run / ".summary.x9.tmp", run / "checkpoints" / ".latest.ab12.tmp"]
    for path in leftovers:
        path.write_text("half-written by a killed run")
    argv = teacher(vae_run, run)
    assert main([argv[0], "--resume", *argv[1:], "max_steps=2"]) == 0  # key=value words after --resume
    assert (run / "checkpoints" / "step_00000002").is_dir()
    assert not any(path.exists() for path in leftovers)


def test_malformed_yaml_names_the_file_and_line(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("stage: vae\nmax_steps: 10\nbetas: [0.9, 0.99\nlr: 1e-4\n")
    assert main([str(config), f"out_dir={tmp_path / 'run'}"]) == 2
    err = one_line_error(capsys)
    assert f"{config}:" in err and "malformed YAML" in err
    line = int(err.split(f"{config}:")[1].split(":")[0])
    assert line in (3, 4), err  # PyYAML notices the unclosed list on the line after it
    assert main([str(CONFIGS / "vae.yaml"), f"out_dir={tmp_path / 'run'}", "betas=[0.9,"]) == 2
    assert "override 'betas=[0.9,'" in one_line_error(capsys)


def test_an_out_dir_under_a_file_or_not_writable_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    import trainer.loop

    monkeypatch.setattr(trainer.loop, "build_stage", lambda *a: pytest.fail("a stage was built"))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main([str(CONFIGS / "vae.yaml"), f"out_dir={blocker / 'run'}", *QUIET]) == 2
    assert f"{blocker} is a file, not a folder" in one_line_error(capsys)
    if Path("/sys").is_dir():  # a folder nobody (root included) may create entries in
        assert main([str(CONFIGS / "vae.yaml"), "out_dir=/sys/asd-train-test", *QUIET]) == 2
        assert "out_dir=/sys/asd-train-test is not writable" in one_line_error(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch that sees no GPU")
def test_device_cuda_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    assert main([str(CONFIGS / "vae.yaml"), f"out_dir={tmp_path}", "device=cuda", *QUIET]) == 2
    err = one_line_error(capsys)
    assert "device=cuda" in err and "use device=cpu" in err


def test_a_full_disk_during_a_save_stops_with_one_line_and_keeps_the_previous_checkpoint(vae_run, tmp_path,
                                                                                       capsys, monkeypatch):
    run = tmp_path / "run"
    real_save = state.safetensors.torch.save_file
    calls = []

    def save_file(tensors, filename, *args, **kwargs):
        calls.append(filename)
        if len(calls) == 2:  # step 2's checkpoint: the disk is full
            Path(filename).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(state.safetensors.torch, "save_file", save_file)
    assert main(teacher(vae_run, run, "max_steps=3")) == 2
    err = one_line_error(capsys)
    assert "No space left on device" in err and "step_00000001" in err and "--resume" in err
    checkpoints = run / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_00000001"]  # no half-written step 2
    monkeypatch.setattr(state.safetensors.torch, "save_file", real_save)
    assert main(teacher(vae_run, run, "max_steps=2", "--resume")) == 0


def test_a_corrupt_latest_checkpoint_falls_back_to_the_newest_readable_one(vae_run, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(teacher(vae_run, run, "max_steps=2")) == 0
    tensors = run / "checkpoints" / "step_00000002" / "tensors.safetensors"
    tensors.write_bytes(tensors.read_bytes()[: tensors.stat().st_size // 2])  # truncated by a crash
    capsys.readouterr()
    assert main(teacher(vae_run, run, "max_steps=3", "--resume")) == 0
    err = capsys.readouterr().err
    assert "step_00000002 cannot be read" in err and "resuming from the earlier step_00000001 instead" in err
    assert saved_meta(run, 3)["step"] == 3

    # straight from step 1 to 3 with the same seeds: the fallback lost nothing but the recomputed step
    straight = tmp_path / "straight"
    assert main(teacher(vae_run, straight, "max_steps=3")) == 0
    a = safetensors.torch.load_file(str(run / "checkpoints" / "step_00000003" / "tensors.safetensors"))
    b = safetensors.torch.load_file(str(straight / "checkpoints" / "step_00000003" / "tensors.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model/"))

    for step in (1, 2, 3):  # nothing readable left
        (run / "checkpoints" / f"step_{step:08d}" / "state.json").write_text("{")
    assert main(teacher(vae_run, run, "max_steps=4", "--resume")) == 2
    assert "no earlier complete checkpoint is left" in capsys.readouterr().err


def test_a_shape_change_on_resume_is_a_one_line_error(vae_run, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(teacher(vae_run, run, "max_steps=1")) == 0
    capsys.readouterr()
    wider = ["model.ffn_dim=96", "max_steps=2", "--resume"]
    assert main(teacher(vae_run, run, *wider)) == 2
    assert "model {'" in one_line_error(capsys)  # refused as a config change, naming the model settings
    assert main(teacher(vae_run, run, *wider, "--allow-changes")) == 2
    err = one_line_error(capsys)
    assert "its network 'model' does not fit the configured one" in err and "size mismatch" in err


# -- up-front work scales with what the run reads ---------------------------------------------


def test_the_teacher_encodes_only_the_pool_chunks_its_steps_read(vae_run, tmp_path, monkeypatch):
    from asd_core.vae import LatentCodec

    encoded = []
    real_encode = LatentCodec.encode

    def encode(self, video, *args, **kwargs):
        encoded.append(video.shape[0])
        return real_encode(self, video, *args, **kwargs)

    monkeypatch.setattr(LatentCodec, "encode", encode)
    # 2 steps of 2 clips read clips 0-3: one chunk of 16 clips, not the 64-clip pool up front
    assert main(teacher(vae_run, tmp_path / "run", "max_steps=2", "pool_size=64")) == 0
    assert encoded == [16]


def test_ode_init_makes_the_trajectories_its_steps_read_and_extends_them_on_resume(vae_run, tmp_path):
    teacher_run = tmp_path / "teacher"
    assert main(teacher(vae_run, teacher_run, "max_steps=1")) == 0

    def ode(out_dir, *words):
        return [str(CONFIGS / "ode_init.yaml"), f"out_dir={out_dir}", f"teacher={teacher_run}", *QUIET,
                "num_trajectories=16", "batch_size=2", "num_frames=3", "chunk_frames=1", "plan=2", "ode_steps=4",
                "ema_start=0", *TINY_VIDEO, *words]

    def trajectories(run):
        return safetensors.torch.load_file(str(run / "trajectories_rank0.safetensors"))

    short = tmp_path / "short"
    assert main(ode(short, "max_steps=2")) == 0
    assert trajectories(short)["x0"].shape[0] == 4  # 2 steps x 2, not 16
    assert main(ode(short, "max_steps=5", "--resume")) == 0
    assert trajectories(short)["x0"].shape[0] == 10
    full = tmp_path / "full"
    assert main(ode(full, "max_steps=8")) == 0  # reads all 16
    made, reference = trajectories(short), trajectories(full)
    assert reference["x0"].shape[0] == 16
    assert all(torch.equal(made[k], reference[k][:10]) for k in reference)  # the same sequence, made in two parts


def test_ode_init_keeps_the_trajectories_made_before_it_was_stopped(vae_run, tmp_path, monkeypatch):
    """A run stopped while the teacher integrates loses only the batch under way."""
    from trainer.stages import ode_init

    teacher_run = tmp_path / "teacher"
    assert main(teacher(vae_run, teacher_run, "max_steps=1")) == 0

    def ode(out_dir, *words):
        return [str(CONFIGS / "ode_init.yaml"), f"out_dir={out_dir}", f"teacher={teacher_run}", *QUIET,
                "num_trajectories=8", "batch_size=2", "num_frames=3", "chunk_frames=1", "plan=2", "ode_steps=4",
                "max_steps=4", "ema_start=0", *TINY_VIDEO, *words]

    def trajectories(run):
        return safetensors.torch.load_file(str(run / "trajectories_rank0.safetensors"))

    full = tmp_path / "full"
    assert main(ode(full)) == 0
    real = ode_init.teacher_trajectory
    calls = []

    def stopped_in_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ode_init, "TRAJECTORY_SAVE_SECONDS", 0.0)
    monkeypatch.setattr(ode_init, "teacher_trajectory", stopped_in_third_batch)
    stopped = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        main(ode(stopped))
    assert trajectories(stopped)["x0"].shape[0] == 4  # batches 1 and 2 of 4 were kept
    calls.clear()
    monkeypatch.setattr(ode_init, "teacher_trajectory", real)
    assert main(ode(stopped)) == 0
    made, reference = trajectories(stopped), trajectories(full)
    assert all(torch.equal(made[k], reference[k]) for k in reference)  # the same 8 as an uninterrupted run
