"""Record reference outputs of Causal Forcing's own inference pipeline: frame-wise T2V and I2V.

Usage (from the repo root, any venv with torch, diffusers, einops, tqdm and safetensors):

    python research/reference/record_causal_forcing.py --reference /tmp/causal-forcing

`--reference` is a checkout of https://github.com/thu-ml/Causal-Forcing. This script was
written against commit REFERENCE_COMMIT below and refuses another one unless `--any-commit`.
Nothing of the reference is copied into this repository: the script imports the reference's
modules from the checkout and runs them.

What it does
------------
* builds the reference's `wan.modules.causal_model.CausalWanModel` at the tiny config of
  record_self_forcing.py (2 layers, width 64, 2 heads of 32, text_len 512) and loads the
  weights that script recorded (tests/data/reference/self_forcing_weights.safetensors, keys
  `model.*`) into the reference's `utils.wan_wrapper.WanDiffusionWrapper` (shift 5.0): Causal
  Forcing's model is Self Forcing's (its diff is comments and a torch.compile mode), so the
  same file serves both parity tests and this family adds no weights;
* runs the reference's `pipeline.causal_inference.CausalInferencePipeline.inference` on CPU in
  float32, frame-wise (`num_frame_per_block: 1`, `independent_first_frame: false`, as every
  frame-wise config of the reference), batch 2 (a 12-token and a 20-token text context), latent
  frames of 16x8x8, with the step lists of the reference's frame-wise configs, warped as the
  pipeline does (`warp_denoising_step: true`):
    - t2v_4:    causal_forcing_dmd_framewise.yaml, [1000, 750, 500, 250], 4 frames;
    - t2v_2ffe: causal_forcing_dmd_framewise_2step.yaml (Causal Forcing++), [1000, 500] with
                `denoising_step_list_first_chunk` [1000, 750, 500, 250], 4 frames;
    - t2v_1ffe: causal_forcing_dmd_framewise_1step.yaml, [1000] with the same first chunk;
    - i2v_image: `initial_latent` of 1 frame (a start image, inference.py's `--i2v`), 3
                generated frames, the 2-step FFE lists, context_noise 100 (the start is
                still cached at timestep 0, generated frames at 100);
    - i2v_video: `initial_latent` of 2 frames (the pipeline's video extension), 2 generated
                frames, the 1-step FFE lists, context_noise 0;
* writes tests/data/reference/causal_forcing_io.safetensors: inputs, outputs and every model
  call's (timestep, first frame), with the reference repository and commit in its metadata.

The noise the pipeline consumes is known: each run's starting noise is the first frames of
the recorded `noise`, and the re-noise draws (`torch.randn_like` in the pipeline's step loop)
are served, in order, from the start of the recorded `renoise` pool. Runs are reproducible:
the tensors come out bitwise equal.

Monkeypatches: those of record_self_forcing.py (import stand-ins for the text encoder, VAE and
CUDA-only modules, float32 attention, stand-in text encoder / VAE, caches allocated at the
tiny model's shapes, recorded `torch.randn_like`), imported from it, nothing else. The
reference's pipeline also imports `tqdm` and `time` (used for its progress bar and timing only).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import types
from pathlib import Path

import torch

# the sibling script (this folder is sys.path[0] when run): the tiny config and the CPU monkeypatches
from record_self_forcing import CROSS_CACHE_TOKENS, KV_CACHE_TOKENS, TIMESTEP_SHIFT, TINY, checkout_commit, import_reference
from safetensors.torch import load_file, save_file

REFERENCE_REPO = "https://github.com/thu-ml/Causal-Forcing"
REFERENCE_COMMIT = "1fc7bbc19a503c1bce80ecef08158b20e702f386"

INPUT_SEED = 2301
BATCH = 2
CONTEXT_LENGTHS = (12, 20)
LATENT = (16, 8, 8)  # channels, height, width
NOISE_FRAMES = 4  # the longest run's generated frames
FOUR_STEPS = [1000, 750, 500, 250]
RUNS = {  # name: (step list, first-chunk step list or None, start frames, generated frames, context_noise)
    "t2v_4": (FOUR_STEPS, None, 0, 4, 0),
    "t2v_2ffe": ([1000, 500], FOUR_STEPS, 0, 4, 0),
    "t2v_1ffe": ([1000], FOUR_STEPS, 0, 4, 0),
    "i2v_image": ([1000, 500], FOUR_STEPS, 1, 3, 100),
    "i2v_video": ([1000], FOUR_STEPS, 2, 2, 0),
}


def renoise_draws(steps: list[int], first: list[int] | None, blocks: int) -> int:
    first = steps if first is None else first
    return (len(first) - 1) + (blocks - 1) * (len(steps) - 1)


def main() -> None:
    here = Path(__file__).resolve()
    data = here.parents[2] / "tests" / "data" / "reference"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="checkout of the Causal Forcing repository")
    parser.add_argument("--weights", type=Path, default=data / "self_forcing_weights.safetensors")
    parser.add_argument("--out", type=Path, default=data)
    parser.add_argument("--any-commit", action="store_true", help="run even if the checkout is another commit")
    args = parser.parse_args()

    commit = checkout_commit(args.reference)
    if commit != REFERENCE_COMMIT and not args.any_commit:
        sys.exit(f"{args.reference} is at {commit}, this script was written against {REFERENCE_COMMIT}; "
                 "check out that commit or pass --any-commit")
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    causal_module, wrapper_module, pipeline_module = import_reference(args.reference)

    # --- the model (Self Forcing's recorded tiny weights) in the reference's wrapper ---
    model = causal_module.CausalWanModel(**TINY).eval()
    causal_module.CausalWanModel.from_pretrained = classmethod(lambda cls, *a, **kw: model)
    generator = wrapper_module.WanDiffusionWrapper(timestep_shift=TIMESTEP_SHIFT, is_causal=True)
    weights = {k: v.float() for k, v in load_file(str(args.weights)).items()}
    generator.load_state_dict(weights, strict=True)
    weights_sha256 = hashlib.sha256(args.weights.read_bytes()).hexdigest()

    # --- inputs ---
    inputs = torch.Generator().manual_seed(INPUT_SEED)
    channels, height, width = LATENT
    contexts = [torch.randn(length, TINY["text_dim"], generator=inputs) for length in CONTEXT_LENGTHS]
    noise = torch.randn(BATCH, NOISE_FRAMES, channels, height, width, generator=inputs).bfloat16().float()
    pool = max(renoise_draws(steps, first, frames) for steps, first, _, frames, _ in RUNS.values())
    renoise = torch.randn(pool, BATCH, 1, channels, height, width, generator=inputs).bfloat16().float()
    start = torch.randn(BATCH, 2, channels, height, width, generator=inputs).bfloat16().float()

    class TextEncoderStandIn(torch.nn.Module):
        def forward(self, text_prompts):
            return {"prompt_embeds": contexts}

    class VAEStandIn(torch.nn.Module):
        def decode_to_pixel(self, latent, use_cache=False):
            return latent

    tokens_per_frame = (height // 2) * (width // 2)
    heads, head_dim = TINY["num_heads"], TINY["dim"] // TINY["num_heads"]

    def make_pipeline(steps, first, context_noise):
        config = types.SimpleNamespace(
            denoising_step_list=steps, denoising_step_list_first_chunk=first, warp_denoising_step=True,
            num_frame_per_block=1, independent_first_frame=False, context_noise=context_noise,
        )
        pipe = pipeline_module.CausalInferencePipeline(config, device="cpu", generator=generator,
                                                       text_encoder=TextEncoderStandIn(), vae=VAEStandIn())
        pipe.num_transformer_blocks = TINY["num_layers"]
        pipe.frame_seq_length = tokens_per_frame
        pipe.kv_cache1 = [
            {"k": torch.zeros(BATCH, KV_CACHE_TOKENS, heads, head_dim),
             "v": torch.zeros(BATCH, KV_CACHE_TOKENS, heads, head_dim),
             "global_end_index": torch.tensor([0]), "local_end_index": torch.tensor([0])}
            for _ in range(TINY["num_layers"])
        ]
        pipe.crossattn_cache = [
            {"k": torch.zeros(BATCH, CROSS_CACHE_TOKENS, heads, head_dim),
             "v": torch.zeros(BATCH, CROSS_CACHE_TOKENS, heads, head_dim), "is_init": False}
            for _ in range(TINY["num_layers"])
        ]
        return pipe

    def run(name):
        steps, first, start_frames, frames, context_noise = RUNS[name]
        pipe = make_pipeline(steps, first, context_noise)
        calls = []
        wrapped_forward = pipe.generator.forward

        def logging_forward(*a, **kw):
            calls.append((float(kw["timestep"].flatten()[0]), int(kw["current_start"]) // tokens_per_frame))
            return wrapped_forward(*a, **kw)

        pending = list(renoise[: renoise_draws(steps, first, frames)].flatten(1, 2).unbind(0))

        def recorded_randn_like(tensor, *a, **kw):
            draw = pending.pop(0)
            if draw.shape != tensor.shape:
                raise RuntimeError(f"pipeline asked for noise {tuple(tensor.shape)}, recorded {tuple(draw.shape)}")
            return draw.to(tensor.dtype).clone()

        pipe.generator.forward = logging_forward
        real_randn_like = torch.randn_like
        torch.randn_like = recorded_randn_like
        try:
            _, latents = pipe.inference(noise=noise[:, :frames].clone(), text_prompts=["(recorded contexts)"] * BATCH,
                                        initial_latent=start[:, :start_frames].clone() if start_frames else None,
                                        return_latents=True)
        finally:
            torch.randn_like = real_randn_like
            del pipe.generator.forward
        if pending:
            raise RuntimeError(f"{name}: {len(pending)} recorded noise draws were not consumed")
        if start_frames and not torch.equal(latents[:, :start_frames], start[:, :start_frames]):
            raise RuntimeError(f"{name}: the pipeline's output does not begin with the start latents")
        print(f"{name}: latents {tuple(latents.shape)}, max |x| {latents.abs().max():.4f}, {len(calls)} model calls, "
              f"first-chunk steps {[round(float(t), 3) for t in pipe.denoising_step_list_first_chunk]}"
              if first else f"{name}: latents {tuple(latents.shape)}, {len(calls)} model calls")
        step_lists = {"rest": pipe.denoising_step_list.float()}
        if first:
            step_lists["first"] = pipe.denoising_step_list_first_chunk.float()
        return latents[:, start_frames:].clone(), torch.tensor(calls), step_lists

    padded = torch.zeros(BATCH, max(CONTEXT_LENGTHS), TINY["text_dim"])
    for index, context in enumerate(contexts):
        padded[index, : context.shape[0]] = context
    tensors = {
        # inputs (layout of the reference: batch, frames, channels, height, width)
        "context": padded,  # (B, 20, text_dim); sample i is context[i, :context_lengths[i]]
        "context_lengths": torch.tensor(CONTEXT_LENGTHS),
        "noise": noise.bfloat16(),  # (B, 4, C, H, W): generated frame k of every run starts from noise[:, k]
        "renoise": renoise.bfloat16(),  # (draws, B, 1, C, H, W): every run consumes draws from index 0 on
        "start": start.bfloat16(),  # (B, 2, C, H, W): i2v_image starts with frame 0, i2v_video with frames 0-1
    }
    for name in RUNS:
        video, calls, step_lists = run(name)
        tensors[f"{name}_video"] = video.contiguous()  # generated frames only (the start is copied unchanged)
        tensors[f"{name}_calls"] = calls  # (timestep, first frame) of every model call, in order
        for which, values in step_lists.items():
            tensors[f"{name}_steps_{which}"] = values  # after the pipeline's warp

    args.out.mkdir(parents=True, exist_ok=True)
    metadata = {
        "reference.repo": REFERENCE_REPO,
        "reference.commit": commit or "unknown",
        "reference.model_config": json.dumps(TINY),
        "recorded_by": "research/reference/record_causal_forcing.py",
        "weights": f"{args.weights.name} (sha256 {weights_sha256})",
        "input_seed": str(INPUT_SEED),
        "timestep_shift": str(TIMESTEP_SHIFT),
        "num_frame_per_block": "1",
        "runs": json.dumps({name: dict(zip(("steps", "first_chunk_steps", "start_frames", "frames", "context_noise"),
                                           run_args)) for name, run_args in RUNS.items()}),
        "notes": "calls: the pipeline also fills the cache after the last frame (a call that changes no output)",
    }
    path = args.out / "causal_forcing_io.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
