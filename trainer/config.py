"""Training configs: one dataclass per stage, read from YAML, overridden by `key=value` words.

A YAML file names its `stage` and sets any field of that stage's dataclass; fields it leaves
out keep the defaults below. Command-line overrides use the same names (`max_steps=10`,
`model.num_layers=4`, `out_dir=runs/x`); values are parsed as YAML scalars, so `lr=1e-4`,
`ffe=true` and `betas=[0.0,0.999]` work. An unknown key is an error that lists the known ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from asd_core.config import CausalWanConfig
from asd_core.schedule import parse_plan

PARALLEL_MODES = ("ddp", "fsdp")


@dataclass
class RunConfig:
    """Fields every stage has: where it writes, how long it runs, how it saves and logs."""

    stage: str = ""
    out_dir: str = "runs/default"  # checkpoints/, tensorboard/, samples/ and the final model go here
    seed: int = 0
    max_steps: int = 1000  # optimizer iterations (for distill: critic iterations)
    batch_size: int = 4  # per process
    device: str = "auto"  # auto = cuda when available, else cpu
    precision: str = "fp32"  # fp32 | bf16 (autocast; master weights and optimizer stay fp32)
    parallel: str = "ddp"  # ddp: replicated weights, averaged gradients; fsdp: trained transformers sharded per block (FSDP2)
    gradient_checkpointing: bool = False  # recompute block activations in backward (real size)
    grad_clip: float = 10.0  # max global grad norm; 0 = off
    ema_decay: float = 0.99
    ema_start: int = 200  # EMA copies the weights until this step, then averages
    warmup_steps: int = 0  # linear learning-rate warmup
    save_every: int = 500  # steps between resumable checkpoints (also saved at the end and on SIGTERM)
    keep_last: int = 3  # resumable checkpoints kept on disk
    log_every: int = 10  # steps between TensorBoard scalar writes
    sample_every: int = 0  # steps between sample videos written to samples/ (0 = off)
    max_nonfinite: int = 5  # consecutive non-finite losses before the run aborts
    tensorboard: bool = True
    progress: bool = True  # tqdm bar on rank 0
    # Video size in latent space (the toy domain derives them from its VAE when 0).
    num_frames: int = 0  # latent frames per clip
    latent_height: int = 0
    latent_width: int = 0


@dataclass
class VaeConfig(RunConfig):
    """Toy stage 0: the tiny Wan VAE on synthetic shape videos."""

    stage: str = "vae"
    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    kl_weight: float = 1e-6  # small: the latent must stay informative, only loosely Gaussian
    foreground_weight: float = 10.0  # extra loss weight of shape pixels (the background is most of a frame)
    edge_weight: float = 0.0  # L1 on the spatial gradients too: a shape's kind is in its edges and corners
    init: str = ""  # start from a trained VAE (run dir or file) instead of random weights
    freeze_encoder: bool = False  # train the decoder only: the latent space stays that of `init`
    clip_frames: int = 9  # pixel frames per training clip (4k+1); the causal VAE then runs on any length
    stats_clips: int = 64  # clips encoded at export to set the latents' mean/std (capped by the clips trained on)
    vae: dict = field(default_factory=dict)  # LatentCodec / AutoencoderKLWan overrides (empty = toy default)


@dataclass
class TeacherConfig(RunConfig):
    """Flow-matching teacher: bidirectional Wan (chunk_frames >= num_frames) on video latents."""

    stage: str = "teacher"
    model: dict = field(default_factory=dict)  # CausalWanConfig fields; chunk_frames is raised to num_frames
    lr: float = 1e-4
    text_lr: float = 1e-3  # toy text encoder, trained jointly
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    cfg_dropout: float = 0.1  # probability a sample's text is replaced by the unconditional context
    # The guidance the teacher is sampled with: its sample videos, and written into its export as
    # asd.cfg, which asd-eval / asd-generate take as the file's default CFG. Set it to the scale the
    # teacher scores best at once a sweep has found it (the shipped toy teacher: 2).
    sample_cfg: float = 3.0
    timestep_shift: float = 3.0  # training sigmas u ~ U(0,1) warped by this shift (more time at high noise)
    # Data: "synthetic" (toy domain, encoded by `vae` once into a latent pool) or "latents" (shards).
    data: str = "synthetic"
    vae: str = ""  # synthetic: the VAE run dir / file that encodes the clips; latents: decodes samples only
    # ("" = the VAE the shards name); recorded in run.json, where the student stages find it
    pool_size: int = 512  # toy: synthetic clips encoded once and cycled through
    latent_dir: str = ""  # latents: folder of *.safetensors shards with `latents` (N,C,F,H,W) and `context` (N,L,D)
    uncond_file: str = ""  # latents: safetensors with `context` (1,L,D) for the dropped text ("" = zeros)
    text_encoder: dict = field(default_factory=dict)  # synthetic: toy text encoder overrides


@dataclass
class OdeInitConfig(RunConfig):
    """Regress the causal student onto teacher ODE trajectories (CausVid / Self Forcing init)."""

    stage: str = "ode_init"
    teacher: str = ""  # teacher run dir or model file
    init: str = ""  # student initial weights ("" = the teacher's weights)
    chunk_frames: int = 3  # the student's latent frames per chunk
    plan: str = "4"  # the student's step plan; trajectories are recorded at its timesteps
    ode_steps: int = 48  # teacher Euler steps per trajectory (plan timesteps are always included)
    ode_shift: float = 5.0  # shift of the teacher's step grid
    cfg_scale: float = 3.0
    num_trajectories: int = 256  # per process; generated once into out_dir and reused on resume
    lr: float = 2e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    prompts_file: str = ""  # one prompt per line ("" = toy captions)
    prompt_embeddings: str = ""  # real size: safetensors with `context` (N,L,D) (`python -m trainer.prepare prompts`)
    uncond_file: str = ""  # with prompt_embeddings: `context` (1,L,D) of the negative / empty prompt ("" = zeros)
    vae: str = ""  # decodes sample videos: run dir, file or diffusers folder ("" = the one the teacher run names)


@dataclass
class DistillConfig(RunConfig):
    """Self Forcing DMD + adversarial self-distillation (ASD); asd_weight 0 = DMD only."""

    stage: str = "distill"
    teacher: str = ""  # real score (frozen) and critic initialisation
    init: str = ""  # generator initialisation (the ode_init run)
    # Training steps N: every chunk rolled out with these timesteps; an n-step exit walks the
    # first n of them (Self Forcing: with plan 4 the 2-step output is [1000, 937.5]).
    plan: str = "4"
    # How often each exit count n = 1..N is drawn, relative weights ([] = uniform, Self Forcing's
    # draw): e.g. [3,1,1,1] spends half the iterations on 1-step outputs, for a student sampled at 1 step.
    exit_weights: list[float] = field(default_factory=list)
    export_plan: str = ""  # plan written into exported checkpoints ("" = plan)
    cfg_scale: float = 3.0  # real score guidance
    gen_update_ratio: int = 5  # generator updated every this many critic steps
    lr_generator: float = 2e-6
    lr_critic: float = 4e-7
    lr_discriminator: float = 4e-7
    betas: list[float] = field(default_factory=lambda: [0.0, 0.999])
    weight_decay: float = 0.01
    dmd_min_t: float = 0.02  # DMD / critic noise level u ~ U(min, max) before the shift warp
    dmd_max_t: float = 0.98
    timestep_shift: float = 5.0
    context_noise: float = 0.0  # timestep of the cache-filling pass (0 = clean)
    asd_weight: float = 0.0  # alpha; 0 turns ASD off (same code path, D not trained)
    asd_counts: list[int] = field(default_factory=list)  # the n ASD runs at (n-step vs (n+1)-step); [] = 1..N-1
    # How alpha weighs L_ASD: "fixed" = loss L_DMD + alpha * L_ASD; "relative" = per sample, the
    # ASD gradient at the generator's output is scaled to alpha times the DMD gradient's norm
    # there (D cannot take over the update however steep it gets; asd_core.losses.weigh_at_output).
    asd_weighting: str = "fixed"
    disc_width: int = 0  # 0 = the critic's width
    disc_depths: list[int] = field(default_factory=list)  # critic blocks fed to D ([] = 3 spread over depth)
    disc_queries: int = 4
    # D's noise level, u ~ U(min, max) warped by disc_timestep_shift; both branches drawn
    # independently. Lower than DMD's on purpose: at DMD's levels (median sigma 0.83) the n- and
    # (n+1)-step outputs are buried in noise and D stayed at chance (docs/results.md).
    disc_min_t: float = 0.02
    disc_max_t: float = 0.4
    disc_timestep_shift: float = 1.0
    r1_weight: float = 1.0  # approximate R1/R2 on D (finite differences)
    r1_sigma: float = 0.01
    r1_every: int = 4  # lazy R1/R2: every this many D steps, weight scaled by it (1 = every step)
    prompts_file: str = ""
    prompt_embeddings: str = ""
    uncond_file: str = ""
    vae: str = ""  # decodes sample videos ("" = the one the teacher run names)


STAGES: dict[str, type[RunConfig]] = {
    "vae": VaeConfig,
    "teacher": TeacherConfig,
    "ode_init": OdeInitConfig,
    "distill": DistillConfig,
}

_MODEL_KEYS = tuple(f.name for f in dataclasses.fields(CausalWanConfig))


def known_keys(cls: type[RunConfig]) -> list[str]:
    keys = [f.name for f in dataclasses.fields(cls)]
    if "model" in keys:
        keys += [f"model.{k}" for k in _MODEL_KEYS]
    return sorted(keys)


def parse_override(word: str) -> tuple[str, object]:
    if "=" not in word or word.startswith("="):
        raise ValueError(f"expected key=value, got {word!r} (e.g. max_steps=100 or out_dir=runs/x)")
    key, text = word.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as error:
        raise ValueError(f"override {word!r}: the value is not valid YAML ({yaml_problem(error)})") from None


def yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one phrase: what is wrong (its line is named by the caller)."""
    return getattr(error, "problem", None) or str(error).splitlines()[0]


