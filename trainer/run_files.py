"""The names of the files in a run folder (`out_dir`), shared by the loop, the stages and export.

    out_dir/
        run.json            the config and what the stage records (model config, plan, VAE)
        checkpoints/        resumable checkpoints (trainer/state.py)
        model.safetensors   the exported model, written when the run finishes
        summary.json        the last run's summary line (a resumed run: that part only)
"""

CHECKPOINTS = "checkpoints"
FINAL_MODEL = "model.safetensors"
RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
