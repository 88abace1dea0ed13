"""Record reference outputs of LongLive's own causal model and inference pipelines (Wan2.1 1.3B version).

Usage (from the repo root, any venv with torch, diffusers, einops and safetensors):

    python research/reference/record_longlive.py --reference /tmp/longlive

`--reference` is a checkout of https://github.com/NVlabs/LongLive at REFERENCE_COMMIT below, the
last commit of LongLive 1.0 (Wan2.1-T2V-1.3B); the next commit ("LongLive 2.0") moved the repository
to Wan2.2-5B. The script refuses another commit unless `--any-commit`. Nothing of the reference
is copied into this repository: the script imports the reference's modules from the checkout and
runs them.

What it does
------------
* builds the reference's `wan.modules.causal_model.CausalWanModel` at the tiny config of
  record_self_forcing.py with LongLive's frame sink and rolling window (`local_attn_size` 6 frames,
  `sink_size` 3; LongLive ships 12 and 3), fills every parameter from the same seeded generator,
  and checks they are bitwise the weights of tests/data/reference/self_forcing_weights.safetensors
  (so no second weight file is stored);
* (a) runs `pipeline.causal_inference.CausalInferencePipeline.inference` (a plain video): batch 2,
  4 chunks of 3 latent frames of 16x8x8, the 4-step list [1000, 750, 500, 250] warped, context
  noise 0; the window fills after chunk 2 and chunks 3 and 4 are generated after evictions;
* (b) runs `pipeline.interactive_causal_inference.InteractiveCausalInferencePipeline.inference`
  (prompt switching with LongLive's KV re-cache, `global_sink` true as its interactive config
  ships) with three prompts switching at frames 6 (window full, nothing evicted yet: every cached
  frame is recomputed) and 9 (after an eviction: the sink is kept, the rest recomputed), context
  noise 0;
* (c) the same interactive pipeline with global attention (`local_attn_size` -1: the cache holds
  the whole video), 3 chunks, switches at frames 3 and 6, context noise 100;
* writes tests/data/reference/longlive_io.safetensors: inputs (contexts of the three prompts, the
  noise, the re-noise draws), outputs (the three videos) and every model call the pipelines made,
  with the reference repository, commit and settings in its metadata.

The noise is known as in record_self_forcing.py: per-chunk starting noise is the `noise` argument
(recorded), the re-noise draws (`torch.randn_like` in the step loop) are served in order from a
list drawn here (recorded). Every run consumes the same list from its start.

What is monkeypatched to run on CPU without flash-attn, CUDA or the real Wan files (nothing of
the model's or the pipelines' arithmetic is changed but the attention precision, 2):
  1. import stubs: the packages `wan`, `wan.modules`, `pipeline` and `utils` are registered
     without running their `__init__`; `wan.modules.tokenizers`, `wan.modules.t5`,
     `wan.modules.vae` (used only by the text encoder and VAE wrappers, replaced in 4) and
     `utils.memory` (calls torch.cuda at import; only the low-memory path uses it) are stand-ins.
  2. attention: `wan.modules.causal_model.attention` (self-attention through the KV cache) and
     `wan.modules.model.flash_attention` (cross-attention) are the reference's own `attention`
     with dtype=q.dtype: its SDPA fallback in float32 instead of flash-attn's bfloat16.
  3. `CausalWanModel.from_pretrained` returns the tiny model, so `WanDiffusionWrapper.__init__`
     runs unchanged otherwise.
  4. the text encoder returns the recorded contexts of the prompt asked for; the VAE returns the
     latents (the pipelines' `return_latents=True` output is what is recorded).
  5. the pipelines' `_initialize_kv_cache` / `_initialize_crossattn_cache` hard-code 12 heads x 128;
     they are replaced by the same allocation with the tiny model's heads, and the pipelines'
     `num_transformer_blocks` / `frame_seq_length` (30 / 1560 hard-coded) are set to the tiny
     model's (2 / 16 tokens per latent frame), which also sizes the attention window
     (`_set_all_modules_max_attention_size`) as it is sized at real scale.
  6. `torch.randn_like` (once per re-noise step) pops from the recorded list.
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
from record_self_forcing import TINY, WEIGHT_SEED, randomize

REFERENCE_REPO = "https://github.com/NVlabs/LongLive"
REFERENCE_COMMIT = "2462895575c579617af5089c9a05c7b500dc0036"

INPUT_SEED = 2202
BATCH = 2
CONTEXT_LENGTHS = ((12, 20), (7, 16), (20, 9))  # per prompt: sample 0's and sample 1's token counts
CHUNK_FRAMES = 3
NUM_CHUNKS = 4
LATENT = (16, 8, 8)  # channels, height, width
DENOISING_STEP_LIST = [1000, 750, 500, 250]
TIMESTEP_SHIFT = 5.0
LOCAL_ATTN_SIZE = 6
SINK_SIZE = 3
CROSS_CACHE_TOKENS = 512
RUNS = {  # name: (local_attn_size, chunks, switch frames, context noise)
    "rolling_video": (LOCAL_ATTN_SIZE, NUM_CHUNKS, None, 0),
    "rolling_switch": (LOCAL_ATTN_SIZE, NUM_CHUNKS, [6, 9], 0),
    "global_switch": (-1, 3, [3, 6], 100),
}


def import_reference(root: Path):
    """Import the reference's model, wrapper and pipeline modules without their package inits."""
    root = root.resolve()
    sys.path.insert(0, str(root))
    for name, folder in (("wan", root / "wan"), ("wan.modules", root / "wan" / "modules"),
                         ("pipeline", root / "pipeline"), ("utils", root / "utils")):
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package
    for name, attribute in (("wan.modules.tokenizers", "HuggingfaceTokenizer"), ("wan.modules.t5", "umt5_xxl"),
                            ("wan.modules.vae", "_video_vae")):
        stand_in = types.ModuleType(name)
        setattr(stand_in, attribute, None)
        sys.modules[name] = stand_in
    memory = types.ModuleType("utils.memory")
    memory.gpu = memory.cpu = torch.device("cpu")
    memory.get_cuda_free_memory_gb = memory.DynamicSwapInstaller = memory.log_gpu_memory = None
    memory.move_model_to_device_with_memory_preservation = None
    sys.modules["utils.memory"] = memory

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
    plain = importlib.import_module("pipeline.causal_inference")
    interactive = importlib.import_module("pipeline.interactive_causal_inference")
    return causal_module, wrapper_module, plain.CausalInferencePipeline, interactive.InteractiveCausalInferencePipeline


