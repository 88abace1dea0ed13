"""The trainer as processes: SIGTERM saves and stops, kill -9 mid-write is harmless.

Run as a script (`python tests/test_trainer_procs.py ...`) this file is also the body of the
subprocesses these tests launch and the torchrun worker of test_trainer_students.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import safetensors.torch
import torch

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve()
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE.parent))

from trainer.loop import Stage, StepResult, apply_update, step_seed
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


if __name__ == "__main__":
    kind, rest = sys.argv[1], sys.argv[2:]
    if kind == "tiny":
        sys.exit(_tiny(*rest))
    if kind == "kill9":
        _kill9(*rest)
    if kind == "ddp":
        _ddp(rest)
