"""Record reference outputs of One-Forcing's own causal model and inference pipeline.

Usage (from the repo root, any venv with torch, diffusers, einops, tqdm and safetensors):

    python research/reference/record_one_forcing.py --reference /tmp/one-forcing

`--reference` is a git checkout of https://github.com/Aurora-edu/One-Forcing. The script refuses
another commit than REFERENCE_COMMIT unless `--any-commit`. Nothing of the reference is copied
into this repository: the script imports the reference's modules from the checkout and runs them.

One-Forcing's inference pipeline (`pipeline/causal_inference.py`) is Self Forcing's plus an
optional `first_frame_denoising_step_list`: the first block's own step list, warped like the
others. Its released inference (scripts/infer.sh) sets `denoising_step_list` [1000] and
`first_frame_denoising_step_list` [1000, 750, 500, 250], with `num_frame_per_block` 1
(config.yaml, frame-wise) or 3 (chunkwise_config.yaml). Its `wan/modules/causal_model.py`
differs from Self Forcing's only outside the KV-cache path (flex attention made optional, a
segmented-attention fallback for training) and its `WanDiffusionWrapper` only in GAN-head and
text-encoder options and the `seq_len` bound it passes (never reached by a cached pass).

What it does
------------
* builds the reference's `CausalWanModel` at the tiny config of `record_self_forcing.py` (whole-
  video cache) and loads tests/data/reference/self_forcing_weights.safetensors;
* runs the reference's `CausalInferencePipeline.inference` on CPU in float32 with the patches of
  `record_self_forcing.py` (it reuses its `import_reference`): batch 2 (12- and 20-token
  contexts), 9 latent frames of 16x4x4, the released step lists (shift 5, warped),
  context_noise 0; frame-wise (9 blocks of 1 frame) and chunk-wise (3 blocks of 3);
* writes tests/data/reference/one_forcing_io.safetensors.

The noise is recorded as in `record_self_forcing.py`: `noise` (each block's start) and
`renoise_<mode>` (the pipeline's `torch.randn_like` draws, served in order: only the first block
takes more than one step, so only it draws).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch
from record_self_forcing import TINY, checkout_commit, import_reference

REFERENCE_REPO = "https://github.com/Aurora-edu/One-Forcing"
REFERENCE_COMMIT = "ca345b35a87623e1c8b5af356a92f7412da816a3"
DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "reference"
WEIGHTS = DATA / "self_forcing_weights.safetensors"

INPUT_SEED = 2501
BATCH = 2
CONTEXT_LENGTHS = (12, 20)
NUM_FRAMES = 9
LATENT = (16, 4, 4)
DENOISING_STEP_LIST = [1000]  # scripts/infer.sh
FIRST_FRAME_DENOISING_STEP_LIST = [1000, 750, 500, 250]  # scripts/infer.sh
TIMESTEP_SHIFT = 5.0
MODES = {"framewise": 1, "chunkwise": 3}  # num_frame_per_block of config.yaml / chunkwise_config.yaml
KV_CACHE_TOKENS = 32760  # the pipeline's size for global attention
CROSS_CACHE_TOKENS = 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="checkout of the One-Forcing repository")
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

    model = causal_module.CausalWanModel(**TINY).eval()
    causal_module.CausalWanModel.from_pretrained = classmethod(lambda cls, *a, **kw: model)
    generator = wrapper_module.WanDiffusionWrapper(timestep_shift=TIMESTEP_SHIFT, is_causal=True)
    generator.load_state_dict({k: v.float() for k, v in load_file(str(WEIGHTS)).items()})

    channels, height, width = LATENT
    tokens_per_frame = (height // 2) * (width // 2)
    inputs = torch.Generator().manual_seed(INPUT_SEED)
    contexts = [torch.randn(length, TINY["text_dim"], generator=inputs) for length in CONTEXT_LENGTHS]
    noise = torch.randn(BATCH, NUM_FRAMES, channels, height, width, generator=inputs).bfloat16().float()
    draws = len(FIRST_FRAME_DENOISING_STEP_LIST) - 1
    renoise = {mode: torch.randn(draws, BATCH, frames, channels, height, width, generator=inputs).bfloat16().float()
               for mode, frames in MODES.items()}

    class TextEncoderStandIn(torch.nn.Module):
        def forward(self, text_prompts):
            return {"prompt_embeds": contexts}

    class VAEStandIn(torch.nn.Module):
        def decode_to_pixel(self, latent, use_cache=False):
            return latent

    heads, head_dim = TINY["num_heads"], TINY["dim"] // TINY["num_heads"]

    def run_video(mode: str) -> tuple[torch.Tensor, list]:
        pipe_config = types.SimpleNamespace(
            denoising_step_list=DENOISING_STEP_LIST, first_frame_denoising_step_list=FIRST_FRAME_DENOISING_STEP_LIST,
            warp_denoising_step=True, num_frame_per_block=MODES[mode], independent_first_frame=False,
            context_noise=0)
        pipe = pipeline_module.CausalInferencePipeline(pipe_config, device="cpu", generator=generator,
                                                       text_encoder=TextEncoderStandIn(), vae=VAEStandIn())
        pipe.num_transformer_blocks, pipe.frame_seq_length = TINY["num_layers"], tokens_per_frame
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
        pending = list(renoise[mode].flatten(1, 2).unbind(0))

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
        print(f"{mode}: latents {tuple(latents.shape)}, max |x| {latents.abs().max():.4f}")
        steps = (pipe.first_frame_denoising_step_list.float(), pipe.denoising_step_list.float())
        return latents.clone(), steps

    videos = {}
    for mode in MODES:
        videos[mode], (first_steps, rest_steps) = run_video(mode)

    padded = torch.zeros(BATCH, max(CONTEXT_LENGTHS), TINY["text_dim"])
    for index, context in enumerate(contexts):
        padded[index, : context.shape[0]] = context
    tensors = {
        "context": padded, "context_lengths": torch.tensor(CONTEXT_LENGTHS), "noise": noise.bfloat16(),
        "first_frame_denoising_step_list": first_steps, "denoising_step_list": rest_steps,
    }
    for mode in MODES:
        tensors[f"renoise_{mode}"] = renoise[mode].bfloat16()
        tensors[f"video_{mode}"] = videos[mode].contiguous()
    metadata = {
        "reference.repo": REFERENCE_REPO,
        "reference.commit": commit or "unknown",
        "reference.model_config": json.dumps(TINY),
        "recorded_by": "research/reference/record_one_forcing.py",
        "weights": "tests/data/reference/self_forcing_weights.safetensors",
        "input_seed": str(INPUT_SEED),
        "timestep_shift": str(TIMESTEP_SHIFT),
        "frames_per_block": json.dumps(MODES),
        "context_noise": "0",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "one_forcing_io.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
