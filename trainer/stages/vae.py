"""Toy stage 0: train the tiny Wan VAE (diffusers' AutoencoderKLWan) on synthetic shape videos.

Loss: L1 + MSE reconstruction of a posterior sample, plus a small KL. Pixels of the shapes
weigh `1 + foreground_weight`: the plain background is most of every frame, and an unweighted
loss spends the model on it (after 1000 steps the shapes came back as faint blobs of the wrong
colour, which every later stage and the evaluator would inherit). At export the latents'
per-channel mean/std over fresh clips go into the VAE config, so `LatentCodec` normalises
them to unit scale for the transformer, as the real Wan VAE's statistics do. `edge_weight`
adds an L1 on the pixels' spatial differences (see `edge_difference`).
The toy VAE is small and never sharded: parallel=fsdp trains it replicated, as ddp does.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan

from asd_core.toy.domain import BACKGROUND_RGB, DEFAULT_HEIGHT, DEFAULT_WIDTH
from asd_core.vae import LatentCodec, tiny_vae_config

from .. import dist
from .base import Stage, StepResult, apply_update, step_seed, warmup_scheduler
from .common import resolve_model_file
from .data import pixel_batch, rank_indices


def foreground_mask(pixels: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, H, W) 1.0 where a pixel is not the domain's background colour, else 0.0."""
    background = torch.tensor(BACKGROUND_RGB, dtype=pixels.dtype, device=pixels.device) / 127.5 - 1.0
    distance = (pixels - background[None, :, None, None, None]).abs().amax(dim=1, keepdim=True)
    return (distance > 0.05).to(pixels.dtype)


def edge_difference(recon: torch.Tensor, pixels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted L1 between the horizontal and vertical pixel differences of two (B, 3, T, H, W) videos.

    Plain L1 + MSE tolerate a soft outline, and a square with soft corners reads as a circle:
    this term charges for every edge the reconstruction blurs or misplaces.
    """
    loss = recon.new_zeros(())
    for dim in (-1, -2):
        mismatch = torch.diff(recon, dim=dim) - torch.diff(pixels, dim=dim)
        loss = loss + (weight.narrow(dim, 1, weight.shape[dim] - 1) * mismatch.abs()).mean()
    return loss


class VaeStage(Stage):
    name = "vae"

    def __init__(self, config, runtime):
        super().__init__(config, runtime)
        torch.manual_seed(config.seed)
        self.vae = AutoencoderKLWan(**tiny_vae_config(**config.vae)).to(runtime.device)
        self.init_stats = None  # (mean, std) of `init`: kept at export when the encoder is frozen
        if config.init:  # fine-tune a trained VAE (e.g. its decoder only)
            trained = LatentCodec.load(resolve_model_file(config.init))
            self.vae.load_state_dict(trained.vae.state_dict())
            self.init_stats = (list(trained.mean), list(trained.std))
        dist.broadcast_module(self.vae, runtime)
        if config.freeze_encoder:
            # Decoder fine-tuning: the latent space (and every model trained in it) stays as it is,
            # while the pixels it decodes to get sharper.
            self.vae.encoder.requires_grad_(False)
            self.vae.quant_conv.requires_grad_(False)
        self.trainable = [p for p in self.vae.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.lr, betas=tuple(config.betas))
        self.scheduler = warmup_scheduler(self.optimizer, 0)  # a constant rate
        self.height = config.latent_height * 8 or DEFAULT_HEIGHT
        self.width = config.latent_width * 8 or DEFAULT_WIDTH

    def modules(self):
        return {"vae": self.vae}

    def optimizers(self):
        return {"vae": self.optimizer}

    def schedulers(self):
        return {"vae": self.scheduler}

    def checkpoint_extra(self):
        return {"vae_config": tiny_vae_config(**self.config.vae)}

    def train_step(self, step: int) -> StepResult:
        c, rt = self.config, self.runtime
        indices = rank_indices(step, c.batch_size, rt.rank, rt.world_size)
        pixels, _ = pixel_batch(indices, c.clip_frames, self.height, self.width)
        pixels = pixels.to(rt.device)
        generator = torch.Generator().manual_seed(step_seed(c.seed, rt.rank, step))
        with torch.set_grad_enabled(not c.freeze_encoder):
            posterior = self.vae.encode(pixels).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator).to(rt.device)
        latents = posterior.mean + posterior.std * noise
        recon = self.vae.decode(latents).sample
        weight = 1.0 + c.foreground_weight * foreground_mask(pixels)
        l1 = (weight * (recon - pixels).abs()).mean()
        l2 = (weight * (recon - pixels).square()).mean()
        kl = posterior.kl().mean() / latents[0].numel()
        loss = l1 + l2 + c.kl_weight * kl
        extra = {}
        if c.edge_weight:
            edges = edge_difference(recon, pixels, weight)
            loss = loss + c.edge_weight * edges
            extra["edges"] = edges.item()
        applied, norm = apply_update(loss, self.trainable, self.optimizer, rt, c.grad_clip)
        if applied:
            self.scheduler.step()
        logs = {"loss": loss.item(), "l1": l1.item(), "mse": l2.item(), "kl": kl.item(), "grad_norm": norm, **extra}
        return StepResult(logs, [] if applied else ["vae"])

    @torch.no_grad()
    def export(self, path: Path) -> Path:
        """The VAE with its latent statistics (rank 0 writes).

        A fresh encoder gets statistics measured on clips it never trained on. A decoder
        fine-tune keeps `init`'s: every model trained in the latent space normalised its
        latents with them, and re-measuring (on clips of another length, say) would decode
        those models' outputs through a shifted normalisation.
        """
        if not self.runtime.is_main:
            return path
        vae = copy.deepcopy(self.vae).eval()  # the codec freezes what it wraps; keep the trained one trainable
        if self.config.freeze_encoder and self.init_stats is not None:
            mean, std = self.init_stats
        else:
            mean, std = self._measure_latent_stats(vae)
        vae.register_to_config(latents_mean=mean, latents_std=std)
        LatentCodec(vae).save(path)
        return path

    def stats_clip_count(self) -> int:
        """`stats_clips`, but no more than the clips the run trained on (at least 8): a smoke run
        of a few steps does not spend a minute on statistics; the shipped run (4 x 1000) keeps 64."""
        return min(self.config.stats_clips, max(8, self.config.batch_size * self.config.max_steps))

    def _measure_latent_stats(self, vae: AutoencoderKLWan) -> tuple[list[float], list[float]]:
        pixels, _ = pixel_batch(list(range(10**6, 10**6 + self.stats_clip_count())), self.config.clip_frames,
                                self.height, self.width)
        raw = torch.cat([vae.encode(p[None].to(self.runtime.device)).latent_dist.mode() for p in pixels])
        return raw.mean(dim=(0, 2, 3, 4)).tolist(), raw.std(dim=(0, 2, 3, 4)).clamp_min(1e-4).tolist()
