"""Record reference outputs of Reward Forcing's own causal model (EMA-Sink) and inference pipeline.

Usage (from the repo root, any venv with torch, diffusers, einops and safetensors):

    python research/reference/record_reward_forcing.py --reference /tmp/reward-forcing

`--reference` is a git checkout of Reward Forcing (https://github.com/JaydenLu666/Reward-Forcing;
the snapshot read here is the fork https://github.com/YepicAI/Reward-Forcing, whose history holds
the authors' commits up to REFERENCE_COMMIT and adds only a Dockerfile and a CI file after it).
The script refuses another commit unless `--any-commit`. Nothing of the reference is copied into
this repository: the script imports the reference's modules from the checkout and runs them.

Reward Forcing's inference pipeline (`pipeline/causal_inference.py`) is Self Forcing's, only the
checkpoint paths differ; its `CausalWanSelfAttention` differs: keys are cached before RoPE, the
sink plus the window are rotated at positions 0, 1, ... on every pass, and an evicted chunk is
blended into the sink (alpha * sink + (1 - alpha) * evicted, alpha = `compression_alpha`).

What it does
------------
* builds the reference's `CausalWanModel` at the tiny config of `record_self_forcing.py` with the
  reference's inference window (configs/reward_forcing.yaml: local_attn_size 9 frames, sink_size
  3) and loads tests/data/reference/self_forcing_weights.safetensors (the same architecture);
* runs the reference's `CausalInferencePipeline.inference` on CPU in float32 with the patches of
  `record_self_forcing.py` (it reuses its `import_reference`): batch 2 (12- and 20-token contexts),
  5 chunks of 3 latent frames of 16x4x4 (chunks 3 and 4 evict one chunk each into the sink), the
  4-step list warped, context_noise 0; once with the reference's alpha 0.999 and once with
  alpha 0.5 (the reference's attribute set on every layer: a sink that visibly moves);
* writes tests/data/reference/reward_forcing_io.safetensors.

The noise is recorded as in `record_self_forcing.py`: `noise` (each chunk's start) and `renoise`
(the pipeline's `torch.randn_like` draws, served in order).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch
from record_self_forcing import TINY, checkout_commit, import_reference

REFERENCE_REPO = "https://github.com/JaydenLu666/Reward-Forcing (read from the fork YepicAI/Reward-Forcing)"
REFERENCE_COMMIT = "4317f5a0d29d1cee6a0f2e80ed5f5724bee97c66"
DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "reference"
WEIGHTS = DATA / "self_forcing_weights.safetensors"

INPUT_SEED = 2301
BATCH = 2
CONTEXT_LENGTHS = (12, 20)
CHUNK_FRAMES = 3
NUM_CHUNKS = 5
LATENT = (16, 4, 4)
DENOISING_STEP_LIST = [1000, 750, 500, 250]
TIMESTEP_SHIFT = 5.0
WINDOW_FRAMES = 9  # configs/reward_forcing.yaml model_kwargs.local_attn_size
SINK_FRAMES = 3  # configs/reward_forcing.yaml model_kwargs.sink_size
ALPHAS = (0.999, 0.5)  # the reference's compression_alpha, and one that moves the sink visibly
CROSS_CACHE_TOKENS = 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="checkout of the Reward Forcing repository")
    parser.add_argument("--out", type=Path, default=DATA)
    parser.add_argument("--any-commit", action="store_true", help="run even if the checkout is another commit")
    args = parser.parse_args()

    commit = checkout_commit(args.reference)
    if commit != REFERENCE_COMMIT and not args.any_commit:
        sys.exit(f"{args.reference} is at {commit}, this script was written against {REFERENCE_COMMIT}; "
                 "check out that commit or pass --any-commit")
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    causal_module, wrapper_module, pipeline_module = import_reference(args.reference)
    from safetensors.torch import load_file, save_file

    config = {**TINY, "local_attn_size": WINDOW_FRAMES, "sink_size": SINK_FRAMES}
    model = causal_module.CausalWanModel(**config).eval()
    causal_module.CausalWanModel.from_pretrained = classmethod(lambda cls, *a, **kw: model)
    generator = wrapper_module.WanDiffusionWrapper("(unused: from_pretrained is patched)", timestep_shift=TIMESTEP_SHIFT,
                                                   is_causal=True, local_attn_size=WINDOW_FRAMES, sink_size=SINK_FRAMES)
    generator.load_state_dict({k: v.float() for k, v in load_file(str(WEIGHTS)).items()})

    channels, height, width = LATENT
    tokens_per_frame = (height // 2) * (width // 2)
    for block in model.blocks:  # max_attention_size assumes 1560 tokens per frame
        block.self_attn.max_attention_size = WINDOW_FRAMES * tokens_per_frame

    inputs = torch.Generator().manual_seed(INPUT_SEED)
    frames = CHUNK_FRAMES * NUM_CHUNKS
    contexts = [torch.randn(length, TINY["text_dim"], generator=inputs) for length in CONTEXT_LENGTHS]
    noise = torch.randn(BATCH, frames, channels, height, width, generator=inputs).bfloat16().float()
    draws = NUM_CHUNKS * (len(DENOISING_STEP_LIST) - 1)
    renoise = torch.randn(draws, BATCH, CHUNK_FRAMES, channels, height, width, generator=inputs).bfloat16().float()

    class TextEncoderStandIn(torch.nn.Module):
        def forward(self, text_prompts):
            return {"prompt_embeds": contexts}

    class VAEStandIn(torch.nn.Module):
        def decode_to_pixel(self, latent, use_cache=False):
            return latent

    heads, head_dim = TINY["num_heads"], TINY["dim"] // TINY["num_heads"]
    pipe_config = types.SimpleNamespace(denoising_step_list=DENOISING_STEP_LIST, warp_denoising_step=True,
                                        num_frame_per_block=CHUNK_FRAMES, independent_first_frame=False,
                                        context_noise=0, checkpoint_path="(unused)")
    pipe = pipeline_module.CausalInferencePipeline(pipe_config, device="cpu", generator=generator,
                                                   text_encoder=TextEncoderStandIn(), vae=VAEStandIn())
    pipe.num_transformer_blocks, pipe.frame_seq_length = TINY["num_layers"], tokens_per_frame
    videos = {}
    for alpha in ALPHAS:
        for block in model.blocks:
            block.self_attn.compression_alpha = alpha
        pipe.kv_cache1 = [  # the pipeline's size for local attention: local_attn_size frames
            {"k": torch.zeros(BATCH, WINDOW_FRAMES * tokens_per_frame, heads, head_dim),
             "v": torch.zeros(BATCH, WINDOW_FRAMES * tokens_per_frame, heads, head_dim),
             "global_end_index": torch.tensor([0]), "local_end_index": torch.tensor([0])}
            for _ in range(TINY["num_layers"])
        ]
        pipe.crossattn_cache = [
            {"k": torch.zeros(BATCH, CROSS_CACHE_TOKENS, heads, head_dim),
             "v": torch.zeros(BATCH, CROSS_CACHE_TOKENS, heads, head_dim), "is_init": False}
            for _ in range(TINY["num_layers"])
        ]
        pending = list(renoise.flatten(1, 2).unbind(0))

        def recorded_randn_like(tensor, *a, pending=pending, **kw):
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
        videos[alpha] = latents.clone()
        print(f"alpha={alpha}: latents {tuple(latents.shape)}, max |x| {latents.abs().max():.4f}")

    padded = torch.zeros(BATCH, max(CONTEXT_LENGTHS), TINY["text_dim"])
    for index, context in enumerate(contexts):
        padded[index, : context.shape[0]] = context
    tensors = {
        "context": padded, "context_lengths": torch.tensor(CONTEXT_LENGTHS),
        "noise": noise.bfloat16(), "renoise": renoise.bfloat16(),
        "denoising_step_list": pipe.denoising_step_list.float(),
    }
    for alpha in ALPHAS:
        tensors[f"video_alpha_{alpha}"] = videos[alpha].contiguous()
    metadata = {
        "reference.repo": REFERENCE_REPO,
        "reference.commit": commit or "unknown",
        "reference.model_config": json.dumps(config),
        "recorded_by": "research/reference/record_reward_forcing.py",
        "weights": "tests/data/reference/self_forcing_weights.safetensors",
        "input_seed": str(INPUT_SEED),
        "timestep_shift": str(TIMESTEP_SHIFT),
        "window_frames": str(WINDOW_FRAMES),
        "sink_frames": str(SINK_FRAMES),
        "alphas": json.dumps(list(ALPHAS)),
        "context_noise": "0",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "reward_forcing_io.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
