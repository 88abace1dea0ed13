"""A model file from a resumable checkpoint: `asd-train export RUN_DIR --step N --out FILE`.

A finished run already wrote its model (`model.safetensors`); this is for the checkpoints on
the way there: evaluating a run part-way (where a student started to collapse, say), or
taking a model from a run that was stopped. The file is the one the stage's own export
writes at that step: the EMA network, the model config, the plan and the metadata the stage
records for its export (role, alpha) in every checkpoint. asd-eval and the loader pair a model
with the toy text encoder beside it, so the export writes one there, as the finished run's
export does: a teacher's own encoder at that step (it trains with it), or for an ode_init or
distill run the frozen encoder of the teacher it read (without it a student would be scored
with the built-in encoder, whose tokens mean nothing to it).

`raw=True` writes the trained network itself instead of its EMA, with `asd.ema_decay` "0.0":
the file a run with `ema_decay=0` would have exported, since the EMA feeds nothing back into
training (tested). It lets a finished run be scored without its average, at no training cost.

A VAE run (no EMA, no transformer) is exported by its own stage: rebuilt from the config the
checkpoint saved, given that step's weights, it writes the file its finished run would have,
latent statistics included (measured, or `init`'s for a decoder fine-tune).
"""

from __future__ import annotations

from pathlib import Path

import torch

from asd_core.checkpoint import save_checkpoint
from asd_core.config import CausalWanConfig
from asd_core.toy.text_encoder import ToyTextConfig, ToyTextEncoder

from .config import build_config
from .dist import Runtime
from .run_files import CHECKPOINTS
from .stages.base import TEXT_ENCODER_FILE
from .stages.common import resolve_model_file
from .stages.vae import VaeStage
from .state import PREFIX, Checkpointer, read_meta, read_module_state


def checkpoint_at(run_dir: Path, step: int) -> Path:
    """The run's complete checkpoint at `step`, or a ValueError that lists the steps there are."""
    checkpoints = Checkpointer(run_dir / CHECKPOINTS)
    found = {int(path.name[len(PREFIX):]): path for path in checkpoints.complete()}
    if step not in found:
        have = ", ".join(str(s) for s in sorted(found)) or "none"
        raise ValueError(f"{run_dir} has no checkpoint at step {step}; it has: {have} "
                         "(save_every and keep_last decide which are kept)")
    return found[step]


RAW_NETWORKS = ("generator", "model")  # the trained network: a distill run's, a teacher's or an ode_init's


def last_step(run_dir: str | Path) -> int:
    """The step of the run's newest complete checkpoint (ValueError when it has none)."""
    found = Checkpointer(Path(run_dir) / CHECKPOINTS).complete()  # oldest first
    if not found:
        raise ValueError(f"{run_dir} has no complete checkpoint to export")
    return int(found[-1].name[len(PREFIX):])


def export_step(run_dir: str | Path, step: int, out: str | Path, raw: bool = False) -> Path:
    """Write the EMA network (or with `raw` the trained one) of the run's checkpoint at `step` to `out`."""
    path = checkpoint_at(Path(run_dir), step)
    meta = read_meta(path)
    extra = meta["extra"]
    stage = extra.get("config", {}).get("stage", "?")
    if stage == "vae":
        if raw:
            raise ValueError("a VAE run keeps no EMA, so --raw has nothing to choose: drop it")
        return _export_vae(path, extra["config"], out)
    if "model_config" not in extra:
        raise ValueError(f"{path} is a '{stage}' checkpoint: only vae, teacher, ode_init and distill runs "
                         "hold a model to export")
    if "export_metadata" not in extra:  # the stage records what its export writes; older checkpoints did not
        raise ValueError(f"{path} predates `export --step` (no export_metadata): resume the run past its next "
                         "save, or export the finished run without --step")
    config = CausalWanConfig.from_json(extra["model_config"])
    metadata, network = dict(extra["export_metadata"]), "ema"
    if raw:
        network = next(name for name in RAW_NETWORKS if name in meta["modules"])
        metadata["asd.ema_decay"] = "0.0"
    encoder = _text_encoder_at(path, meta, config)
    if encoder is None:
        encoder = _teachers_text_encoder(extra.get("config", {}))
    target = Path(out).parent / TEXT_ENCODER_FILE
    if encoder is not None and target.is_file() and not _same_weights(ToyTextEncoder.load(target), encoder):
        raise ValueError(f"{target.parent} already holds another text encoder ({target.name}), which this "
                         f"teacher's file would be paired with: export each teacher step into a folder of its own")
    written = save_checkpoint(out, read_module_state(path, network), config, plan=extra["plan"], extra=metadata)
    if encoder is not None:
        encoder.save(target)
    return written


def _export_vae(path: Path, saved_config: dict, out: str | Path) -> Path:
    """The VAE file the run's own export writes, from the checkpoint at `path`, on the CPU."""
    config = build_config(saved_config)
    if config.init:
        try:
            resolve_model_file(config.init)
        except ValueError:
            raise ValueError(f"{path} fine-tunes {config.init}, which is gone: its export keeps that VAE's "
                             "latent statistics, so restore that file (or export the finished run)") from None
    stage = VaeStage(config, Runtime())
    stage.vae.load_state_dict(read_module_state(path, "vae"))
    return stage.export(Path(out))


def _text_encoder_at(path: Path, meta: dict, config: CausalWanConfig) -> ToyTextEncoder | None:
    """The toy text encoder trained with the network in this checkpoint (a teacher's), or None."""
    if "text_encoder" not in meta["modules"]:
        return None
    options = meta["extra"].get("config", {}).get("text_encoder") or {}  # as the teacher stage builds it
    encoder = ToyTextEncoder(ToyTextConfig(width=config.text_dim, **options))
    encoder.load_state_dict(read_module_state(path, "text_encoder"))
    return encoder


def _teachers_text_encoder(saved_config: dict) -> ToyTextEncoder | None:
    """The frozen encoder a student run read beside its teacher (what its export ships), or None
    for a run on precomputed prompt embeddings or without a teacher."""
    teacher = saved_config.get("teacher")
    if not teacher or saved_config.get("prompt_embeddings"):
        return None
    try:
        source = resolve_model_file(teacher).parent / TEXT_ENCODER_FILE
    except ValueError:
        source = None
    if source is None or not source.is_file():
        raise ValueError(f"the run read its prompts through the text encoder beside its teacher ({teacher}), "
                         "which is gone: restore that run (or its text_encoder.safetensors) to export this step")
    return ToyTextEncoder.load(source)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)