def checkout_commit(root: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True, capture_output=True,
                              text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="checkout of the LongLive repository")
    data = Path(__file__).resolve().parents[2] / "tests" / "data" / "reference"
    parser.add_argument("--out", type=Path, default=data)
    parser.add_argument("--any-commit", action="store_true", help="run even if the checkout is another commit")
    args = parser.parse_args()

    commit = checkout_commit(args.reference)
    if commit != REFERENCE_COMMIT and not args.any_commit:
        sys.exit(f"{args.reference} is at {commit}, this script was written against {REFERENCE_COMMIT}; "
                 "check out that commit or pass --any-commit")
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    causal_module, wrapper_module, plain_pipeline, interactive_pipeline = import_reference(args.reference)
    from safetensors.torch import load_file, save_file

    # --- the weights: Self Forcing's recording's, regenerated and checked bitwise ---
    base = causal_module.CausalWanModel(**TINY).eval()
    randomize(base, WEIGHT_SEED)
    stored = load_file(str(data / "self_forcing_weights.safetensors"))
    state = {f"model.{k}": v for k, v in base.state_dict().items()}
    if state.keys() != stored.keys() or any(not torch.equal(state[k], stored[k].float()) for k in state):
        sys.exit("the regenerated weights differ from self_forcing_weights.safetensors; re-record it first")

    # --- inputs ---
    inputs = torch.Generator().manual_seed(INPUT_SEED)
    channels, height, width = LATENT
    prompts = [[torch.randn(length, TINY["text_dim"], generator=inputs) for length in lengths]
               for lengths in CONTEXT_LENGTHS]
    frames = CHUNK_FRAMES * NUM_CHUNKS
    noise = torch.randn(BATCH, frames, channels, height, width, generator=inputs).bfloat16().float()
    renoise = torch.randn(NUM_CHUNKS * (len(DENOISING_STEP_LIST) - 1), BATCH, CHUNK_FRAMES, channels, height, width,
                          generator=inputs).bfloat16().float()

    class TextEncoderStandIn(torch.nn.Module):  # patch 4: prompt "p<i>" -> the recorded contexts of prompt i
        def forward(self, text_prompts):
            return {"prompt_embeds": prompts[int(text_prompts[0][1:])]}

    class VAEStandIn(torch.nn.Module):  # patch 4
        def decode_to_pixel(self, latent, use_cache=False):
            return latent

    tokens_per_frame = (height // 2) * (width // 2)
    heads, head_dim = TINY["num_heads"], TINY["dim"] // TINY["num_heads"]

    def make_pipeline(local_attn_size, switching, context_noise):
        model = causal_module.CausalWanModel(**{**TINY, "local_attn_size": local_attn_size, "sink_size": SINK_SIZE})
        model.load_state_dict(base.state_dict())
        causal_module.CausalWanModel.from_pretrained = classmethod(lambda cls, *a, _m=model, **kw: _m.eval())  # 3
        generator = wrapper_module.WanDiffusionWrapper(timestep_shift=TIMESTEP_SHIFT, is_causal=True,
                                                       local_attn_size=local_attn_size, sink_size=SINK_SIZE)
        config = types.SimpleNamespace(
            denoising_step_list=DENOISING_STEP_LIST, warp_denoising_step=True, num_frame_per_block=CHUNK_FRAMES,
            context_noise=context_noise, global_sink=True,
            model_kwargs=types.SimpleNamespace(local_attn_size=local_attn_size, sink_size=SINK_SIZE,
                                               timestep_shift=TIMESTEP_SHIFT),
        )
        kind = interactive_pipeline if switching else plain_pipeline
        pipe = kind(config, device="cpu", generator=generator, text_encoder=TextEncoderStandIn(), vae=VAEStandIn())
        pipe.num_transformer_blocks, pipe.frame_seq_length = TINY["num_layers"], tokens_per_frame  # patch 5

        def kv_cache(batch_size, dtype, device, kv_cache_size_override=None):
            pipe.kv_cache1 = [
                {"k": torch.zeros(batch_size, kv_cache_size_override, heads, head_dim, dtype=dtype),
                 "v": torch.zeros(batch_size, kv_cache_size_override, heads, head_dim, dtype=dtype),
                 "global_end_index": torch.tensor([0]), "local_end_index": torch.tensor([0])}
                for _ in range(TINY["num_layers"])]

        def cross_cache(batch_size, dtype, device):
            pipe.crossattn_cache = [
                {"k": torch.zeros(batch_size, CROSS_CACHE_TOKENS, heads, head_dim, dtype=dtype),
                 "v": torch.zeros(batch_size, CROSS_CACHE_TOKENS, heads, head_dim, dtype=dtype), "is_init": False}
                for _ in range(TINY["num_layers"])]

        pipe._initialize_kv_cache, pipe._initialize_crossattn_cache = kv_cache, cross_cache
        return pipe

    def run(name):
        local_attn_size, chunks, switches, context_noise = RUNS[name]
        pipe = make_pipeline(local_attn_size, switches is not None, context_noise)
        calls = []  # (timestep, first frame, frames) of every model call, in order

        wrapped_forward = pipe.generator.forward

        def logging_forward(*a, **kw):
            x = kw["noisy_image_or_video"]
            calls.append((float(kw["timestep"].flatten()[0]), int(kw["current_start"]) // tokens_per_frame,
                          x.shape[1]))
            return wrapped_forward(*a, **kw)

        pending = list(renoise[: chunks * (len(DENOISING_STEP_LIST) - 1)].flatten(1, 2).unbind(0))

        def recorded_randn_like(tensor, *a, **kw):  # patch 6
            draw = pending.pop(0)
            if draw.shape != tensor.shape:
                raise RuntimeError(f"pipeline asked for noise {tuple(tensor.shape)}, recorded {tuple(draw.shape)}")
            return draw.to(tensor.dtype).clone()

        pipe.generator.forward = logging_forward
        real_randn_like = torch.randn_like
        torch.randn_like = recorded_randn_like
        video_noise = noise[:, : chunks * CHUNK_FRAMES].clone()
        try:
            if switches is None:
                _, latents = pipe.inference(noise=video_noise, text_prompts=["p0"] * BATCH, return_latents=True)
            else:
                _, latents = pipe.inference(noise=video_noise, text_prompts_list=[[f"p{i}"] * BATCH for i in range(3)],
                                            switch_frame_indices=switches, return_latents=True)
        finally:
            torch.randn_like = real_randn_like
        if pending:
            raise RuntimeError(f"{len(pending)} recorded noise draws were not consumed")
        print(f"{name}: latents {tuple(latents.shape)}, max |x| {latents.abs().max():.4f}, {len(calls)} model calls")
        return latents.clone(), calls

    tensors, results = {}, {}
    for name in RUNS:
        results[name] = run(name)
        tensors[name] = results[name][0].contiguous()
        tensors[f"{name}_calls"] = torch.tensor(results[name][1], dtype=torch.float64)
    # the window changes nothing before it fills, the switch nothing before it
    window_frames = LOCAL_ATTN_SIZE
    if not torch.equal(tensors["rolling_switch"][:, :6], tensors["rolling_video"][:, :6]):
        raise RuntimeError("the switch at frame 6 changed earlier frames")

    args.out.mkdir(parents=True, exist_ok=True)
    padded = {}
    for index, contexts in enumerate(prompts):
        padded[f"context_{index}"] = torch.zeros(BATCH, max(c.shape[0] for c in contexts), TINY["text_dim"])
        for sample, context in enumerate(contexts):
            padded[f"context_{index}"][sample, : context.shape[0]] = context
    tensors.update(padded)
    tensors.update({
        "context_lengths": torch.tensor(CONTEXT_LENGTHS),
        "noise": noise.bfloat16(),  # (B, F, C, H, W): chunk k starts from noise[:, 3k:3k+3]
        "renoise": renoise.bfloat16(),  # (draws, B, 3, C, H, W): draw j = chunk j//3, after step j%3
    })
    metadata = {
        "reference.repo": REFERENCE_REPO,
        "reference.commit": commit or "unknown",
        "reference.model_config": json.dumps(TINY),
        "recorded_by": "research/reference/record_longlive.py",
        "weights": "self_forcing_weights.safetensors (regenerated from its seed and checked bitwise)",
        "input_seed": str(INPUT_SEED),
        "timestep_shift": str(TIMESTEP_SHIFT),
        "denoising_step_list_before_warp": json.dumps(DENOISING_STEP_LIST),
        "runs": json.dumps({name: {"local_attn_size": w, "sink_size": SINK_SIZE, "chunks": c, "switch_frames": s,
                                   "context_noise": n, "global_sink": True}
                            for name, (w, c, s, n) in RUNS.items()}),
        "window_frames": str(window_frames),
        "notes": "<run>: latents (B, F, C, H, W); <run>_calls: (timestep, first frame, frames) of every model "
                 "call in order (the pipelines also fill the cache after the last chunk); context_<i>: prompt i, "
                 "sample s is context_i[s, :context_lengths[i][s]]",
    }
    save_file(tensors, str(args.out / "longlive_io.safetensors"), metadata=metadata)
    print(f"wrote {args.out / 'longlive_io.safetensors'} ({(args.out / 'longlive_io.safetensors').stat().st_size} bytes)")


if __name__ == "__main__":
    main()