def build_config(values: dict, overrides: list[str] = ()) -> RunConfig:
    """A stage config from a mapping (the YAML) plus `key=value` overrides; checks every key."""
    values = dict(values)
    for key, value in (parse_override(w) for w in overrides):
        if "." in key:
            head, sub = key.split(".", 1)
            values[head] = {**(values.get(head) or {}), sub: value}
        else:
            values[key] = value
    stage = values.get("stage")
    if stage not in STAGES:
        raise ValueError(f"config needs `stage:` set to one of {sorted(STAGES)}, got {stage!r}")
    cls = STAGES[stage]
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} for stage {stage!r}; known keys: {known_keys(cls)}")
    if "model" in values:
        bad = sorted(set(values["model"] or {}) - set(_MODEL_KEYS))
        if bad:
            raise ValueError(f"unknown model key(s) {bad}; known keys: {[f'model.{k}' for k in _MODEL_KEYS]}")
    config = cls(**{k: _coerce(names[k], v) for k, v in values.items()})
    validate(config)
    return config


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} not found; configs live in trainer/configs/<size>/<stage>.yaml")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ValueError(f"{where}: malformed YAML ({yaml_problem(error)})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a YAML mapping of config keys")
    return build_config(values, overrides)


def to_dict(config: RunConfig) -> dict:
    return dataclasses.asdict(config)


