"""Causal Wan checkpoint families: how each release is recognised, and what it was trained with.

Every family below is a Wan2.1-T2V-1.3B causal student (16 latent channels in and out, umt5
text); they differ in how the file is packaged, the chunk size, the step plan, the KV cache
window and its sink frames. Several share one packaging exactly (a `.pt` training dict with
`generator` / `generator_ema` entries in Wan names under `model.`), so the file alone cannot
tell them apart: the file name is used as a tie-breaker, the packaging's first family is the
fallback, and `family=` names it explicitly. Every fact is taken from the family's own
repository; the comment above each entry names the repository, the commit read and the files.

Plans are our spec (`schedule.parse_plan`): the references' `denoising_step_list` with
`warp_denoising_step: true` and `timestep_shift: 5` is our `"4"`; Causal Forcing++'s 4-step
first chunk over 1/2-step later chunks is our `"1*"` / `"2*"`. Windows (`max_cache_frames`)
count the sink frames, as the references' `local_attn_size` does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .layouts import COMFYUI_PREFIX, SELF_FORCING_ENTRIES

# How a file is packaged (told from the loaded object, before any conversion).
TRAINING_DICT = "training_dict"  # {"generator": ..., "generator_ema": ...}, Wan names under `model.`
BARE_GENERATOR = "bare_generator"  # the generator wrapper's state dict itself: Wan names under `model.`
COMFYUI_CAUSAL = "comfyui_causal"  # safetensors, `model.diffusion_model.` names, metadata causal_ar
ASD = "asd"  # our safetensors (asd.format metadata)
PLAIN = "plain"  # Wan / diffusers weights that say nothing about being causal
LORA = "lora"  # a peft LoRA adapter (lora_A / lora_B), not a whole transformer
LORA_MARKERS = (".lora_A.", ".lora_B.")


@dataclass(frozen=True)
class Family:
    name: str  # the `family=` word
    title: str
    packagings: tuple[str, ...]  # how its released files are packaged (first: as released)
    chunk_frames: int  # latent frames per block (num_frame_per_block); 1 = frame-wise
    plan: str  # our plan spec for its trained denoising steps
    entry: str | None = "generator_ema"  # the training-dict entry its own inference reads
    sink_frames: int = 0  # frames kept forever when the cache rolls (sink_size)
    max_cache_frames: int | None = None  # rolling window incl. sinks (local_attn_size); None: whole video
    context_noise: float = 0.0  # the timestep of the cache-filling pass
    trained_frames: int = 21  # latent frames per training video
    start_image: bool = False  # its reference runs image-to-video from a first latent frame
    lora_rank: int | None = None  # LoRA-on-base releases: the adapter's rank and alpha
    lora_alpha: float | None = None
    hints: tuple[tuple[str, ...], ...] = ()  # file-path substrings (all of one tuple) that name it
    download: str = ""  # where the file is published
    sampler_note: str = ""  # what its reference inference does beyond Self Forcing's loop (samplers.py does it)

    def settings(self) -> dict:
        """Trained settings and sampling defaults, as `info` and `asd-inspect` show them."""
        return {
            "family": self.name, "title": self.title, "chunk_frames": self.chunk_frames, "plan": self.plan,
            "sink_frames": self.sink_frames, "max_cache_frames": self.max_cache_frames,
            "context_noise": self.context_noise, "trained_frames": self.trained_frames,
            "start_image": self.start_image, "entry": self.entry, "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha, "sampler_note": self.sampler_note or None,
        }

    def describe(self) -> str:
        window = (f"rolling window {self.max_cache_frames} frames with {self.sink_frames} sink"
                  if self.max_cache_frames else "whole-video cache")
        blocks = "frame-wise" if self.chunk_frames == 1 else f"{self.chunk_frames} latent frames per chunk"
        return f"{self.title}: {blocks}, plan {self.plan}, {window}, context noise {self.context_noise:g}"


_DICT = (TRAINING_DICT, BARE_GENERATOR, COMFYUI_CAUSAL)
FAMILIES: tuple[Family, ...] = (
    # guandeh17/Self-Forcing 33593df: configs/self_forcing_dmd.yaml (num_frame_per_block 3, steps
    # 1000/750/500/250 warped, shift 5, context_noise 0); README runs inference with --use_ema.
    Family("self_forcing", "Self Forcing", _DICT, 3, "4", hints=(("self_forcing",),),
           download="gdhe17/Self-Forcing checkpoints/self_forcing_dmd.pt"),
    # tianweiy/CausVid ca21150: configs/wan_causal_dmd.yaml (steps 1000/757/522/0, the 0 dropped by
    # causvid/models/wan/causal_inference.py, warp false; its scheduler takes sigma at the nearest
    # of its shift-8 grid timesteps, asd_core.causvid), num_frame_per_block 3;
    # minimal_inference/autoregressive_inference.py reads model.pt['generator'].
    Family("causvid", "CausVid", _DICT, 3, "rest=1000,757,522;shift=1", entry="generator",
           hints=(("causvid",), ("autoregressive_checkpoint",)),
           download="tianweiy/CausVid autoregressive_checkpoint/model.pt",
           sampler_note="reference takes sigma from its shift-8 timestep grid (0.75676 for 757)"),
    # thu-ml/Causal-Forcing 1fc7bbc: configs/causal_forcing_dmd_chunkwise.yaml / _framewise.yaml
    # (num_frame_per_block 3 / 1, steps 1000/750/500/250 warped, shift 5), _framewise_2step.yaml /
    # _framewise_1step.yaml (denoising_step_list 1000,500 / 1000 after a 4-step
    # denoising_step_list_first_chunk); inference.py reads 'generator' unless --use_ema (the README
    # commands do not pass it); --i2v encodes the image as the first latent frame (frame-wise only).
    Family("causal_forcing_chunkwise", "Causal Forcing (chunk-wise, 4 steps)", _DICT, 3, "4", entry="generator",
           hints=(("causal_forcing", "chunkwise"),),
           download="zhuhz22/Causal-Forcing chunkwise/causal_forcing.pt"),
    Family("causal_forcing_framewise", "Causal Forcing (frame-wise, 4 steps)", _DICT, 1, "4", entry="generator",
           start_image=True, hints=(("causal_forcing", "framewise"),),
           download="zhuhz22/Causal-Forcing framewise/causal_forcing.pt"),
    Family("causal_forcing_framewise_2step", "Causal Forcing++ (frame-wise, 2 steps)", _DICT, 1, "2*",
           entry="generator", start_image=True, hints=(("causal_forcing", "framewise_2step"), ("framewise_2step",)),
           download="zhuhz22/Causal-Forcing causal-forcing++/framewise-2step.pt"),
    Family("causal_forcing_framewise_1step", "Causal Forcing++ (frame-wise, 1 step)", _DICT, 1, "1*",
           entry="generator", start_image=True, hints=(("causal_forcing", "framewise_1step"), ("framewise_1step",)),
           download="zhuhz22/Causal-Forcing causal-forcing++/framewise-1step.pt"),
    # thu-ml/Causal-Forcing 1fc7bbc: long_video/configs/rolling_forcing_dmd.yaml (Rolling Forcing's
    # trainer on Causal Forcing: num_frame_per_block 3, 4 steps, num_training_frames 27) and
    # long_video/wan/modules/causal_model.py (first block kept as sink, attention over 21 frames).
    Family("causal_forcing_longvideo", "Causal Forcing long video (Rolling Forcing)", _DICT, 3, "4",
           entry="generator_ema", sink_frames=3, max_cache_frames=21, trained_frames=27,
           hints=(("longvideo",),), download="zhuhz22/Causal-Forcing chunkwise/longvideo.pt",
           sampler_note="reference denoises a rolling window of blocks at staggered noise levels"),
    # NVlabs/LongLive 294de2d (Wan2.1 LongLive-1.3B; HEAD is LongLive 2 on Wan2.2-5B):
    # configs/longlive_inference.yaml and longlive_train_long.yaml (num_frame_per_block 3,
    # local_attn_size 12, sink_size 3, 4 steps warped, shift 5, context_noise 0, use_ema false,
    # generator_ckpt longlive_base.pt + lora_ckpt lora.pt, adapter rank 256 alpha 256);
    # utils/lora_utils.py: peft LoraConfig on every nn.Linear inside CausalWanAttentionBlock;
    # the LoRA file holds get_peft_model_state_dict keys, under 'generator_lora' or bare.
    Family("longlive", "LongLive", _DICT, 3, "4", entry="generator", sink_frames=3, max_cache_frames=12,
           lora_rank=256, lora_alpha=256, hints=(("longlive",),),
           download="Efficient-Large-Model/LongLive-1.3B models/longlive_base.pt + models/lora.pt"),
    # TencentARC/RollingForcing a1477d0: configs/rolling_forcing_dmd.yaml (num_frame_per_block 3,
    # steps 1000/800/600/400/200 warped, shift 5), wan/modules/causal_model.py (sink = the first
    # block, attention over at most 21 frames), pipeline/rolling_forcing_inference.py; README --use_ema.
    Family("rolling_forcing", "Rolling Forcing", _DICT, 3, "5", sink_frames=3, max_cache_frames=21,
           trained_frames=27, hints=(("rolling_forcing",), ("rollingforcing",)),
           download="TencentARC/RollingForcing checkpoints/rolling_forcing_dmd.pt",
           sampler_note="reference denoises a rolling window of blocks at staggered noise levels"),
    # Reward Forcing, the authors' commits 4317f5a in the YepicAI/Reward-Forcing fork:
    # configs/reward_forcing.yaml (num_frame_per_block 3, local_attn_size 9, sink_size 3, 4 steps
    # warped, shift 5); inference.py loads the file itself as the generator state dict (bare);
    # wan/modules/causal_model.py folds evicted frames into the sink (EMA, alpha 0.999).
    Family("reward_forcing", "Reward Forcing", (BARE_GENERATOR, TRAINING_DICT, COMFYUI_CAUSAL), 3, "4",
           entry=None, sink_frames=3, max_cache_frames=9, hints=(("rewardforcing",), ("reward_forcing",)),
           download="JaydenLu666/Reward-Forcing-T2V-1.3B rewardforcing.pt",
           sampler_note="reference updates the sink frames by an EMA (0.999) of the evicted frames"),
    # SOTAMak1r/Infinite-Forcing b8feaf5: configs/self_forcing_dmd_vsink1.yaml (num_frame_per_block
    # 3, local_attn_size 6, sink_size 1, 4 steps warped, shift 5); README --use_ema;
    # wan/modules/causal_model.py caches keys before RoPE and applies RoPE after reading the cache.
    Family("infinite_forcing", "Infinite Forcing (V-sink)", _DICT, 3, "4", sink_frames=1, max_cache_frames=6,
           hints=(("infinite_forcing",), ("infiniteforcing",)),
           download="SOTAMak1r/Infinite-Forcing",
           sampler_note="reference caches keys before RoPE and re-applies RoPE at cache positions"),
    # Aurora-edu/One-Forcing ca345b3: config.yaml (frame-wise, num_frame_per_block 1) and
    # chunkwise_config.yaml (3), shift 5; scripts/infer.sh sets denoising_step_list [1000] and
    # first_frame_denoising_step_list [1000, 750, 500, 250], both warped (our "1*"), and reads
    # 'generator' unless --use_ema (default off).
    Family("one_forcing", "One-Forcing (frame-wise, 1 step)", _DICT, 1, "1*", entry="generator",
           hints=(("one_forcing",), ("oneforcing",)),
           download="JiaqiFeng/OneForcing checkpoints/one_forcing.pt"),
    Family("one_forcing_chunkwise", "One-Forcing (chunk-wise, 1 step)", _DICT, 3, "1*", entry="generator",
           hints=(("one_forcing", "chunkwise"), ("oneforcing", "chunkwise"))),
    # ComfyUI's own causal Wan: comfyanonymous/ComfyUI comfy/ldm/wan/ar_model.py a41ffd2 (same
    # names as WanModel), comfy/ldm/wan/ar_convert.py 45fcc30 (reads Causal Forcing's
    # generator_ema/generator, `model.`-prefixed or bare Wan keys), comfy_extras/nodes_ar_video.py
    # 34b5329 (SamplerARVideo: num_frame_per_block default 1, one schedule for every block,
    # whole-video cache). Repackaged files carry metadata config {"transformer": {"causal_ar": true}}.
    Family("comfyui_causal", "ComfyUI repackaged causal Wan (Causal Forcing frame-wise)", (COMFYUI_CAUSAL,), 1,
           "4", entry=None, start_image=True),
    # Ours (asd.format metadata): the file records its config and plan; a whole-video cache.
    Family("asd", "comfyui-asd", (ASD,), 3, "1*", entry=None),
)
BY_NAME = {family.name: family for family in FAMILIES}
AUTO = "auto"
NAMES = (AUTO, *BY_NAME)  # the loader node's `family` combo
FALLBACK = {TRAINING_DICT: "self_forcing", BARE_GENERATOR: "reward_forcing", COMFYUI_CAUSAL: "comfyui_causal",
            ASD: "asd", PLAIN: None}


@dataclass(frozen=True)
class Recognition:
    family: Family | None  # None: plain Wan weights with nothing to tell a family by
    packaging: str
    basis: str  # how it was decided: "family=", "metadata", "file name", "packaging", "LoRA"

    def describe(self) -> str:
        if self.family is None:
            return "no causal family recognised (plain Wan2.1 weights): pass family= to pick its settings"
        return f"{self.family.describe()} (by {self.basis})"


def packaging_of(raw: Mapping, metadata: Mapping[str, str]) -> str:
    """How a loaded file is packaged, from its entries, key names and metadata alone."""
    if any(isinstance(raw.get(name), Mapping) for name in SELF_FORCING_ENTRIES):
        return TRAINING_DICT
    if isinstance(raw.get("generator_lora"), Mapping) or any(m in str(k) for k in raw for m in LORA_MARKERS):
        return LORA
    if "asd.format" in metadata:
        return ASD
    if causal_ar_metadata(metadata):
        return COMFYUI_CAUSAL
    keys = [str(k) for k, v in raw.items() if isinstance(v, torch.Tensor)]
    if keys and all(k.startswith("model.") and not k.startswith(COMFYUI_PREFIX) for k in keys):
        return BARE_GENERATOR
    return PLAIN


def causal_ar_metadata(metadata: Mapping[str, str]) -> dict | None:
    """ComfyUI's causal marker: metadata `config` = {"transformer": {"causal_ar": true, ...}}."""
    try:
        transformer = json.loads(metadata.get("config", "{}")).get("transformer", {})
    except (ValueError, AttributeError):
        return None
    return transformer if isinstance(transformer, dict) and transformer.get("causal_ar") else None


