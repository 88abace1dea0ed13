"""Record reference outputs of Rolling Forcing's own causal model and rolling-window inference.

Usage (from the repo root, any venv with torch, diffusers, einops and safetensors):

    python research/reference/record_rolling_forcing.py --reference /tmp/rolling-forcing

`--reference` is a git checkout of https://github.com/TencentARC/RollingForcing. This script
was written against commit REFERENCE_COMMIT below and refuses another one unless
`--any-commit`. Nothing of the reference is copied into this repository: the script imports
the reference's modules from the checkout and runs them.

What it does
------------
* builds the reference's `wan.modules.causal_model.CausalWanModel` (Rolling Forcing's version:
  its self-attention keeps the first chunk as an attention sink and re-indexes its RoPE) at the
  tiny config of `record_self_forcing.py` and loads the weights that script recorded
  (tests/data/reference/self_forcing_weights.safetensors: the same architecture, so the same
  random model serves both families), wrapped in the reference's `WanDiffusionWrapper`
  (flow-matching scheduler, shift 5.0);
* runs the reference's `pipeline.rolling_forcing_inference.CausalInferencePipeline
  .inference_rolling_forcing` on CPU in float32: batch 2 (a 12- and a 20-token context),
  9 chunks of 3 latent frames of 16x4x4 (27 frames: the window reaches the video's end, the
  attention sink is re-indexed, the attention span of 21 frames is reached and the 24-frame cache
  evicts), context_noise 0, once with the reference's 5-step list [1000, 800, 600, 400, 200]
  (configs/rolling_forcing_dmd.yaml) and once with the 4-step list [1000, 750, 500, 250], both
  warped as the pipeline does;
* writes tests/data/reference/rolling_forcing_io.safetensors (inputs, the noise the pipeline
  consumed, outputs; the reference repository and commit in its metadata).

The noise the pipeline consumes is known: every chunk's starting noise is the `noise` argument
(recorded), and the re-noise draws (`torch.randn_like` over the whole window, once per chunk that
is not finished, of which the pipeline keeps that chunk's slice) are drawn here from a seeded
generator; only the slice each draw contributes is recorded (`renoise`, in the pipeline's order).

Constants of the reference sized for Wan at 480x832 and patched to the tiny latent (nothing of the
arithmetic changes; the values in frames are the reference's):
  1. import stubs as in `record_self_forcing.py`: `wan`, `wan.modules`, `pipeline` and `utils` are
     registered without their `__init__`; `wan.modules.tokenizers`, `.t5`, `.vae` are empty
     stand-ins (only the text encoder and VAE wrappers use them, replaced in 4).
  2. attention: the reference's `attention` called with dtype=q.dtype (its SDPA fallback would cast
     to bfloat16), for self- and cross-attention; no masking is lost (context_lens=None).
  3. `CausalWanModel.from_pretrained` returns the tiny model.
  4. the text encoder returns the recorded contexts; the VAE returns the latents.
  5. every self-attention's `frame_length` (1560 tokens) is the tiny latent's tokens per frame;
     `block_length` = 3 frames and `max_attention_size` = 21 frames as the reference sets them.
  6. the pipeline's caches are allocated here with the tiny shapes, 24 frames of self-attention
     cache (the pipeline's `1560 * 24` tokens) and 512 text tokens; the pipeline resets them.
  7. `torch.randn_like` draws from the seeded generator and logs the slice used.
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

REFERENCE_REPO = "https://github.com/TencentARC/RollingForcing"
REFERENCE_COMMIT = "a1477d09e85dc759a6a6728f55f77f59342ce388"
DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "reference"
WEIGHTS = DATA / "self_forcing_weights.safetensors"

TINY = dict(
    model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=16, dim=64, ffn_dim=128, freq_dim=32,
    text_dim=32, out_dim=16, num_heads=2, num_layers=2, local_attn_size=-1, sink_size=0, qk_norm=True,
    cross_attn_norm=True, eps=1e-6,
)
INPUT_SEED = 2201
BATCH = 2
CONTEXT_LENGTHS = (12, 20)
CHUNK_FRAMES = 3  # the reference's block_length is 3 frames whatever num_frame_per_block says
NUM_CHUNKS = 9
LATENT = (16, 4, 4)  # channels, height, width
STEP_LISTS = {"5": [1000, 800, 600, 400, 200], "4": [1000, 750, 500, 250]}
TIMESTEP_SHIFT = 5.0
ATTENTION_FRAMES = 21  # the reference's max_attention_size in frames
CACHE_FRAMES = 24  # the reference's self-attention cache in frames
CROSS_CACHE_TOKENS = 512


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
        stand_in = types.ModuleType(name)  # patch 1
        setattr(stand_in, attribute, None)
        sys.modules[name] = stand_in
    attention_module = importlib.import_module("wan.modules.attention")
    model_module = importlib.import_module("wan.modules.model")
    causal_module = importlib.import_module("wan.modules.causal_model")
    reference_attention = attention_module.attention

    def attention_full_precision(q, k, v, *args, **kwargs):  # patch 2
        kwargs["dtype"] = q.dtype
        return reference_attention(q, k, v, *args, **kwargs)

    causal_module.attention = attention_full_precision
    model_module.flash_attention = attention_full_precision
    wrapper_module = importlib.import_module("utils.wan_wrapper")
    pipeline_module = importlib.import_module("pipeline.rolling_forcing_inference")
    return causal_module, wrapper_module, pipeline_module


def checkout_commit(root: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True, capture_output=True,
                              text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="checkout of the RollingForcing repository")
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
    causal_module.CausalWanModel.from_pretrained = classmethod(lambda cls, *a, **kw: model)  # patch 3
    generator = wrapper_module.WanDiffusionWrapper(timestep_shift=TIMESTEP_SHIFT, is_causal=True)
    generator.load_state_dict({k: v.float() for k, v in load_file(str(WEIGHTS)).items()})

    channels, height, width = LATENT
    tokens_per_frame = (height // 2) * (width // 2)
    for block in model.blocks:  # patch 5
        block.self_attn.frame_length = tokens_per_frame
        block.self_attn.block_length = CHUNK_FRAMES * tokens_per_frame
        block.self_attn.max_attention_size = ATTENTION_FRAMES * tokens_per_frame

    inputs = torch.Generator().manual_seed(INPUT_SEED)
    frames = CHUNK_FRAMES * NUM_CHUNKS
    contexts = [torch.randn(length, TINY["text_dim"], generator=inputs) for length in CONTEXT_LENGTHS]
    noise = torch.randn(BATCH, frames, channels, height, width, generator=inputs).bfloat16().float()

    class TextEncoderStandIn(torch.nn.Module):  # patch 4
        def forward(self, text_prompts):
            return {"prompt_embeds": contexts}

    class VAEStandIn(torch.nn.Module):  # patch 4
        def decode_to_pixel(self, latent, use_cache=False):
            return latent

    heads, head_dim = TINY["num_heads"], TINY["dim"] // TINY["num_heads"]

    def run_video(step_list: list[int], renoise_seed: int):
        config = types.SimpleNamespace(denoising_step_list=step_list, warp_denoising_step=True,
                                       num_frame_per_block=CHUNK_FRAMES, independent_first_frame=False,
                                       context_noise=0)
        pipe = pipeline_module.CausalInferencePipeline(config, device="cpu", generator=generator,
                                                       text_encoder=TextEncoderStandIn(), vae=VAEStandIn())
        pipe.num_transformer_blocks, pipe.frame_seq_length = TINY["num_layers"], tokens_per_frame  # patch 6
        pipe.kv_cache_clean = [
            {"k": torch.zeros(BATCH, CACHE_FRAMES * tokens_per_frame, heads, head_dim),
             "v": torch.zeros(BATCH, CACHE_FRAMES * tokens_per_frame, heads, head_dim),
             "global_end_index": torch.tensor([0]), "local_end_index": torch.tensor([0])}
            for _ in range(TINY["num_layers"])
        ]
        pipe.crossattn_cache = [
            {"k": torch.zeros(BATCH, CROSS_CACHE_TOKENS, heads, head_dim),
             "v": torch.zeros(BATCH, CROSS_CACHE_TOKENS, heads, head_dim), "is_init": False}
            for _ in range(TINY["num_layers"])
        ]
        draws = torch.Generator().manual_seed(renoise_seed)
        used = []  # (window index, the slice of the draw the pipeline keeps: (B, 3, C, H, W))
        calls = []  # (first frame, frames, cache fill) of every model call, in order
        wrapped_forward = pipe.generator.forward

        def logging_forward(*a, **kw):
            x = kw["noisy_image_or_video"]
            calls.append((int(kw["current_start"]) // tokens_per_frame, x.shape[1], bool(kw.get("updating_cache"))))
            return wrapped_forward(*a, **kw)

        def seeded_randn_like(tensor, *a, **kw):  # patch 7: the pipeline keeps one chunk of each draw
            draw = torch.randn(tensor.shape, generator=draws).bfloat16().float()
            window = draw.unflatten(0, (BATCH, -1))
            denoising_calls = [c for c in calls if not c[2]]
            window_index = len(denoising_calls) - 1  # the window whose prediction is being re-noised
            start_frame, window_frames, _ = denoising_calls[window_index]
            draws_done = sum(1 for index, _ in used if index == window_index)
            block = _renoised_block(window_frames, draws_done, step_list, start_frame, frames)
            used.append((window_index, window[:, block * CHUNK_FRAMES:(block + 1) * CHUNK_FRAMES].clone()))
            return draw.to(tensor.dtype)

        pipe.generator.forward = logging_forward
        real_randn_like = torch.randn_like
        torch.randn_like = seeded_randn_like
        try:
            _, latents = pipe.inference_rolling_forcing(noise=noise.clone(), text_prompts=["(recorded)"] * BATCH,
                                                        return_latents=True)
        finally:
            torch.randn_like = real_randn_like
            del pipe.generator.forward
        print(f"steps {step_list}: latents {tuple(latents.shape)}, max |x| {latents.abs().max():.4f}, "
              f"{len(calls)} model calls, {len(used)} re-noise draws")
        return latents.clone(), torch.stack([u for _, u in used]), calls, pipe.denoising_step_list.float()

    tensors = {"noise": noise.bfloat16()}  # (B, F, C, H, W): chunk k starts from noise[:, 3k:3k+3]
    padded = torch.zeros(BATCH, max(CONTEXT_LENGTHS), TINY["text_dim"])
    for index, context in enumerate(contexts):
        padded[index, : context.shape[0]] = context
    tensors["context"], tensors["context_lengths"] = padded, torch.tensor(CONTEXT_LENGTHS)
    call_logs = {}
    for offset, (name, step_list) in enumerate(STEP_LISTS.items()):
        video, renoise, calls, warped = run_video(step_list, INPUT_SEED + 1 + offset)
        tensors[f"video_steps_{name}"] = video.contiguous()
        tensors[f"renoise_steps_{name}"] = renoise.bfloat16().contiguous()  # (draws, B, 3, C, H, W)
        tensors[f"denoising_step_list_{name}"] = warped
        call_logs[name] = calls

    args.out.mkdir(parents=True, exist_ok=True)
    metadata = {
        "reference.repo": REFERENCE_REPO,
        "reference.commit": commit or "unknown",
        "reference.model_config": json.dumps(TINY),
        "recorded_by": "research/reference/record_rolling_forcing.py",
        "weights": "tests/data/reference/self_forcing_weights.safetensors",
        "input_seed": str(INPUT_SEED),
        "timestep_shift": str(TIMESTEP_SHIFT),
        "step_lists_before_warp": json.dumps(STEP_LISTS),
        "attention_frames": str(ATTENTION_FRAMES),
        "cache_frames": str(CACHE_FRAMES),
        "chunk_frames": str(CHUNK_FRAMES),
        "context_noise": "0",
        "calls": json.dumps(call_logs),
        "notes": "renoise_steps_N: per window, one draw per chunk of the window that is not finished, oldest "
                 "first; calls: (first frame, frames, cache fill) of every model call of the pipeline",
    }
    path = args.out / "rolling_forcing_io.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def _renoised_block(window_frames: int, draws_done: int, step_list: list[int], start_frame: int,
                    video_frames: int) -> int:
    """Index in its window of the chunk the `draws_done`-th draw of this window re-noises.

    The pipeline re-noises every chunk of the window but the one at the last timestep, oldest
    first; the oldest chunk is at the last timestep when the window is full or ends the video.
    """
    window_chunks = window_frames // CHUNK_FRAMES
    oldest_finished = window_chunks == len(step_list) or start_frame + window_frames == video_frames and start_frame > 0
    return draws_done + (1 if oldest_finished else 0)


if __name__ == "__main__":
    main()
