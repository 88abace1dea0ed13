"""The student stages on tiny configs: ode_init and distill (DMD and DMD + ASD) from the command line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

from asd_core.checkpoint import load_model, read_checkpoint
from trainer.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "trainer" / "configs"
QUIET = ["progress=false", "tensorboard=false"]
TINY_VIDEO = ["latent_height=4", "latent_width=4"]
TINY_MODEL = ["model.num_layers=2", "model.num_attention_heads=1", "model.attention_head_dim=32",
              "model.ffn_dim=64", "model.freq_dim=32"]


def train(config: str, out_dir: Path, *overrides: str, resume: bool = False) -> int:
    argv = [str(CONFIGS / "toy" / config), f"out_dir={out_dir}", *QUIET, *overrides]
    return main(argv + (["--resume"] if resume else []))


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    vae = tmp_path_factory.mktemp("vae")
    assert train("vae.yaml", vae, "max_steps=1", "batch_size=1", "clip_frames=5", "stats_clips=2", *TINY_VIDEO) == 0
    teacher = tmp_path_factory.mktemp("teacher")
    assert train("teacher.yaml", teacher, f"vae={vae}", "max_steps=2", "batch_size=2", "pool_size=4", "num_frames=4",
                 "ema_start=0", *TINY_VIDEO, *TINY_MODEL) == 0
    return teacher


def ode_args(teacher_run, steps):
    return [f"teacher={teacher_run}", f"max_steps={steps}", "batch_size=2", "num_frames=4", "chunk_frames=2",
            "num_trajectories=4", "ode_steps=4", "ema_start=0", "plan=2", *TINY_VIDEO]


@pytest.fixture(scope="module")
def ode_run(teacher_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("ode")
    assert train("ode_init.yaml", out, *ode_args(teacher_run, 2)) == 0
    return out


def distill_args(teacher_run, ode_run, steps, *extra):
    """Tiny sizes over the shipped recipe; the uniform exit draw (the recipe's weights are for plan 4)
    and an EMA from step 0 (the recipe's starts at 200), so the EMA tests mean something."""
    return [f"teacher={teacher_run}", f"init={ode_run}", f"max_steps={steps}", "batch_size=2", "num_frames=4",
            "plan=2", "export_plan=2", "exit_weights=[]", "gen_update_ratio=2", "ema_decay=0.99", "ema_start=0",
            "save_every=100", *TINY_VIDEO, *extra]


def distill_stage(teacher_run, ode_run, out_dir: Path, steps: int, *extra: str):
    """A distill stage built in-process (plan 4, exported at 4), for tests that step it by hand."""
    from trainer import dist
    from trainer.config import load_config
    from trainer.stages.distill import DistillStage

    words = [f"out_dir={out_dir}", *QUIET, *distill_args(teacher_run, ode_run, steps, "plan=4", "export_plan=4", *extra)]
    return DistillStage(load_config(CONFIGS / "toy" / "distill.yaml", words), dist.init_runtime("cpu"))


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(path))


def test_ode_init_writes_a_causal_student_with_its_plan(ode_run):
    model = load_model(ode_run / "model.safetensors")
    assert model.trained_plan == "2" and model.config.chunk_frames == 2 and model.config.num_layers == 2
    data = tensors(ode_run / "trajectories_rank0.safetensors")
    assert data["states"].shape == (4, 2, 16, 4, 4, 4)  # 4 trajectories, 2 recorded timesteps (1000, 833.3)
    assert data["x0"].shape == (4, 16, 4, 4, 4) and data["context"].shape[0] == 4
    assert (ode_run / "text_encoder.safetensors").is_file()


class ConstantFlow(torch.nn.Module):
    """A 'teacher' whose flow is a constant per condition: the ODE has a closed-form solution."""

    dtype = torch.float32

    def forward(self, x, t, context):
        return torch.ones_like(x) * context[:, :1, :1, None, None]  # cond: context value, uncond: 0


def test_teacher_trajectory_matches_the_closed_form_solution():
    from trainer.rollout import teacher_trajectory

    noise = torch.randn(2, 3, 2, 2, 2)
    context = torch.full((2, 1, 1), 0.5)
    uncond = torch.zeros(1, 1, 1)
    record = (1000.0, 937.5, 500.0)
    recorded, x0 = teacher_trajectory(ConstantFlow(), noise, context, uncond, 3.0, record, 7, 5.0)
    # guided flow = 0 + 3 * (0.5 - 0) = 1.5; x(sigma) = noise - (1 - sigma) * 1.5 exactly (Euler is exact)
    for t in record:
        torch.testing.assert_close(recorded[t], noise - (1 - t / 1000) * 1.5)
    torch.testing.assert_close(x0, noise - 1.5)


def test_teacher_trajectory_from_a_part_noised_start_runs_the_rest_of_the_path():
    from trainer.rollout import teacher_trajectory

    start = torch.randn(2, 3, 2, 2, 2)  # x at sigma 0.6, off the grid's points
    context = torch.full((2, 1, 1), 0.5)
    recorded, x0 = teacher_trajectory(ConstantFlow(), start, context, torch.zeros(1, 1, 1), 3.0, (500.0,), 7, 5.0,
                                      start=600.0)
    # flow 1.5 as above: from sigma 0.6 the path moves by 1.5 per unit of sigma, to sigma 0.5 and to 0
    torch.testing.assert_close(recorded[500.0], start - 0.1 * 1.5)
    torch.testing.assert_close(x0, start - 0.6 * 1.5)


@pytest.fixture(scope="module")
def distill_runs(teacher_run, ode_run, tmp_path_factory):
    runs = {}
    for name, config, extra in (("dmd", "distill_dmd_only.yaml", []), ("asd", "distill.yaml", ["exit_weights=[3,1]"])):
        out = tmp_path_factory.mktemp(name)
        assert train(config, out, *distill_args(teacher_run, ode_run, 4, *extra)) == 0
        runs[name] = out
    return runs


def test_distill_dmd_and_asd_write_loadable_students(distill_runs, ode_run):
    init = tensors(ode_run / "model.safetensors")
    for name, run in distill_runs.items():
        student = load_model(run / "model.safetensors")
        assert student.trained_plan == "2" and student.config.chunk_frames == 2
        metadata = read_checkpoint(run / "model.safetensors").metadata
        assert metadata["asd.role"] == "student"
        assert metadata["asd.asd_weighting"] == {"dmd": "fixed", "asd": "relative"}[name]
        assert metadata["asd.asd_counts"] == "1"  # plan 2: ASD compares 1-step with 2-step outputs only
        assert metadata["asd.asd_weight"] == {"dmd": "0.0", "asd": "1.0"}[name]
        assert metadata["asd.real_cfg"] == "2.0"  # the recipe's guidance of the real score (TEACHER_CFG)
        assert metadata["asd.exit_weights"] == {"dmd": "", "asd": "3,1"}[name]  # "" = the uniform draw
        assert metadata["asd.ema_decay"] == "0.99"  # the recipe's decay, from step 0 here
        state = tensors(run / "checkpoints" / "step_00000004" / "tensors.safetensors")
        key = "blocks.0.attn1.to_q.weight"
        assert not torch.equal(state[f"model/generator/{key}"], init[key])  # the generator trained
        assert not torch.equal(state[f"model/critic/{key}"], state[f"model/generator/{key}"])
        has_d_moments = any(k.startswith("optim/discriminator/") for k in state)
        assert has_d_moments == (name == "asd")  # asd_weight=0: D never stepped (DMD only)


def test_export_command_writes_the_ema_student(distill_runs, tmp_path, capsys):
    out = tmp_path / "student.safetensors"
    assert main(["export", str(distill_runs["asd"]), "--out", str(out)]) == 0
    exported, final = tensors(out), tensors(distill_runs["asd"] / "model.safetensors")
    assert exported.keys() == final.keys() and all(torch.equal(exported[k], final[k]) for k in final)
    state = tensors(distill_runs["asd"] / "checkpoints" / "step_00000004" / "tensors.safetensors")
    assert all(torch.equal(final[k], state[f"model/ema/{k}"]) for k in final)
    assert main(["export", str(tmp_path), "--out", str(out)]) == 2
    assert "has not finished" in capsys.readouterr().err


def test_export_of_a_run_that_does_not_exist_says_so(tmp_path, capsys):
    for extra in ([], ["--step", "3"], ["--raw"]):
        assert main(["export", str(tmp_path / "nonexistent"), "--out", str(tmp_path / "m.safetensors"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert "nonexistent: no such run (not a folder)" in err and "has not finished" not in err, err


def test_export_at_a_step_writes_what_the_stage_exports(distill_runs, tmp_path, capsys):
    """`export --step` reads the checkpoint; the stage's own export is the reference (same step)."""
    run = distill_runs["asd"]
    out = tmp_path / "step4.safetensors"
    assert main(["export", str(run), "--step", "4", "--out", str(out)]) == 0
    exported, final = read_checkpoint(out), read_checkpoint(run / "model.safetensors")
    assert exported.state_dict.keys() == final.state_dict.keys()
    assert all(torch.equal(exported.state_dict[k], final.state_dict[k]) for k in final.state_dict)
    assert exported.metadata == final.metadata  # config, plan, role and asd_weight
    assert load_model(out).trained_plan == "2"
    # The teacher's frozen encoder goes beside it, as beside the finished run's model: asd-eval
    # pairs a file with the encoder next to it, and would otherwise fall back to the built-in one.
    beside, reference = tensors(tmp_path / "text_encoder.safetensors"), tensors(run / "text_encoder.safetensors")
    assert beside.keys() == reference.keys() and all(torch.equal(beside[k], reference[k]) for k in reference)
    capsys.readouterr()
    assert main(["export", str(run), "--step", "3", "--out", str(tmp_path / "x.safetensors")]) == 2
    error = capsys.readouterr().err
    assert "no checkpoint at step 3" in error and "it has: 4" in error
    assert not (tmp_path / "x.safetensors").exists()


def test_teacher_export_at_a_step_carries_that_steps_text_encoder(teacher_run, tmp_path, capsys):
    """The teacher's text encoder trains with it: an export at a step pairs the file with that step's
    encoder (the finished run's export is the reference), and never with another teacher's."""
    first = tmp_path / "a" / "teacher.safetensors"
    first.parent.mkdir()
    assert main(["export", str(teacher_run), "--step", "2", "--out", str(first)]) == 0
    exported = tensors(first.parent / "text_encoder.safetensors")
    reference = tensors(teacher_run / "text_encoder.safetensors")
    assert exported.keys() == reference.keys() and all(torch.equal(exported[k], reference[k]) for k in reference)
    assert main(["export", str(teacher_run), "--step", "2", "--out", str(first.parent / "again.safetensors")]) == 0
    foreign = tmp_path / "b"
    foreign.mkdir()
    other = {k: v + 1 if v.is_floating_point() else v for k, v in reference.items()}
    metadata = safetensors.safe_open(str(teacher_run / "text_encoder.safetensors"), "pt").metadata()
    safetensors.torch.save_file(other, str(foreign / "text_encoder.safetensors"), metadata)
    capsys.readouterr()
    assert main(["export", str(teacher_run), "--step", "2", "--out", str(foreign / "t.safetensors")]) == 2
    assert "already holds another text encoder" in capsys.readouterr().err
    assert not (foreign / "t.safetensors").exists()
    assert torch.equal(tensors(foreign / "text_encoder.safetensors")["token_embedding.weight"],
                       other["token_embedding.weight"])


def test_raw_export_is_the_file_a_run_without_ema_writes(distill_runs, teacher_run, ode_run, tmp_path, capsys):
    """The EMA feeds nothing back: a finished run's trained generator (--raw) equals, tensors and
    metadata, the export of the same run with ema_decay=0, so a run can be scored without its average."""
    run = distill_runs["dmd"]
    raw = tmp_path / "raw.safetensors"
    assert main(["export", str(run), "--raw", "--out", str(raw)]) == 0  # default: the last checkpoint (4)
    assert "at step 4 (raw, no EMA)" in capsys.readouterr().out
    no_ema = tmp_path / "no_ema"
    assert train("distill_dmd_only.yaml", no_ema, *distill_args(teacher_run, ode_run, 4, "ema_decay=0")) == 0
    exported, reference = read_checkpoint(raw), read_checkpoint(no_ema / "model.safetensors")
    assert exported.metadata == reference.metadata and reference.metadata["asd.ema_decay"] == "0.0"
    assert exported.state_dict.keys() == reference.state_dict.keys()
    assert all(torch.equal(exported.state_dict[k], reference.state_dict[k]) for k in reference.state_dict)
    averaged = tensors(run / "model.safetensors")
    assert not all(torch.equal(averaged[k], reference.state_dict[k]) for k in averaged)  # EMA 0.99 differs
    assert main(["export", str(tmp_path), "--raw", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err


def test_distill_resume_is_exact(teacher_run, ode_run, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    extra = ["asd_weight=10", "r1_weight=1"]
    assert train("distill.yaml", straight, *distill_args(teacher_run, ode_run, 4, *extra)) == 0
    assert train("distill.yaml", split, *distill_args(teacher_run, ode_run, 2, *extra)) == 0
    assert train("distill.yaml", split, *distill_args(teacher_run, ode_run, 4, *extra), resume=True) == 0
    a = tensors(straight / "checkpoints" / "step_00000004" / "tensors.safetensors")
    b = tensors(split / "checkpoints" / "step_00000004" / "tensors.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_real_size_student_configs_build_on_the_meta_device():
    from asd_core.config import CausalWanConfig
    from asd_core.discriminator import ASDDiscriminator
    from asd_core.model import CausalWanTransformer
    from trainer.config import load_config
    from trainer.stages.distill import default_depths

    ode = load_config(CONFIGS / "wan2.1-1.3b" / "ode_init.yaml")
    distill = load_config(CONFIGS / "wan2.1-1.3b" / "distill.yaml", ["max_steps=7", "seed=3"])
    assert distill.max_steps == 7 and distill.seed == 3 and distill.asd_weight == 10.0
    assert (ode.num_frames, ode.chunk_frames, distill.num_frames) == (21, 3, 21)
    config = CausalWanConfig(chunk_frames=ode.chunk_frames)  # the defaults are Wan2.1-T2V-1.3B
    with torch.device("meta"):
        student = CausalWanTransformer(config)
        d = ASDDiscriminator(config.width, 3, 3)
    assert sum(p.numel() for p in student.parameters()) == 1_418_996_800
    assert default_depths(config.num_layers) == [9, 19, 29]
    assert d.mlp[-1].out_features == 3 and d.heads[0].to_kv.in_features == 1536  # one logit per n, critic width
    with pytest.raises(ValueError, match="known keys"):
        load_config(CONFIGS / "wan2.1-1.3b" / "distill.yaml", ["alpha=10"])


def test_torchrun_two_ranks_keep_identical_weights_and_exit_steps(teacher_run, ode_run, tmp_path):
    """2 gloo processes, different data per rank: gradients averaged, rank 0's exit step used by both."""
    teacher, ode = teacher_run, ode_run
    out = tmp_path / "distill"
    config = CONFIGS / "toy" / "distill.yaml"
    args = [str(config), f"out_dir={out}", "progress=false", "tensorboard=false",
            *distill_args(teacher, ode, 4, "asd_weight=10", "batch_size=1")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    worker = Path(__file__).resolve().parent / "test_trainer_procs.py"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(worker), "ddp", *args], env=env, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [tensors(out / f"rank{r}.safetensors") for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    same = [k for k in ranks[0] if k != "drawn"]  # weights, EMA, critic, D and the exit steps used
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in same)
    assert not torch.equal(ranks[0]["drawn"], ranks[1]["drawn"])  # the ranks' own draws differed...
    assert torch.equal(ranks[0]["exits"], ranks[0]["drawn"])  # ...and rank 0's was used everywhere
    init = tensors(ode / "model.safetensors")
    key = "blocks.0.attn1.to_q.weight"
    assert not torch.equal(ranks[0][f"generator/{key}"], init[key])


def test_discriminator_reads_the_critic_at_its_own_lower_noise_levels(teacher_run, ode_run, tmp_path):
    """D's branches (its own step and the generator's ASD term) are noised in disc_min_t..disc_max_t,
    not at DMD's levels, where D could not tell n-step from (n+1)-step outputs apart; and D reads
    the critic's features as they are when D steps."""
    stage = distill_stage(teacher_run, ode_run, tmp_path, 8, "asd_weight=10", "disc_min_t=0.05", "disc_max_t=0.1",
                          "asd_counts=[]")
    seen = {"discriminator": [], "generator": []}
    d_step, pair = stage.discriminator_step, stage.disc_pair

    def discriminator_step(step, x, t, features, context, *rest):
        seen["discriminator"].append(t)
        with torch.no_grad():
            _, expected = stage.critic(x, t, torch.cat([context, context]), return_features=stage.depths)
        # D steps before the critic's update: its features (and R1/R2's perturbed ones, taken in
        # this call) come from the critic as it is now
        assert all(torch.equal(a, b) for a, b in zip(features, expected))
        return d_step(step, x, t, features, context, *rest)

    stage.discriminator_step = discriminator_step
    def disc_pair(fake, real, generator):
        x, t = pair(fake, real, generator)
        if fake.requires_grad:  # the generator's ASD term (D's own step gets detached samples)
            seen["generator"].append(t)
        return x, t

    stage.disc_pair = disc_pair
    for step in range(8):
        stage.train_step(step)
    assert seen["discriminator"] and seen["generator"]  # ASD ran in both roles
    for t in (t for ts in seen.values() for t in ts):
        assert ((t >= 50 - 1e-3) & (t <= 100 + 1e-3)).all(), t


def test_asd_real_sample_is_the_same_rollout_one_step_further(teacher_run, ode_run, tmp_path, monkeypatch):
    """D's real branch is the main rollout taken one step further: one rollout per iteration,
    asked for its next step exactly when ASD runs."""
    from trainer.stages import distill

    stage = distill_stage(teacher_run, ode_run, tmp_path, 6, "asd_weight=10", "asd_counts=[]")
    calls, pairs = [], []
    real_rollout, real_pair = distill.self_forcing_rollout, stage.disc_pair

    def rollout(model, noise, context, **kwargs):
        out = real_rollout(model, noise, context, **kwargs)
        calls.append({"noise": noise, "out": out, **kwargs})
        return out

    def disc_pair(fake, real, generator):
        pairs.append((len(calls), real))
        return real_pair(fake, real, generator)

    monkeypatch.setattr(distill, "self_forcing_rollout", rollout)
    stage.disc_pair = disc_pair
    for step in range(6):
        stage.train_step(step)
        assert len(calls) == step + 1  # no second rollout
    assert pairs, "no iteration ran ASD"
    for calls_so_far, real in pairs:
        main = calls[calls_so_far - 1]
        assert main["one_more_step"] and torch.equal(real, main["out"].next_video)


def test_an_n_step_exit_walks_the_first_n_timesteps_of_the_training_plan(teacher_run, ode_run, tmp_path):
    """Read off the generator's own calls: with plan 4, an n-step exit walks the first n of
    [1000, 937.5, 833.3, 625] and ASD's real branch one step more from there. Every chunk but
    the last ends with a cache fill at t = 0."""
    from asd_core.schedule import parse_plan

    stage = distill_stage(teacher_run, ode_run, tmp_path, 12, "asd_weight=1", "asd_counts=[]")
    calls = []
    forward = stage.generator.forward

    def recording_forward(x, timestep, context, **kwargs):
        calls.append((round(float(torch.as_tensor(timestep).flatten()[0]), 3), kwargs.get("update_cache", False)))
        return forward(x, timestep, context, **kwargs)

    stage.generator.forward = recording_forward
    training = [round(t, 3) for t in parse_plan("4").rest]
    exits = set()
    for step in range(12):
        calls.clear()
        logs = stage.train_step(step).logs
        n = int(logs["exit_step"]) + 1
        exits.add(n)
        steps = training[:n + 1] if logs["asd_n"] else training[:n]  # ASD: the (n+1)-th step on top
        expected = [(t, False) for t in steps] + [(0.0, True)] + [(t, False) for t in steps]  # 2 chunks of 2
        assert calls == expected, (step, n, calls)
    assert {1, 2, 3} <= exits


def test_asd_counts_limit_the_n_asd_runs_at(teacher_run, ode_run, tmp_path):
    """asd_counts=[2]: the ASD terms (and D's step) run on 2-step vs 3-step pairs only; DMD at every exit."""
    stage = distill_stage(teacher_run, ode_run, tmp_path, 16, "asd_weight=1", "asd_counts=[2]", "cfg_scale=1.5")
    logs = [stage.train_step(step).logs for step in range(16)]
    exits = {int(entry["exit_step"]) + 1 for entry in logs}
    assert {1, 2, 3} <= exits and stage.export_metadata()["asd.asd_counts"] == "2"
    assert stage.export_metadata()["asd.real_cfg"] == "1.5"  # the students' provenance names their guidance
    for entry in logs:
        n = int(entry["exit_step"]) + 1
        assert entry["asd_n"] == (2 if n == 2 else 0)
        assert ("logit_gap" in entry) == (n == 2)
    with pytest.raises(ValueError, match=r"asd_counts \[3, 4\]: with plan='4' \(N = 4 steps\) .* n = 1..3 only"):
        distill_stage(teacher_run, ode_run, tmp_path, 16, "asd_weight=1", "asd_counts=[3,4]")


def test_exit_weights_set_how_often_each_step_count_is_trained(teacher_run, ode_run, tmp_path):
    """exit_weights: the drawn exits follow the weights (a zero weight is never drawn, three times the
    weight about three times as often); unset, the draw is the uniform one runs before the option made."""
    import collections

    from trainer.stages.base import step_seed
    from trainer.stages.distill import EXIT_SALT

    weighted = distill_stage(teacher_run, ode_run, tmp_path, 16, "exit_weights=[3,1,0,1]")
    counts = collections.Counter(weighted.draw_exit(step) + 1 for step in range(600))
    assert counts[3] == 0 and set(counts) == {1, 2, 4}
    assert 2.2 < counts[1] / counts[2] < 4 and 2.2 < counts[1] / counts[4] < 4, counts
    only_two = distill_stage(teacher_run, ode_run, tmp_path, 16, "exit_weights=[0,1,0,0]", "asd_weight=0")
    assert {only_two.draw_exit(step) for step in range(50)} == {1}

    uniform = distill_stage(teacher_run, ode_run, tmp_path, 16, "seed=7")
    for step in range(50):
        generator = torch.Generator().manual_seed(step_seed(7, 0, step, EXIT_SALT))
        assert uniform.draw_exit(step) == int(torch.randint(4, (1,), generator=generator))
    with pytest.raises(ValueError, match=r"exit_weights \[1.0, 1.0\]: with plan='4' \(N = 4 steps\) give one "
                                         r"weight per exit count n = 1..4"):
        distill_stage(teacher_run, ode_run, tmp_path, 16, "exit_weights=[1,1]")
    with pytest.raises(ValueError, match=r"never draw an exit ASD runs at \(n in \[1\]\), so asd_weight=1.0 would "
                                         r"train DMD only"):
        distill_stage(teacher_run, ode_run, tmp_path, 16, "exit_weights=[0,1,1,1]", "asd_weight=1", "asd_counts=[1]")


@pytest.mark.parametrize("weighting", ["fixed", "relative"])
def test_asd_weighting_fixes_alpha_or_the_ratio_of_the_gradients_at_the_output(teacher_run, ode_run, tmp_path,
                                                                               weighting):
    """fixed: L_ASD's weight is alpha; relative: per sample, ||w g_ASD|| = alpha ||g_DMD|| at the
    generator's output (one sample per batch here, so the logged means are that sample's)."""
    stage = distill_stage(teacher_run, ode_run, tmp_path, 8, "asd_weight=0.3", "batch_size=1",
                          f"asd_weighting={weighting}")
    generator_asd_steps = [logs for logs in (stage.train_step(step).logs for step in range(8))
                           if "asd_grad_ratio" in logs]
    assert generator_asd_steps, "no generator iteration ran ASD"
    for logs in generator_asd_steps:
        assert logs["asd_grad_ratio"] > 0
        if weighting == "fixed":
            assert logs["asd_effective_weight"] == pytest.approx(0.3)
        else:
            assert logs["asd_effective_weight"] * logs["asd_grad_ratio"] == pytest.approx(0.3, rel=1e-4)
            assert logs["asd_effective_weight"] != pytest.approx(0.3)


def test_discriminator_noise_range_is_checked(tmp_path):
    from trainer.config import load_config

    distill = CONFIGS / "toy" / "distill.yaml"
    with pytest.raises(ValueError, match="disc_min_t <= disc_max_t"):
        load_config(distill, [f"out_dir={tmp_path}", "disc_min_t=0.5", "disc_max_t=0.2"])
    with pytest.raises(ValueError, match="asd_weighting must be 'fixed' .* got 'adaptive'"):
        load_config(distill, [f"out_dir={tmp_path}", "asd_weighting=adaptive"])
    for removed in ("asd_real=rollout", "exit_plans=per_count", "disc_backbone=teacher", "disc_caption=true",
                    "ffe_first_plan=4"):  # experiments that did not ship (docs/results.md keeps their results)
        with pytest.raises(ValueError, match=f"unknown config key\\(s\\) \\['{removed.split('=')[0]}'\\]"):
            load_config(distill, [f"out_dir={tmp_path}", removed])
    with pytest.raises(ValueError, match=r"asd_counts are step counts n >= 1 .* got \[0, 1\]"):
        load_config(distill, [f"out_dir={tmp_path}", "asd_counts=[0,1]"])
    with pytest.raises(ValueError, match=r"exit_weights are relative draw weights .* got \[1.0, -1.0\]"):
        load_config(distill, [f"out_dir={tmp_path}", "exit_weights=[1,-1]"])
    with pytest.raises(ValueError, match=r"exit_weights .* at least one > 0, got \[0.0, 0.0\]"):
        load_config(distill, [f"out_dir={tmp_path}", "exit_weights=[0,0]"])


def probe_args(teacher_run, ode_run, *extra):
    return ["--teacher", str(teacher_run), "--student", str(ode_run), "--batches", "10", "--steps", "60",
            "--set", "num_frames=4", "plan=2", "exit_weights=[]", *TINY_VIDEO, *extra]


def test_disc_probe_tells_real_step_differences_apart_and_not_identical_branches(teacher_run, ode_run, capsys,
                                                                                  monkeypatch):
    """The diagnostic behind docs/results.md's discriminator figures: on the student's real
    (1-step, 2-step) pairs of clean outputs D learns to rank them; on pairs whose two branches
    are the same video it cannot (identical logits: zero gap)."""
    import json

    from research import disc_probe

    assert disc_probe.main(probe_args(teacher_run, ode_run) + ["--min-t", "0", "--max-t", "0"]) == 0
    real = json.loads(capsys.readouterr().out)
    assert real["accuracy"] >= 0.9 and real["logit_gap"] > 0, real

    pairs = disc_probe.rollout_pairs
    monkeypatch.setattr(disc_probe, "rollout_pairs",
                        lambda *a: [(v, v.clone(), n, c) for v, _, n, c in pairs(*a)])
    assert disc_probe.main(probe_args(teacher_run, ode_run) + ["--min-t", "0", "--max-t", "0"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["logit_gap"] == 0 and same["accuracy"] == 0, same


def test_disc_probe_refuses_bad_ranges(teacher_run, ode_run, capsys):
    from research import disc_probe

    assert disc_probe.main(probe_args(teacher_run, ode_run) + ["--min-t", "0.5", "--max-t", "0.1"]) == 2
    assert "need 0 <= --min-t <= --max-t <= 1" in capsys.readouterr().err