def recognise(raw: Mapping, metadata: Mapping[str, str], path: str | Path, *, family: str | None = None,
              lora: bool = False) -> Recognition:
    """Name the family of a loaded file; raise ValueError (one line) for a mismatch."""
    packaging = packaging_of(raw, metadata)
    name = Path(path).name
    if packaging == LORA:
        raise ValueError(f"{name} is a LoRA adapter (lora_A/lora_B weights), not a transformer: load the base "
                         "generator as the model file and pass this file as the LoRA (lora_file=, --lora)")
    if family not in (None, "", AUTO):
        chosen = family_by_name(family)
        _check_explicit(chosen, packaging, name, lora)
        return Recognition(chosen, packaging, "family=")
    if lora:
        chosen = BY_NAME["longlive"]
        _check_explicit(chosen, packaging, name, lora)
        return Recognition(chosen, packaging, "LoRA")
    if packaging == ASD:
        return Recognition(BY_NAME["asd"], packaging, "metadata")
    # The file name and its two folders (e.g. a Hub download's repo--name/framewise/causal_forcing.pt):
    # higher folders (where ComfyUI or the user's home lives) say nothing about the release.
    hinted = _by_hints("/".join(Path(path).parts[-3:]), packaging)
    if hinted is not None:
        if hinted.lora_rank is not None and packaging == TRAINING_DICT:
            raise ValueError(f"{name} looks like {hinted.title}'s base generator, released with a LoRA: pass the "
                             "LoRA file too (lora_file=, --lora), or family=self_forcing to load the base alone")
        return Recognition(hinted, packaging, "file name")
    fallback = FALLBACK[packaging]
    basis = "metadata" if packaging == COMFYUI_CAUSAL else "packaging"
    return Recognition(BY_NAME[fallback] if fallback else None, packaging, basis)


