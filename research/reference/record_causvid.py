"""Record reference outputs of CausVid's own causal model and autoregressive inference pipeline.

Usage (from the repo root, any venv with torch, diffusers and safetensors):

    python research/reference/record_causvid.py --reference /tmp/causvid

`--reference` is a git checkout of https://github.com/tianweiy/CausVid. The script refuses
another commit than REFERENCE_COMMIT unless `--any-commit`. Nothing of the reference is copied
into this repository: the script imports the reference's modules from the checkout and runs them.

CausVid's inference (`causvid/models/wan/causal_inference.py`, run by
minimal_inference/autoregressive_inference.py with configs/wan_causal_dmd.yaml, the README's
command) is Self Forcing's chunk loop in an earlier form: per block of 3 frames the step list
[1000, 757, 522] (the config's trailing 0 dropped), NOT warped (`warp_denoising_step: false`),
re-noise with fresh noise, then one pass on the clean block at timestep 0 fills a whole-video
KV cache. Its scheduler (`flow_match.py`, shift 8, 1000 training steps) looks sigma up at the
grid timestep nearest to the one given: for the unwarped 757 and 522 that is sigma 0.75676 and
0.52174, while the model is told 757 and 522. configs/wan_causal_dmd_warp_4step_cfg2.yaml (a
later 4-step variant) warps [1000, 750, 500, 250] with shift 8; it is recorded too.

What it does
------------
* builds the reference's `CausalWanModel` at the tiny config of `record_self_forcing.py` (less
  Self Forcing's local_attn_size / sink_size, which CausVid's model does not take), wraps it in
  the reference's `CausalWanDiffusionWrapper` (its scheduler, its flow -> x0 conversion) and
  loads tests/data/reference/self_forcing_weights.safetensors (the same architecture and names);
* runs the reference's `InferencePipeline.inference` on CPU in float32: batch 1 (a 20-token
  context; with more samples the pipeline's re-noise fails: it passes `add_noise` one timestep
  per sample for the samples x frames it flattened), 3 blocks of 3 latent frames of 16x4x4,
  once per config above;
* writes tests/data/reference/causvid_io.safetensors.

Patches (nothing of the model's or the pipeline's arithmetic is changed but the attention
precision): CausVid's packages are registered without their `__init__` (they import SDXL,
transformers and every pipeline); `causvid.models` is a stand-in whose registry returns the
reference's `CausalWanDiffusionWrapper` and text-encoder / VAE stand-ins (the recorded contexts,
the latents themselves); the tokenizer, T5 and VAE modules are empty stand-ins; `attention` and
`flash_attention` are the reference's SDPA fallback in float32 (as in `record_self_forcing.py`);
`from_pretrained` returns the tiny model; the pipeline's `device="cuda"` literal and `.cuda()`
calls stay on the CPU; the KV caches are allocated with the tiny model's shapes (the pipeline
hard-codes 30 blocks of 12 heads x 128); `torch.randn_like` serves recorded draws in order.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import types
from pathlib import Path

import torch
from record_self_forcing import TINY, checkout_commit

REFERENCE_REPO = "https://github.com/tianweiy/CausVid"
REFERENCE_COMMIT = "ca2115039172dfa3a02deee1534408a09680f29f"
DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "reference"
WEIGHTS = DATA / "self_forcing_weights.safetensors"

INPUT_SEED = 2601
BATCH = 1  # the pipeline's add_noise takes one timestep per sample for B x F frames: batch 1 only
CONTEXT_LENGTHS = (20,)
CHUNK_FRAMES = 3
NUM_CHUNKS = 3
LATENT = (16, 4, 4)
CONFIGS = {  # name: (denoising_step_list, warp_denoising_step), as in configs/*.yaml
    "released": ([1000, 757, 522, 0], False),  # wan_causal_dmd.yaml
    "warp_4step": ([1000, 750, 500, 250, 0], True),  # wan_causal_dmd_warp_4step_cfg2.yaml
}
KV_CACHE_TOKENS = 32760
CROSS_CACHE_TOKENS = 512


def import_reference(root: Path, text_encoder, vae):
    """CausVid's causal model, wrapper and pipeline modules, without its package inits."""
    root = root.resolve()
    sys.path.insert(0, str(root))
    wan = root / "causvid" / "models" / "wan"
    for name, folder in (("causvid", root / "causvid"), ("causvid.models.wan", wan),
                         ("causvid.models.wan.wan_base", wan / "wan_base"),
                         ("causvid.models.wan.wan_base.modules", wan / "wan_base" / "modules")):
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package
    for name, attribute in (("tokenizers", "HuggingfaceTokenizer"), ("t5", "umt5_xxl"), ("vae", "_video_vae")):
        stand_in = types.ModuleType(f"causvid.models.wan.wan_base.modules.{name}")
        setattr(stand_in, attribute, None)
        sys.modules[stand_in.__name__] = stand_in
    registry = types.ModuleType("causvid.models")  # the real one imports SDXL and transformers
    registry.__path__ = [str(root / "causvid" / "models")]
    sys.modules["causvid.models"] = registry

    attention_module = importlib.import_module("causvid.models.wan.wan_base.modules.attention")
    model_module = importlib.import_module("causvid.models.wan.wan_base.modules.model")
    causal_module = importlib.import_module("causvid.models.wan.causal_model")
    reference_attention = attention_module.attention

    def attention_full_precision(q, k, v, *args, **kwargs):
        kwargs["dtype"] = q.dtype
        return reference_attention(q, k, v, *args, **kwargs)

    causal_module.attention = attention_full_precision
    model_module.flash_attention = attention_full_precision
    wrapper_module = importlib.import_module("causvid.models.wan.wan_wrapper")
    registry.get_diffusion_wrapper = lambda model_name: wrapper_module.CausalWanDiffusionWrapper
    registry.get_text_encoder_wrapper = lambda model_name: text_encoder
    registry.get_vae_wrapper = lambda model_name: vae
    pipeline_module = importlib.import_module("causvid.models.wan.causal_inference")
    return causal_module, model_module, pipeline_module


