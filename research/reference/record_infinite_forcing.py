"""Record reference outputs of Infinite Forcing's own causal model (V-sink) and inference pipeline.

Usage (from the repo root, any venv with torch, diffusers, einops and safetensors):

    python research/reference/record_infinite_forcing.py --reference /tmp/infinite-forcing

`--reference` is a git checkout of https://github.com/SOTAMak1r/Infinite-Forcing. The script
refuses another commit than REFERENCE_COMMIT unless `--any-commit`. Nothing of the reference is
copied into this repository: the script imports the reference's modules from the checkout and
runs them.

Infinite Forcing's inference pipeline (`pipeline/causal_inference.py`) is Self Forcing's (one
debug print removed); its `CausalWanSelfAttention` caches keys before RoPE and, on every pass,
rotates the sink frames and the rest of the window at positions 0, 1, ... and the query just
after them. Its branch that attends to one sink frame drawn with Python's `random` (taken when
`sink_size` > 1 and more than `local_attn_size` frames are cached) is never reached in inference:
the pipeline sizes the cache to `local_attn_size` frames, so the recorded runs are deterministic
(the released config, configs/self_forcing_dmd_vsink1.yaml, has `sink_size` 1; a 3-frame sink is
recorded too).

What it does
------------
* builds the reference's `CausalWanModel` at the tiny config of `record_self_forcing.py` with the
  released inference window (local_attn_size 6 frames, sink_size 1), and once more with 9 frames
  and sink_size 3, and loads tests/data/reference/self_forcing_weights.safetensors (the same
  architecture);
* runs the reference's `CausalInferencePipeline.inference` on CPU in float32 with the patches of
  `record_self_forcing.py` (it reuses its `import_reference`): batch 2 (12- and 20-token contexts),
  5 chunks of 3 latent frames of 16x4x4 (every chunk after the window is full evicts 3 frames),
  the 4-step list warped, context_noise 0;
* writes tests/data/reference/infinite_forcing_io.safetensors.

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

REFERENCE_REPO = "https://github.com/SOTAMak1r/Infinite-Forcing"
REFERENCE_COMMIT = "b8feaf5f0c3ad96c208d9a17fee80d00a28d99cd"
DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "reference"
WEIGHTS = DATA / "self_forcing_weights.safetensors"

INPUT_SEED = 2401
BATCH = 2
CONTEXT_LENGTHS = (12, 20)
CHUNK_FRAMES = 3
NUM_CHUNKS = 5
LATENT = (16, 4, 4)
DENOISING_STEP_LIST = [1000, 750, 500, 250]
TIMESTEP_SHIFT = 5.0
# (local_attn_size, sink_size): configs/self_forcing_dmd_vsink1.yaml's model_kwargs, then a 3-frame sink
WINDOWS = ((6, 1), (9, 3))
CROSS_CACHE_TOKENS = 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="checkout of the Infinite Forcing repository")
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

    channels, height, width = LATENT
    tokens_per_frame = (height // 2) * (width // 2)
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
    weights = {k: v.float() for k, v in load_file(str(WEIGHTS)).items()}

    def run_video(window: int, sink: int) -> torch.Tensor:
        model = causal_module.CausalWanModel(**{**TINY, "local_attn_size": window, "sink_size": sink}).eval()
        causal_module.CausalWanModel.from_pretrained = classmethod(lambda cls, *a, **kw: model)
        generator = wrapper_module.WanDiffusionWrapper(timestep_shift=TIMESTEP_SHIFT, is_causal=True,
                                                       local_attn_size=window, sink_size=sink)
        generator.load_state_dict(weights)
        for block in model.blocks:  # max_attention_size assumes 1560 tokens per frame
            block.self_attn.max_attention_size = window * tokens_per_frame
        pipe_config = types.SimpleNamespace(denoising_step_list=DENOISING_STEP_LIST, warp_denoising_step=True,
                                            num_frame_per_block=CHUNK_FRAMES, independent_first_frame=False,
                                            context_noise=0)
        pipe = pipeline_module.CausalInferencePipeline(pipe_config, device="cpu", generator=generator,
                                                       text_encoder=TextEncoderStandIn(), vae=VAEStandIn())
        pipe.num_transformer_blocks, pipe.frame_seq_length = TINY["num_layers"], tokens_per_frame
        pipe.kv_cache1 = [  # the pipeline's size for local attention: local_attn_size frames
            {"k": torch.zeros(BATCH, window * tokens_per_frame, heads, head_dim),
             "v": torch.zeros(BATCH, window * tokens_per_frame, heads, head_dim),
             "global_end_index": torch.tensor([0]), "local_end_index": torch.tensor([0])}
            for _ in range(TINY["num_layers"])
        ]
        pipe.crossattn_cache = [
            {"k": torch.zeros(BATCH, CROSS_CACHE_TOKENS, heads, head_dim),
             "v": torch.zeros(BATCH, CROSS_CACHE_TOKENS, heads, head_dim), "is_init": False}
            for _ in range(TINY["num_layers"])
        ]
        pending = list(renoise.flatten(1, 2).unbind(0))

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
        print(f"window {window}, sink {sink}: latents {tuple(latents.shape)}, max |x| {latents.abs().max():.4f}")
        return latents.clone(), pipe.denoising_step_list.float()

    videos = {}
    for window, sink in WINDOWS:
        videos[window, sink], step_list = run_video(window, sink)

    padded = torch.zeros(BATCH, max(CONTEXT_LENGTHS), TINY["text_dim"])
    for index, context in enumerate(contexts):
        padded[index, : context.shape[0]] = context
    tensors = {
        "context": padded, "context_lengths": torch.tensor(CONTEXT_LENGTHS),
        "noise": noise.bfloat16(), "renoise": renoise.bfloat16(),
        "denoising_step_list": step_list,
    }
    for (window, sink), video in videos.items():
        tensors[f"video_window_{window}_sink_{sink}"] = video.contiguous()
    metadata = {
        "reference.repo": REFERENCE_REPO,
        "reference.commit": commit or "unknown",
        "reference.model_config": json.dumps(TINY),
        "recorded_by": "research/reference/record_infinite_forcing.py",
        "weights": "tests/data/reference/self_forcing_weights.safetensors",
        "input_seed": str(INPUT_SEED),
        "timestep_shift": str(TIMESTEP_SHIFT),
        "windows": json.dumps(WINDOWS),
        "context_noise": "0",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "infinite_forcing_io.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