def family_by_name(name: str) -> Family:
    if name not in BY_NAME:
        raise ValueError(f"unknown checkpoint family {name!r}; known: {', '.join(NAMES)}")
    return BY_NAME[name]


def _check_explicit(chosen: Family, packaging: str, name: str, lora: bool) -> None:
    if lora and chosen.lora_rank is None:
        raise ValueError(f"family {chosen.name!r} releases no LoRA, but a LoRA file was given: drop the LoRA, "
                         "or pick a LoRA-on-base family (longlive)")
    if chosen.lora_rank is not None and not lora and packaging == TRAINING_DICT:
        raise ValueError(f"{name}: {chosen.title} is released as a base generator plus a LoRA; pass the LoRA file "
                         "too (lora_file=, --lora), e.g. models/lora.pt next to longlive_base.pt")
    if packaging in (ASD, PLAIN):
        return  # files that carry no family evidence fit any family the user names
    if packaging not in chosen.packagings:
        raise ValueError(f"{name} is packaged as {packaging.replace('_', ' ')}, but {chosen.title} files are "
                         f"{' or '.join(p.replace('_', ' ') for p in chosen.packagings)}: pick the family that "
                         f"released this file (family=auto recognises it), or the file of {chosen.title}")


def _by_hints(path: str, packaging: str) -> Family | None:
    """The family whose file-name hint matches most specifically (most hinted characters)."""
    text = path.lower().replace("-", "_").replace("+", "")
    best, best_score = None, 0
    for family in FAMILIES:
        if packaging not in family.packagings:
            continue
        for hint in family.hints:
            score = sum(len(part) for part in hint) if all(part in text for part in hint) else 0
            if score > best_score:
                best, best_score = family, score
    return best


def chunk_frames_in_metadata(metadata: Mapping[str, str]) -> int | None:
    """ComfyUI's causal files may name their block size (`num_frame_per_block`)."""
    transformer = causal_ar_metadata(metadata) or {}
    frames = transformer.get("num_frame_per_block")
    return int(frames) if frames else None
