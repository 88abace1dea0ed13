"""Record reference outputs of Self Forcing's own causal model and inference pipeline.

Usage (from the repo root, any venv with torch, diffusers, einops and safetensors):

    python research/reference/record_self_forcing.py --reference /tmp/self-forcing

`--reference` is a checkout of https://github.com/guandeh17/Self-Forcing. This script was
written against commit REFERENCE_COMMIT below and refuses another one unless `--any-commit`.
Nothing of the reference is copied into this repository: the script imports the reference's
modules from the checkout and runs them.

What it does
------------
* builds the reference's `wan.modules.causal_model.CausalWanModel` at a tiny config
  (TINY below: 2 layers, width 64, 2 heads of 32, ffn 128, text_dim 32, freq_dim 32,
  text_len 512 as in Wan2.1), wraps it in the reference's `utils.wan_wrapper.WanDiffusionWrapper`
  (its flow-matching scheduler with shift 5.0, its flow -> x0 conversion) and fills every
  parameter with seeded random values rounded to bfloat16 (the file stores bf16, the run is
  float32 on exactly those values);
* runs the reference's `pipeline.causal_inference.CausalInferencePipeline.inference` on CPU
  in float32: batch 2 (a 12-token and a 20-token text context, each a plain [L, text_dim]
  tensor as the reference's model takes them), 3 chunks of 3 latent frames of 16x8x8, the
  4-step list [1000, 750, 500, 250] warped as the pipeline does (warp_denoising_step), once with
  context_noise=0 and once with context_noise=100;
* runs the same pipeline with a rolling cache: the same weights in a model built with
  local_attn_size=6 frames and sink_size 0 or 3 (the pipeline then sizes its cache 6 frames),
  context_noise 0; the last chunk is generated after 3 frames were evicted (only that chunk is
  stored: the first 6 frames equal the full-cache video, which the script checks);
* runs one forward of the reference model alone (its KV-cache inference path, an empty cache,
  the first chunk at t=937.5) on the same contexts;
* writes tests/data/reference/self_forcing_weights.safetensors (the wrapper's state dict,
  keys `model.*`, i.e. a Self Forcing generator in its own key layout) and
  tests/data/reference/self_forcing_io.safetensors (inputs and outputs, see `main`), both
  with the reference repository and commit in their metadata.

The noise the pipeline consumes is known: the per-chunk starting noise is the `noise`
argument (recorded), and the re-noise draws (`torch.randn_like` inside the pipeline's step
loop) are served, in order, from a list drawn here beforehand and recorded (`renoise`).
Runs are reproducible: the tensors come out bitwise equal (the files' bytes may not, since
safetensors stores the metadata entries in no fixed order).

What is monkeypatched to run on CPU without flash-attn, CUDA or the real Wan files
(nothing of the model's or the pipeline's arithmetic is changed but the attention precision, 2):
  1. import stubs: the packages `wan`, `wan.modules`, `pipeline` and `demo_utils` are
     registered without running their `__init__` (those import the VAE, T5, CLIP, torchvision
     and every pipeline); `utils` has no `__init__` and is registered so that no other `utils`
     shadows it. `wan.modules.tokenizers` (needs ftfy), `wan.modules.t5` (calls
     torch.cuda.current_device() at import), `wan.modules.vae` (all three used only by the text
     encoder and VAE wrappers, replaced in 4) and `demo_utils.memory` (calls torch.cuda at
     import) are empty stand-ins.
  2. attention: `wan.modules.causal_model.attention` (self-attention with the KV cache) is
     the reference's own `attention` called with dtype=q.dtype. Without flash-attn its
     fallback is torch SDPA but casts q/k/v to its default dtype bfloat16 (flash-attn's
     precision); float32 keeps the run exact enough for a 1e-4 comparison.
     `wan.modules.model.flash_attention` (cross-attention; asserts CUDA) is routed to the
     same fallback. Both receive no q_lens/k_lens here (the reference passes context_lens=None),
     so no masking is lost.
  3. `CausalWanModel.from_pretrained` returns the tiny model (there is no wan_models/ folder),
     so `WanDiffusionWrapper.__init__` runs unchanged otherwise.
  4. the text encoder and the VAE of the pipeline are stand-ins: the encoder returns the
     recorded contexts as `prompt_embeds`, the VAE returns the latents (we keep
     `return_latents=True` output).
  5. the pipeline's KV caches are allocated here with the tiny model's shapes (the pipeline
     hard-codes 30 blocks of 12 heads x 128); sizes as the pipeline's (32760 tokens of self-
     attention cache, 512 of cross-attention cache). `inference()` then resets them itself.
  6. `torch.randn_like` (used once per re-noise step) pops from the recorded list.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import types
from pathlib import Path

import torch

REFERENCE_REPO = "https://github.com/guandeh17/Self-Forcing"
REFERENCE_COMMIT = "33593df3e81fa3ec10239271dd2c100facac6de1"

TINY = dict(
    model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=16, dim=64, ffn_dim=128, freq_dim=32,
    text_dim=32, out_dim=16, num_heads=2, num_layers=2, local_attn_size=-1, sink_size=0, qk_norm=True,
    cross_attn_norm=True, eps=1e-6,
)
WEIGHT_SEED = 2101
INPUT_SEED = 2102
BATCH = 2
CONTEXT_LENGTHS = (12, 20)  # sample 0: 12 tokens, sample 1: 20 tokens
CHUNK_FRAMES = 3
NUM_CHUNKS = 3
LATENT = (16, 8, 8)  # channels, height, width
DENOISING_STEP_LIST = [1000, 750, 500, 250]
TIMESTEP_SHIFT = 5.0
CONTEXT_NOISES = (0, 100)
KV_CACHE_TOKENS = 32760  # the pipeline's size for global attention (local_attn_size == -1)
CROSS_CACHE_TOKENS = 512
ROLLING_FRAMES = 6  # local_attn_size of the rolling-cache runs: the last chunk evicts 3 frames
ROLLING_SINK_SIZES = (0, 3)  # sink frames kept by the rolling cache (the reference's default is 0)
FORWARD_TIMESTEP_INDEX = 1  # the single forward runs at denoising_step_list[1] (937.5 after the warp)


def import_reference(root: Path):
    """Import the reference's model, wrapper and pipeline modules without their package inits."""
    root = root.resolve()
    sys.path.insert(0, str(root))
    for name, folder in (("wan", root / "wan"), ("wan.modules", root / "wan" / "modules"),
                         ("pipeline", root / "pipeline"), ("demo_utils", root / "demo_utils"),
                         ("utils", root / "utils")):
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package
    for name, attribute in (("wan.modules.tokenizers", "HuggingfaceTokenizer"), ("wan.modules.t5", "umt5_xxl"),
                            ("wan.modules.vae", "_video_vae")):
        stand_in = types.ModuleType(name)  # only WanTextEncoder / WanVAEWrapper use them; replaced below
        setattr(stand_in, attribute, None)
        sys.modules[name] = stand_in
    memory = types.ModuleType("demo_utils.memory")
    memory.gpu = torch.device("cpu")
    memory.get_cuda_free_memory_gb = memory.DynamicSwapInstaller = None
    memory.move_model_to_device_with_memory_preservation = None
    sys.modules["demo_utils.memory"] = memory

    attention_module = importlib.import_module("wan.modules.attention")
    model_module = importlib.import_module("wan.modules.model")
    causal_module = importlib.import_module("wan.modules.causal_model")
    reference_attention = attention_module.attention

    def attention_full_precision(q, k, v, *args, **kwargs):
        kwargs["dtype"] = q.dtype
        return reference_attention(q, k, v, *args, **kwargs)

    causal_module.attention = attention_full_precision
    model_module.flash_attention = attention_full_precision
    wrapper_module = importlib.import_module("utils.wan_wrapper")
    pipeline_module = importlib.import_module("pipeline.causal_inference")
    return causal_module, wrapper_module, pipeline_module