class CpuTorch(types.ModuleType):
    """`torch` for the pipeline module: its `device="cuda"` literal lands on the CPU."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def ones(*args, **kwargs):
        kwargs["device"] = "cpu"
        return torch.ones(*args, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="checkout of the CausVid repository")
    parser.add_argument("--out", type=Path, default=DATA)
    parser.add_argument("--any-commit", action="store_true", help="run even if the checkout is another commit")
    args = parser.parse_args()

    commit = checkout_commit(args.reference)
    if commit != REFERENCE_COMMIT and not args.any_commit:
        sys.exit(f"{args.reference} is at {commit}, this script was written against {REFERENCE_COMMIT}; "
                 "check out that commit or pass --any-commit")
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    from safetensors.torch import load_file, save_file

    channels, height, width = LATENT
    tokens_per_frame = (height // 2) * (width // 2)
    inputs = torch.Generator().manual_seed(INPUT_SEED)
    frames = CHUNK_FRAMES * NUM_CHUNKS
    contexts = [torch.randn(length, TINY["text_dim"], generator=inputs) for length in CONTEXT_LENGTHS]
    noise = torch.randn(BATCH, frames, channels, height, width, generator=inputs).bfloat16().float()
    renoise = {}
    for name, (steps, _) in CONFIGS.items():
        draws = NUM_CHUNKS * (len(steps) - 2)  # the trailing 0 is dropped; the last step draws none
        renoise[name] = torch.randn(draws, BATCH, CHUNK_FRAMES, channels, height, width,
                                    generator=inputs).bfloat16().float()

    class TextEncoderStandIn(torch.nn.Module):
        def forward(self, text_prompts):
            return {"prompt_embeds": contexts}

    class VAEStandIn(torch.nn.Module):
        def decode_to_pixel(self, latent):
            return latent

    causal_module, model_module, pipeline_module = import_reference(args.reference, TextEncoderStandIn, VAEStandIn)
    pipeline_module.torch = CpuTorch()
    config = {key: value for key, value in TINY.items() if key not in ("local_attn_size", "sink_size")}
    model = causal_module.CausalWanModel(**config).eval()
    pretrained = classmethod(lambda cls, *a, **kw: model)
    causal_module.CausalWanModel.from_pretrained = pretrained
    model_module.WanModel.from_pretrained = pretrained  # the bidirectional wrapper's __init__ runs first
    weights = {k: v.float() for k, v in load_file(str(WEIGHTS)).items()}
    heads, head_dim = TINY["num_heads"], TINY["dim"] // TINY["num_heads"]

    def run_video(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        steps, warp = CONFIGS[name]
        pipe_config = types.SimpleNamespace(model_name="causal_wan", generator_name="causal_wan",
                                            denoising_step_list=steps, warp_denoising_step=warp,
                                            num_frame_per_block=CHUNK_FRAMES)
        real_cuda = torch.Tensor.cuda
        torch.Tensor.cuda = lambda self, *a, **kw: self  # the warp's .cuda(): stay on the CPU
        try:
            pipe = pipeline_module.InferencePipeline(pipe_config, device="cpu")
        finally:
            torch.Tensor.cuda = real_cuda
        pipe.generator.load_state_dict(weights)
        pipe.num_transformer_blocks, pipe.frame_seq_length = TINY["num_layers"], tokens_per_frame
        pipe.kv_cache1 = [{"k": torch.zeros(BATCH, KV_CACHE_TOKENS, heads, head_dim),
                           "v": torch.zeros(BATCH, KV_CACHE_TOKENS, heads, head_dim)}
                          for _ in range(TINY["num_layers"])]
        pipe.crossattn_cache = [{"k": torch.zeros(BATCH, CROSS_CACHE_TOKENS, heads, head_dim),
                                 "v": torch.zeros(BATCH, CROSS_CACHE_TOKENS, heads, head_dim), "is_init": False}
                                for _ in range(TINY["num_layers"])]
        pending = list(renoise[name].flatten(1, 2).unbind(0))

        def recorded_randn_like(tensor, *a, **kw):
            draw = pending.pop(0)
            if draw.shape != tensor.shape:
                raise RuntimeError(f"pipeline asked for noise {tuple(tensor.shape)}, recorded {tuple(draw.shape)}")
            return draw.to(tensor.dtype).clone()

        real_randn_like = torch.randn_like
        torch.randn_like = recorded_randn_like
        try:
            _, latents = pipe.inference(noise=noise.clone(), text_prompts=["(recorded)"] * BATCH, return_latents=True)
        finally:
            torch.randn_like = real_randn_like
        if pending:
            raise RuntimeError(f"{len(pending)} recorded noise draws were not consumed")
        print(f"{name}: steps {[float(t) for t in pipe.denoising_step_list]}, latents {tuple(latents.shape)}, "
              f"max |x| {latents.abs().max():.4f}")
        return latents.clone(), pipe.denoising_step_list.float()

    padded = torch.zeros(BATCH, max(CONTEXT_LENGTHS), TINY["text_dim"])
    for index, context in enumerate(contexts):
        padded[index, : context.shape[0]] = context
    tensors = {"context": padded, "context_lengths": torch.tensor(CONTEXT_LENGTHS), "noise": noise.bfloat16()}
    for name in CONFIGS:
        video, step_list = run_video(name)
        tensors[f"video_{name}"] = video.contiguous()
        tensors[f"denoising_step_list_{name}"] = step_list
        tensors[f"renoise_{name}"] = renoise[name].bfloat16()
    metadata = {
        "reference.repo": REFERENCE_REPO,
        "reference.commit": commit or "unknown",
        "reference.model_config": json.dumps(TINY),
        "recorded_by": "research/reference/record_causvid.py",
        "weights": "tests/data/reference/self_forcing_weights.safetensors",
        "input_seed": str(INPUT_SEED),
        "timestep_shift": "8.0",
        "configs": json.dumps(CONFIGS),
        "context_noise": "0",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "causvid_io.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
