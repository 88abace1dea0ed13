"""The names of the files in a run folder (`out_dir`), shared by the loop, the stages and export.

    out_dir/
        run.json            the config and what the stage records (model config, plan, VAE)
        checkpoints/        resumable checkpoints (trainer/state.py)
        model.safetensors   the exported model, written when the run finishes
        summary.json        the last run's summary line (a resumed run: that part only)
"""

import tempfile
from pathlib import Path

CHECKPOINTS = "checkpoints"
FINAL_MODEL = "model.safetensors"
RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"


def check_out_dir(out_dir: str) -> Path:
    """Create `out_dir` and make sure it takes files, before a run does any work (a one-line
    ValueError when it lies under a file or cannot be written)."""
    path = Path(out_dir)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"out_dir={out_dir}: {existing} is a file, not a folder; choose another out_dir=...")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(f"out_dir={out_dir} is not writable ({error.strerror or error}); "
                         "choose another out_dir=...") from None
    return path


def remove_leftovers(out_dir: Path) -> None:
    """Delete the temporary files of writes a killed run left in out_dir (`.model.*.tmp`, ...)."""
    for name in (FINAL_MODEL, SUMMARY_FILE):
        for stale in out_dir.glob(f".{Path(name).stem}.*.tmp"):
            stale.unlink(missing_ok=True)