def checkout_commit(root: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True, capture_output=True,
                              text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter from one seeded generator, in state-dict order, rounded to bf16.

    Scales keep activations O(1) through 2 blocks and make the text path matter (the
    reference's own init zeroes the head, which would make every output a constant).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("modulation"):
                value = noise / param.shape[-1] ** 0.5
            elif param.ndim >= 2:  # linear / conv weights
                value = noise / param[0].numel() ** 0.5
            elif "norm" in name:  # RMSNorm / affine LayerNorm weights and biases
                value = (1.0 if name.endswith("weight") else 0.0) + 0.1 * noise
            else:  # biases
                value = 0.1 * noise
            param.copy_(value.to(torch.bfloat16).float())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="checkout of the Self Forcing repository")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "tests" / "data" / "reference")
    parser.add_argument("--any-commit", action="store_true", help="run even if the checkout is another commit")
    args = parser.parse_args()

    commit = checkout_commit(args.reference)
    if commit != REFERENCE_COMMIT and not args.any_commit:
        sys.exit(f"{args.reference} is at {commit}, this script was written against {REFERENCE_COMMIT}; "
                 "check out that commit or pass --any-commit")
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    causal_module, wrapper_module, pipeline_module = import_reference(args.reference)

    # --- the model and its wrapper (scheduler: shift 5.0, sigma_min 0, 1000 training steps) ---
    model = causal_module.CausalWanModel(**TINY).eval()
    randomize(model, WEIGHT_SEED)
    causal_module.CausalWanModel.from_pretrained = classmethod(lambda cls, *a, **kw: model)  # patch 3
    generator = wrapper_module.WanDiffusionWrapper(timestep_shift=TIMESTEP_SHIFT, is_causal=True)

    # --- inputs ---
    inputs = torch.Generator().manual_seed(INPUT_SEED)
    channels, height, width = LATENT
    frames = CHUNK_FRAMES * NUM_CHUNKS
    contexts = [torch.randn(length, TINY["text_dim"], generator=inputs) for length in CONTEXT_LENGTHS]
    # bf16-representable noise (stored as bf16, used as float32): halves the file, same test
    noise = torch.randn(BATCH, frames, channels, height, width, generator=inputs).bfloat16().float()
    draws_per_video = NUM_CHUNKS * (len(DENOISING_STEP_LIST) - 1)
    renoise = torch.randn(draws_per_video, BATCH, CHUNK_FRAMES, channels, height, width,
                          generator=inputs).bfloat16().float()

    class TextEncoderStandIn(torch.nn.Module):  # patch 4
        def forward(self, text_prompts):
            return {"prompt_embeds": contexts}

    class VAEStandIn(torch.nn.Module):  # patch 4
        def decode_to_pixel(self, latent, use_cache=False):
            return latent

    tokens_per_frame = (height // 2) * (width // 2)
    heads, head_dim = TINY["num_heads"], TINY["dim"] // TINY["num_heads"]

    def make_pipeline(generator, local_attn_size):
        config = types.SimpleNamespace(
            denoising_step_list=DENOISING_STEP_LIST, warp_denoising_step=True, num_frame_per_block=CHUNK_FRAMES,
            independent_first_frame=False, context_noise=0,
        )
        pipe = pipeline_module.CausalInferencePipeline(config, device="cpu", generator=generator,
                                                       text_encoder=TextEncoderStandIn(), vae=VAEStandIn())
        # patch 5: caches with the tiny model's shapes, sized as the pipeline's _initialize_kv_cache
        cache_tokens = KV_CACHE_TOKENS if local_attn_size == -1 else local_attn_size * tokens_per_frame
        pipe.num_transformer_blocks = TINY["num_layers"]
        pipe.frame_seq_length = tokens_per_frame
        pipe.kv_cache1 = [
            {"k": torch.zeros(BATCH, cache_tokens, heads, head_dim), "v": torch.zeros(BATCH, cache_tokens, heads, head_dim),
             "global_end_index": torch.tensor([0]), "local_end_index": torch.tensor([0])}
            for _ in range(TINY["num_layers"])
        ]
        pipe.crossattn_cache = [
            {"k": torch.zeros(BATCH, CROSS_CACHE_TOKENS, heads, head_dim),
             "v": torch.zeros(BATCH, CROSS_CACHE_TOKENS, heads, head_dim), "is_init": False}
            for _ in range(TINY["num_layers"])
        ]
        return pipe

    def run_video(pipe, context_noise):
        """The pipeline's inference on the recorded noise; returns (latents, calls)."""
        calls = []  # (timestep, first frame, timestep dtype) of every model call, in order
        wrapped_forward = pipe.generator.forward

        def logging_forward(*a, **kw):
            calls.append((float(kw["timestep"].flatten()[0]), int(kw["current_start"]) // tokens_per_frame,
                          str(kw["timestep"].dtype)))
            return wrapped_forward(*a, **kw)

        pending = list(renoise.flatten(1, 2).unbind(0))  # each draw: [B*F, C, H, W] as the pipeline asks

        def recorded_randn_like(tensor, *a, **kw):  # patch 6
            draw = pending.pop(0)
            if draw.shape != tensor.shape:
                raise RuntimeError(f"pipeline asked for noise {tuple(tensor.shape)}, recorded {tuple(draw.shape)}")
            return draw.to(tensor.dtype).clone()

        pipe.args.context_noise = context_noise
        pipe.generator.forward = logging_forward
        real_randn_like = torch.randn_like
        torch.randn_like = recorded_randn_like
        try:
            _, latents = pipe.inference(noise=noise.clone(), text_prompts=["(recorded contexts)"] * BATCH,
                                        return_latents=True)
        finally:
            torch.randn_like = real_randn_like
            del pipe.generator.forward
        if pending:
            raise RuntimeError(f"{len(pending)} recorded noise draws were not consumed")
        print(f"context_noise={context_noise}, local_attn_size={pipe.local_attn_size}: latents {tuple(latents.shape)}, "
              f"max |x| {latents.abs().max():.4f}, {len(calls)} model calls")
        return latents.clone(), calls

    pipe = make_pipeline(generator, -1)
    videos, call_logs = {}, {}
    for context_noise in CONTEXT_NOISES:
        videos[context_noise], call_logs[context_noise] = run_video(pipe, context_noise)

    # --- one forward of the model alone (KV-cache path, empty cache, first chunk) ---
    forward_t = float(pipe.denoising_step_list[FORWARD_TIMESTEP_INDEX])
    forward_x = torch.randn(BATCH, CHUNK_FRAMES, channels, height, width, generator=inputs).bfloat16().float()
    for block_index in range(TINY["num_layers"]):
        pipe.kv_cache1[block_index]["global_end_index"].zero_()
        pipe.kv_cache1[block_index]["local_end_index"].zero_()
        pipe.crossattn_cache[block_index]["is_init"] = False
    timestep = torch.full((BATCH, CHUNK_FRAMES), forward_t)
    forward_flow, _ = generator(noisy_image_or_video=forward_x, conditional_dict={"prompt_embeds": contexts},
                                      timestep=timestep, kv_cache=pipe.kv_cache1, crossattn_cache=pipe.crossattn_cache,
                                      current_start=0)

    # --- a rolling cache: the same weights built with local_attn_size / sink_size ---
    rolling_videos = {}
    for sink in ROLLING_SINK_SIZES:
        rolling_model = causal_module.CausalWanModel(**{**TINY, "local_attn_size": ROLLING_FRAMES, "sink_size": sink})
        rolling_model.load_state_dict(model.state_dict())
        causal_module.CausalWanModel.from_pretrained = classmethod(lambda cls, *a, _model=rolling_model, **kw: _model.eval())
        rolling = wrapper_module.WanDiffusionWrapper(timestep_shift=TIMESTEP_SHIFT, is_causal=True,
                                                     local_attn_size=ROLLING_FRAMES, sink_size=sink)
        latents, _ = run_video(make_pipeline(rolling, ROLLING_FRAMES), 0)
        if not torch.equal(latents[:, :ROLLING_FRAMES], videos[0][:, :ROLLING_FRAMES]):
            raise RuntimeError("the rolling cache changed frames generated before it filled up")
        rolling_videos[sink] = latents[:, ROLLING_FRAMES:]

    # --- write ---
    args.out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    metadata = {
        "reference.repo": REFERENCE_REPO,
        "reference.commit": commit or "unknown",
        "reference.model_config": json.dumps(TINY),
        "recorded_by": "research/reference/record_self_forcing.py",
    }
    weights = {k: v.to(torch.bfloat16).contiguous() for k, v in generator.state_dict().items()}
    save_file(weights, str(args.out / "self_forcing_weights.safetensors"), metadata=metadata)

    padded = torch.zeros(BATCH, max(CONTEXT_LENGTHS), TINY["text_dim"])
    for index, context in enumerate(contexts):
        padded[index, : context.shape[0]] = context
    step_list = pipe.denoising_step_list.float()
    tensors = {
        # inputs (layout of the reference: batch, frames, channels, height, width)
        "context": padded,  # (B, 20, text_dim); sample i is context[i, :context_lengths[i]]
        "context_lengths": torch.tensor(CONTEXT_LENGTHS),
        "noise": noise.bfloat16(),  # (B, F, C, H, W): chunk k starts from noise[:, 3k:3k+3]
        "renoise": renoise.bfloat16(),  # (draws, B, 3, C, H, W): draw j = chunk j//3, after step j%3
        "denoising_step_list": step_list,  # after the pipeline's warp
        # outputs
        "forward_x": forward_x.bfloat16(),  # (B, 3, C, H, W), frames 0-2, empty cache
        "forward_t": torch.tensor([forward_t]),
        "forward_flow": forward_flow.contiguous(),  # the model's output (flow = noise - x0), (B, 3, C, H, W)
    }
    for context_noise in CONTEXT_NOISES:
        tensors[f"video_context_noise_{context_noise}"] = videos[context_noise].contiguous()
        tensors[f"calls_context_noise_{context_noise}"] = torch.tensor([[t, f] for t, f, _ in call_logs[context_noise]])
    for sink in ROLLING_SINK_SIZES:
        # frames 0-5 equal video_context_noise_0 (checked above): only the frames after the eviction
        tensors[f"rolling_sink_{sink}_last_chunk"] = rolling_videos[sink].contiguous()
    io_metadata = dict(metadata)
    io_metadata.update({
        "weight_seed": str(WEIGHT_SEED),
        "input_seed": str(INPUT_SEED),
        "timestep_shift": str(TIMESTEP_SHIFT),
        "denoising_step_list_before_warp": json.dumps(DENOISING_STEP_LIST),
        "context_noises": json.dumps(list(CONTEXT_NOISES)),
        "rolling": json.dumps({"local_attn_size": ROLLING_FRAMES, "sink_sizes": list(ROLLING_SINK_SIZES),
                               "context_noise": 0}),
        "timestep_dtypes_seen": json.dumps(sorted({d for log in call_logs.values() for _, _, d in log})),
        "notes": "calls_*: (timestep, first frame) of every model call the pipeline made, in order; the "
                 "pipeline also fills the cache after the last chunk (a call that changes no output)",
    })
    save_file(tensors, str(args.out / "self_forcing_io.safetensors"), metadata=io_metadata)
    for name in ("self_forcing_weights.safetensors", "self_forcing_io.safetensors"):
        print(f"wrote {args.out / name} ({(args.out / name).stat().st_size} bytes)")
    print("step list after the warp:", [float(t) for t in step_list])


if __name__ == "__main__":
    main()