def _coerce(f: dataclasses.Field, value):
    """YAML gives ints where floats are meant (`lr: 0`) and vice versa; make types exact."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    try:
        if kind == "float":
            return float(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind == "bool":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind == "str":
            return "" if value is None else str(value)
        if kind == "list[float]":
            return [float(v) for v in value]
        if kind == "list[int]":
            return [int(v) for v in value]
        if kind == "dict":
            if value is None:
                return {}
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (TypeError, ValueError):
        raise ValueError(f"config key {f.name!r} must be of type {kind}, got {value!r}") from None
    return value


def validate(config: RunConfig) -> None:
    """Cross-field checks with messages that say how to fix them."""
    positive = ["max_steps", "batch_size", "save_every", "keep_last", "log_every", "max_nonfinite"]
    if isinstance(config, DistillConfig):
        positive += ["gen_update_ratio", "r1_every"]
    for name in positive:
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {config.precision!r}")
    if config.parallel not in PARALLEL_MODES:
        raise ValueError(f"parallel must be ddp (replicated weights) or fsdp (sharded weights), got {config.parallel!r}")
    if not 0 <= config.ema_decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {config.ema_decay}")
    if isinstance(config, TeacherConfig):
        if not 0 <= config.cfg_dropout < 1:
            raise ValueError(f"cfg_dropout must be in [0, 1), got {config.cfg_dropout}")
        if not config.sample_cfg >= 0:
            raise ValueError(f"sample_cfg must be >= 0 (1 = no guidance), got {config.sample_cfg}")
        if config.data not in ("synthetic", "latents"):
            raise ValueError(f"data must be 'synthetic' (toy domain) or 'latents' (shards), got {config.data!r}")
        if config.data == "latents" and not config.latent_dir:
            raise ValueError("data=latents needs latent_dir=FOLDER of .safetensors shards "
                             "(`python -m trainer.prepare latents VIDEO_DIR ...` makes them)")
    if config.sample_every < 0:
        raise ValueError(f"sample_every must be >= 0 (0 = no sample videos), got {config.sample_every}")
    if isinstance(config, (OdeInitConfig, DistillConfig)) and not config.teacher:
        raise ValueError(f"stage {config.stage!r} needs teacher=RUN_DIR_OR_FILE (the teacher stage's output)")
    if isinstance(config, DistillConfig):
        if not config.init:
            raise ValueError("stage 'distill' needs init=RUN_DIR_OR_FILE (the ode_init stage's output)")
        if not 0 <= config.dmd_min_t < config.dmd_max_t <= 1:
            raise ValueError(f"need 0 <= dmd_min_t < dmd_max_t <= 1, got {config.dmd_min_t}, {config.dmd_max_t}")
        if not 0 <= config.disc_min_t <= config.disc_max_t <= 1:
            raise ValueError(f"need 0 <= disc_min_t <= disc_max_t <= 1 (equal = one fixed level, 0 = clean), "
                             f"got {config.disc_min_t}, {config.disc_max_t}")
        if config.exit_weights and (any(w < 0 for w in config.exit_weights) or sum(config.exit_weights) <= 0):
            raise ValueError(f"exit_weights are relative draw weights of the exit counts n = 1..N: each >= 0, "
                             f"at least one > 0, got {config.exit_weights}")
        if config.asd_weighting not in ("fixed", "relative"):
            raise ValueError(f"asd_weighting must be 'fixed' (L_DMD + alpha * L_ASD) or 'relative' (the ASD gradient "
                             f"scaled to alpha x the DMD gradient's norm), got {config.asd_weighting!r}")
        if config.disc_timestep_shift <= 0:
            raise ValueError(f"disc_timestep_shift must be > 0 (1 = no warp), got {config.disc_timestep_shift}")
        if any(n < 1 for n in config.asd_counts):
            raise ValueError(f"asd_counts are step counts n >= 1 (ASD compares n-step with (n+1)-step outputs), "
                             f"got {config.asd_counts}")
        if config.asd_weight < 0:
            raise ValueError(f"asd_weight (alpha) must be >= 0, got {config.asd_weight}")
        validate_distill_plan(config)


def distill_asd_counts(config: DistillConfig) -> set[int]:
    """The step counts n ASD runs at (n-step vs (n+1)-step outputs): `asd_counts`, or 1..N-1."""
    return set(config.asd_counts or range(1, len(parse_plan(config.plan).rest)))


def validate_distill_plan(config: DistillConfig) -> None:
    """The checks of exit_weights and asd_counts against the plan's N training steps."""
    steps = len(parse_plan(config.plan).rest)
    if config.exit_weights and len(config.exit_weights) != steps:
        raise ValueError(f"exit_weights {config.exit_weights}: with plan={config.plan!r} (N = {steps} steps) give "
                         f"one weight per exit count n = 1..{steps}")
    counts = distill_asd_counts(config)
    if counts and max(counts) > steps - 1:
        raise ValueError(f"asd_counts {sorted(counts)}: with plan={config.plan!r} (N = {steps} steps) "
                         f"ASD can compare n-step with (n+1)-step outputs for n = 1..{steps - 1} only")
    if config.asd_weight > 0 and config.exit_weights and not any(config.exit_weights[n - 1] > 0 for n in counts):
        raise ValueError(f"exit_weights {config.exit_weights} never draw an exit ASD runs at (n in "
                         f"{sorted(counts)}), so asd_weight={config.asd_weight} would train DMD only: "
                         f"give one of those n a weight > 0, or set asd_weight=0")


def check_distill_networks(config: DistillConfig, *, frames: int, chunk_frames: int, critic_layers: int,
                           critic_width: int) -> None:
    """The distill checks that need the networks' sizes (read from the init and teacher files)."""
    if frames % chunk_frames:
        raise ValueError(f"num_frames={frames} must be a multiple of the student's chunk_frames={chunk_frames}")
    depths = config.disc_depths
    if any(not 0 <= d < critic_layers for d in depths):
        raise ValueError(f"disc_depths {list(depths)} must index the critic's {critic_layers} blocks")
    if config.disc_width and config.disc_width != critic_width:
        raise ValueError(f"disc_width={config.disc_width} must equal the critic's width {critic_width} (or 0)")
