"""The trainer as processes: SIGTERM saves and stops, kill -9 mid-write is harmless.

Run as a script (`python tests/test_trainer_procs.py ...`) this file is also the body of the
subprocesses these tests launch and the torchrun worker of test_trainer_students.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve()
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE.parent))

from trainer.stages.base import Stage, StepResult, apply_update, step_seed
from trainer.state import Checkpointer


class TinyStage(Stage):
    """A linear regression 'stage': the loop's behaviour without a video model's cost."""

    name = "tiny"

    def __init__(self, config, runtime):
        super().__init__(config, runtime)
        torch.manual_seed(config.seed)
        self.model = torch.nn.Linear(4, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: 1.0)

    def modules(self):
        return {"model": self.model}

    def optimizers(self):
        return {"model": self.optimizer}

    def schedulers(self):
        return {"model": self.scheduler}

    def train_step(self, step):
        g = torch.Generator().manual_seed(step_seed(self.config.seed, self.runtime.rank, step))
        x = torch.randn(8, 4, generator=g)
        loss = (self.model(x) - x.sum(1, keepdim=True)).square().mean()
        applied, _ = apply_update(loss, list(self.model.parameters()), self.optimizer, self.runtime, 0)
        time.sleep(0.05)
        return StepResult({"loss": loss.item()}, [] if applied else ["model"])

    def export(self, path):
        safetensors.torch.save_file(self.model.state_dict(), str(path))
        return path


def run_script(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(HERE), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def wait_for(predicate, seconds: float, what: str):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigterm_saves_a_resumable_checkpoint_and_exits(tmp_path):
    out = tmp_path / "run"
    proc = run_script("tiny", str(out), "max_steps=100000")
    wait_for(lambda: (out / "run.json").is_file(), 60, "the run to start")
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "stopped by SIGTERM" in output
    latest = Checkpointer(out / "checkpoints").latest()
    step = int(latest.name.split("_")[1])
    assert 0 < step < 100000
    proc = run_script("tiny", str(out), f"max_steps={step + 2}", "--resume")
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and f"done: step {step + 2} (2 this run" in output, output


def test_kill_9_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    directory = tmp_path / "checkpoints"
    proc = run_script("kill9", str(directory))
    assert proc.stdout.readline().strip() == "writing step 2"
    proc.kill()  # SIGKILL while step 2's files are written but not yet renamed into place
    proc.wait(timeout=30)
    checkpointer = Checkpointer(directory)
    assert checkpointer.latest().name == "step_00000001"
    assert list(directory.glob(".tmp-step_00000002-*"))  # the half-written step 2 was left behind
    model = torch.nn.Linear(4, 1)
    step, _ = Checkpointer.load(checkpointer.latest(), modules={"model": model}, optimizers={}, schedulers={})
    assert step == 1 and torch.equal(model.weight, torch.full((1, 4), 1.0))
    checkpointer.save(3, modules={"model": model}, optimizers={}, schedulers={})
    assert not list(directory.glob(".tmp-*")) and checkpointer.latest().name == "step_00000003"


# -- parallel=fsdp: 2 gloo processes, the teacher stage on a tiny model -----------------------

TINY_TEACHER = ["progress=false", "tensorboard=false", "batch_size=1", "pool_size=4", "num_frames=3", "save_every=2",
                "ema_start=100", "latent_height=4", "latent_width=4", "model.num_layers=2",
                "model.num_attention_heads=1", "model.attention_head_dim=32", "model.ffn_dim=64", "model.freq_dim=32"]
BLOCK_KEY = "blocks.0.attn1.to_q.weight"  # (32, 32): 16 rows per rank when sharded


def torchrun(out_dir: Path, vae: Path, *words: str) -> None:
    """A 2-process teacher run of the `shards` worker (each rank saves what it holds)."""
    args = [str(ROOT / "trainer" / "configs" / "toy" / "teacher.yaml"), f"out_dir={out_dir}", f"vae={vae}",
            *TINY_TEACHER, *words]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(HERE), "shards", *args], env=env, capture_output=True, text=True, timeout=180,
                            check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def checkpoint_tensors(run: Path, step: int) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(run / "checkpoints" / f"step_{step:08d}" / "tensors.safetensors"))


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory):
    """The tiny VAE file and a 4-step parallel=fsdp teacher run (checkpoints at steps 2 and 4)."""
    from asd_core.vae import LatentCodec

    root = tmp_path_factory.mktemp("fsdp")
    vae = root / "vae.safetensors"
    LatentCodec.tiny_random(seed=0).save(vae)
    torchrun(root / "fsdp", vae, "max_steps=4", "parallel=fsdp")
    return root, vae


def test_fsdp_shards_the_teacher_and_gathers_full_checkpoints(fsdp_runs, tmp_path):
    """Each rank holds half of every block weight; the checkpoint is the two halves put together; the
    replicated text encoder is the same on both ranks; export writes the layout ddp writes."""
    from asd_core.checkpoint import load_model, read_checkpoint
    from trainer.cli import main
    from trainer.config import load_config
    from trainer.dist import Runtime
    from trainer.stages import build_stage

    root, vae = fsdp_runs
    run = root / "fsdp"
    ranks = [safetensors.torch.load_file(str(run / f"rank{r}.safetensors")) for r in (0, 1)]
    full = checkpoint_tensors(run, 4)
    assert ranks[0][f"model/{BLOCK_KEY}"].shape == ranks[1][f"ema/{BLOCK_KEY}"].shape == (16, 32)
    for key in ranks[0]:
        if key.startswith("text_encoder/"):
            assert torch.equal(ranks[0][key], ranks[1][key]) and torch.equal(ranks[0][key], full[f"model/{key}"])
        else:
            assert torch.equal(torch.cat([ranks[0][key], ranks[1][key]]), full[f"model/{key}"]), key

    out = tmp_path / "teacher.safetensors"
    assert main(["export", str(run), "--out", str(out)]) == 0
    exported = safetensors.torch.load_file(str(out))
    assert exported.keys() == {k[len("model/ema/"):] for k in full if k.startswith("model/ema/")}
    assert all(torch.equal(v, full[f"model/ema/{k}"]) and torch.isfinite(v).all() for k, v in exported.items())
    model = load_model(out)
    assert read_checkpoint(out).plan == "50" and model.config.num_layers == 2
    for index, (name, _) in enumerate(model.named_parameters()):  # Adam moments gathered full, torch's numbering
        assert full[f"optim/teacher/{index}/exp_avg"].shape == full[f"model/model/{name}"].shape, name
    config = load_config(ROOT / "trainer" / "configs" / "toy" / "teacher.yaml",
                         [f"out_dir={tmp_path / 'init'}", f"vae={vae}", *TINY_TEACHER])
    with torch.random.fork_rng(devices=[]):
        init = build_stage(config, Runtime()).model.state_dict()  # rank 0's initial weights (the ones broadcast)
    assert exported.keys() == init.keys() and not torch.equal(exported[BLOCK_KEY], init[BLOCK_KEY])


def test_fsdp_matches_ddp_to_float_rounding(fsdp_runs):
    """Same run under ddp: FSDP's reduce-scatter and the global-norm clip compute what the all-reduce
    does, up to the order of float sums (exact equality is not expected: the reductions differ)."""
    root, vae = fsdp_runs
    torchrun(root / "ddp", vae, "max_steps=4", "parallel=ddp")
    fsdp, ddp = checkpoint_tensors(root / "fsdp", 4), checkpoint_tensors(root / "ddp", 4)
    assert fsdp.keys() == ddp.keys()
    state_fsdp = json.loads((root / "fsdp" / "checkpoints" / "step_00000004" / "state.json").read_text())
    state_ddp = json.loads((root / "ddp" / "checkpoints" / "step_00000004" / "state.json").read_text())
    assert state_fsdp["optimizers"] == state_ddp["optimizers"]  # same param groups, indices, scalars
    for key in fsdp:
        if key.startswith(("model/", "optim/")):
            torch.testing.assert_close(fsdp[key], ddp[key], rtol=0, atol=1e-5, msg=key)


def test_fsdp_resume_is_exact(fsdp_runs):
    """Resuming the step-2 checkpoint to step 4 == 4 steps in one go, bit for bit (sharded weights, Adam moments).

    The step-2 checkpoint is the straight run's own: a run stopped at step 2 writes the same file
    (the same save, the same state), and one torchrun fewer keeps this test short.
    """
    root, vae = fsdp_runs
    split = root / "split"
    shutil.copytree(root / "fsdp" / "checkpoints" / "step_00000002", split / "checkpoints" / "step_00000002")
    torchrun(split, vae, "max_steps=4", "parallel=fsdp", "--resume")
    a, b = checkpoint_tensors(root / "fsdp", 4), checkpoint_tensors(split, 4)
    # The global numpy RNG is never seeded (nothing draws from it); each process starts it afresh.
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if k != "rng/numpy")


# -- subprocess bodies ----------------------------------------------------------------------


def _tiny(out_dir: str, *words: str) -> int:
    from trainer.config import build_config
    from trainer.loop import run_training

    resume = "--resume" in words
    overrides = [w for w in words if w != "--resume"]
    config = build_config({"stage": "teacher", "out_dir": out_dir, "progress": False, "tensorboard": False,
                           "save_every": 10**9}, overrides)
    summary = run_training(config, resume=resume, stage_factory=TinyStage)
    return 0 if summary["stopped_by"] is None else 130


def _kill9(directory: str) -> None:
    model = torch.nn.Linear(4, 1)
    torch.nn.init.constant_(model.weight, 1.0)
    checkpointer = Checkpointer(directory)
    checkpointer.save(1, modules={"model": model}, optimizers={}, schedulers={})
    torch.nn.init.constant_(model.weight, 2.0)

    def stall(fd):
        print("writing step 2", flush=True)
        time.sleep(600)

    os.fsync = stall
    checkpointer.save(2, modules={"model": model}, optimizers={}, schedulers={})


def _ddp(argv: list[str]) -> None:
    """torchrun worker: a distill run whose ranks record their exit steps and final weights."""
    from trainer.config import load_config
    from trainer.loop import run_training
    from trainer.stages import build_stage, distill

    rank = int(os.environ["RANK"])
    original = distill.step_seed
    # Give rank 1 its own exit-step stream: only the broadcast can make the ranks agree.
    distill.step_seed = lambda seed, r, step, salt=0: original(seed + rank * (salt == distill.EXIT_SALT), r, step, salt)
    drawn, used, stages = [], [], []

    def factory(config, runtime):
        stage = build_stage(config, runtime)
        stage_draw = stage.draw_exit

        def recording(step):
            g = torch.Generator().manual_seed(distill.step_seed(config.seed, 0, step, distill.EXIT_SALT))
            drawn.append(int(torch.randint(stage.num_steps, (1,), generator=g)))
            used.append(stage_draw(step))
            return used[-1]

        stage.draw_exit = recording
        stages.append(stage)
        return stage

    config = load_config(argv[0], argv[1:])
    run_training(config, stage_factory=factory)
    state = {f"{name}/{k}": v.contiguous() for name, m in stages[0].modules().items() for k, v in m.state_dict().items()}
    state["exits"], state["drawn"] = torch.tensor(used), torch.tensor(drawn)
    safetensors.torch.save_file(state, str(Path(config.out_dir) / f"rank{rank}.safetensors"))


def _shards(argv: list[str]) -> None:
    """torchrun worker: any run; each rank saves what it holds: its own shard of sharded networks."""
    from trainer import dist
    from trainer.config import load_config
    from trainer.loop import run_training
    from trainer.stages import build_stage

    rank = int(os.environ["RANK"])
    resume = "--resume" in argv
    words = [w for w in argv if w != "--resume"]
    stages = []

    def factory(config, runtime):
        stages.append(build_stage(config, runtime))
        return stages[-1]

    config = load_config(words[0], words[1:])
    run_training(config, resume=resume, stage_factory=factory)
    state = {f"{name}/{k}": dist.local(v).contiguous() for name, m in stages[0].modules().items()
             for k, v in m.state_dict().items()}
    safetensors.torch.save_file(state, str(Path(config.out_dir) / f"rank{rank}.safetensors"))


if __name__ == "__main__":
    kind, rest = sys.argv[1], sys.argv[2:]
    if kind == "tiny":
        sys.exit(_tiny(*rest))
    if kind == "kill9":
        _kill9(*rest)
    if kind == "ddp":
        _ddp(rest)
    if kind == "shards":
        _shards(rest)
