"""asd_core: causal Wan video generation with few-step plans (ASD, FFE, Self Forcing).

Public API (used by the ComfyUI nodes, the trainer and the command-line tools):

    model = asd_core.load_model("student.safetensors")        # any supported layout
    plan = asd_core.parse_plan("1*")                           # FFE: first chunk 4 steps, then 1
    latents = asd_core.generate_latents(model, plan=plan, context=text, num_frames=9,
                                        latent_height=8, latent_width=8, seeds=[0])

Nothing here imports ComfyUI.
"""

from .checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from .config import CausalWanConfig, tiny_config, wan21_t2v_1_3b
from .kv_cache import KVCache
from .model import CausalWanTransformer
from .sampler import PromptSwitch, SamplerProgress, SamplingCancelled, generate_latents, sample_video
from .schedule import StepPlan, ffe_plan, format_plan, parse_plan, uniform_plan

__all__ = [
    "CausalWanConfig",
    "CheckpointError",
    "CausalWanTransformer",
    "KVCache",
    "PromptSwitch",
    "SamplerProgress",
    "SamplingCancelled",
    "StepPlan",
    "ffe_plan",
    "format_plan",
    "generate_latents",
    "load_model",
    "parse_plan",
    "read_checkpoint",
    "sample_video",
    "save_checkpoint",
    "tiny_config",
    "uniform_plan",
    "wan21_t2v_1_3b",
]
