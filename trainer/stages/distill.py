"""Stage 3: Self Forcing DMD + adversarial self-distillation (ASD).

Networks: the generator (causal student, from the ode_init run), its EMA, the frozen teacher
(real score, with CFG), the critic (fake score: the teacher's weights, trained with flow
matching on generated videos) and the ASD discriminator D (a light head on the critic's features).

One iteration (Self Forcing's schedule): the generator is rolled out chunk by chunk with its
own KV cache; the exit step index e (n = e + 1 steps) is drawn on rank 0 (uniform, or weighted
by `exit_weights`) and broadcast. An n-step exit walks the first n timesteps of the training
plan, on the first chunk too (capped by its plan). The critic is updated every iteration; the
generator every `gen_update_ratio`-th with L_DMD + alpha * L_ASD (`asd_weighting=relative`:
alpha fixes the ratio of the two gradients' norms at the generator's output instead).
*(inferred)* ASD compares the n-step output (with gradient) with the same rollout taken one
step further (the (n+1)-step output, no gradient). When e is the last step there is no
(n+1)-step output and the ASD terms are skipped, so they run at n in 1..N-1 (or at
`asd_counts` only), and asd_weight=0 is exactly Self Forcing's DMD. Both branches are noised
independently (own noise, own timesteps) at D's noise levels (disc_min_t..disc_max_t, lower
than DMD's: at DMD's mostly-high levels D never told the branches apart) and scored by D on
the critic's features at a few depths; the critic gets no gradient from any ASD term. D is
trained on the same pairs with the relativistic loss plus approximate R1 (on the (n+1)-step
branch) and R2 (on the n-step branch).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from asd_core.discriminator import ASDDiscriminator
from asd_core.losses import (
    add_noise,
    asd_discriminator_loss,
    asd_generator_loss,
    dmd_loss,
    finite_difference_penalty,
    flow_matching_loss,
    weigh_at_output,
    x0_from_flow,
)
from asd_core.schedule import timestep_to_sigma

from .. import dist
from ..config import check_distill_networks, distill_asd_counts
from ..rollout import guided_flow, noise_like, self_forcing_rollout
from .base import StepResult, TransformerStage, apply_update, step_seed, update_ema, warmup_scheduler
from .common import (
    SAMPLE_COUNT,
    PromptSource,
    load_network,
    model_config_of,
    sample_codec,
    samples_wanted,
    shifted_timesteps,
    student_vae,
    training_plan,
    video_size,
    write_sample_videos,
)
from .data import rank_indices

EXIT_SALT = 3  # step_seed salt of the exit-step draw (rank 0's stream, then broadcast)


def default_depths(num_layers: int) -> list[int]:
    """Three critic blocks spread over depth (early, middle, last); fewer for shallower critics."""
    return sorted({max(0, num_layers // 3 - 1), max(0, 2 * num_layers // 3 - 1), num_layers - 1})


class DistillStage(TransformerStage):
    name = "distill"

    def __init__(self, config, runtime):
        super().__init__(config, runtime)
        torch.manual_seed(config.seed)
        c = config
        self.frames, self.height, self.width = video_size(c)
        self.first_steps, self.rest_steps = training_plan(c.plan)
        self.num_steps = len(self.rest_steps)  # N: the training step count of later chunks
        self.asd_counts = distill_asd_counts(c)

        chunk = model_config_of(c.init).chunk_frames
        self.generator = load_network(c.init, chunk_frames=chunk, device=runtime.device, trainable=True)
        self.teacher = load_network(c.teacher, chunk_frames=self.frames, device=runtime.device, trainable=False)
        self.critic = load_network(c.teacher, chunk_frames=self.frames, device=runtime.device, trainable=True)
        for model in (self.generator, self.critic, self.teacher):  # the teacher: the real score's CFG passes
            model.gradient_checkpointing = c.gradient_checkpointing
        self.model_config = self.generator.config
        self.prompts = PromptSource(c, c.teacher, runtime.device)
        self.text_encoder = self.prompts.encoder  # toy runs ship the teacher's encoder beside the student

        layers, width = self.critic.config.num_layers, self.critic.config.width
        self.depths = tuple(c.disc_depths or default_depths(layers))
        check_distill_networks(c, frames=self.frames, chunk_frames=chunk, critic_layers=layers, critic_width=width)
        heads = next(h for h in (4, 2, 1) if width % h == 0)
        self.discriminator = ASDDiscriminator(width, len(self.depths), max(1, self.num_steps - 1),
                                              num_queries=c.disc_queries, heads=heads).to(runtime.device)
        for module in (self.generator, self.critic, self.discriminator):
            dist.broadcast_module(module, runtime)
        self.ema = copy.deepcopy(self.generator).requires_grad_(False)
        # fsdp: generator, its EMA (sharded alike) and critic are sharded per block. The frozen
        # teacher stays replicated: no gradients or moments (a quarter of a trained network's
        # memory) and its CFG passes, two per generator update, then need no all-gathers.
        # The discriminator is a small head: replicated, its gradients averaged as under ddp.
        for module in (self.generator, self.ema, self.critic):
            dist.shard_transformer(module, runtime)

        def adamw(module, lr):
            return torch.optim.AdamW(module.parameters(), lr=lr, betas=tuple(c.betas), weight_decay=c.weight_decay)

        self.opt_generator = adamw(self.generator, c.lr_generator)
        self.opt_critic = adamw(self.critic, c.lr_critic)
        self.opt_discriminator = adamw(self.discriminator, c.lr_discriminator)
        self.sched = {name: warmup_scheduler(opt, c.warmup_steps) for name, opt in self.optimizers().items()}
        self.vae = student_vae(c, c.teacher, c.init)
        self.sample_codec = sample_codec(c, given=c.vae, recorded=self.vae, channels=self.model_config.in_channels,
                                         device=runtime.device, is_main=runtime.is_main)

    def modules(self):
        return {"generator": self.generator, "ema": self.ema, "critic": self.critic,
                "discriminator": self.discriminator}

    def optimizers(self):
        return {"generator": self.opt_generator, "critic": self.opt_critic, "discriminator": self.opt_discriminator}

    def schedulers(self):
        return self.sched

    def export_plan(self) -> str:
        return self.config.export_plan or self.config.plan

    def export_metadata(self) -> dict[str, str]:
        return {"asd.role": "student", "asd.asd_weight": str(self.config.asd_weight),
                "asd.asd_weighting": self.config.asd_weighting,
                "asd.asd_counts": ",".join(str(n) for n in sorted(self.asd_counts)),
                "asd.exit_weights": ",".join(f"{w:g}" for w in self.config.exit_weights),  # "" = uniform
                "asd.real_cfg": str(self.config.cfg_scale),  # the teacher guidance the student was distilled toward
                "asd.ema_decay": str(self.config.ema_decay)}  # 0.0: the trained generator itself, no average

    # -- pieces -----------------------------------------------------------------------------

    def draw_exit(self, step: int) -> int:
        """The exit step index for this iteration: rank 0 draws it, every rank uses it."""
        generator = torch.Generator().manual_seed(step_seed(self.config.seed, 0, step, EXIT_SALT))
        if self.config.exit_weights:
            weights = torch.tensor(self.config.exit_weights, dtype=torch.float64)
            drawn = int(torch.multinomial(weights, 1, generator=generator))
        else:  # uniform: kept as randint so runs from before exit_weights re-make bit for bit
            drawn = int(torch.randint(self.num_steps, (1,), generator=generator))
        return dist.broadcast_int(drawn, self.runtime)

    def noised(self, x: torch.Tensor, generator: torch.Generator, *, for_discriminator: bool = False):
        """(x_t, timesteps (B,), sigma (B,), noise): x noised at a fresh shifted timestep per sample.

        DMD and the critic draw from dmd_min_t..dmd_max_t; D's branches from its own, lower range.
        """
        c = self.config
        low, high, shift = ((c.disc_min_t, c.disc_max_t, c.disc_timestep_shift) if for_discriminator
                            else (c.dmd_min_t, c.dmd_max_t, c.timestep_shift))
        t = shifted_timesteps(x.shape[0], generator, low, high, shift).to(x.device)
        noise = noise_like(x.shape, generator, x.device)
        sigma = timestep_to_sigma(t)
        return add_noise(x, noise, sigma), t, sigma, noise

    def rollout_pair(self, noise: torch.Tensor, context: torch.Tensor, exit_rest: int, generator: torch.Generator, *,
                     grad: bool, with_real: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(n-step output, ASD's (n+1)-step real sample or None), n = exit_rest + 1: the generator
        rolled out to exit step `exit_rest` on later chunks (the first chunk exits at the same
        step, capped by its plan), the real sample the same rollout taken one step further."""
        rollout = self_forcing_rollout(
            self.generator, noise, context, first_steps=self.first_steps, rest_steps=self.rest_steps,
            exit_first=min(exit_rest, len(self.first_steps) - 1), exit_rest=exit_rest, generator=generator,
            grad=grad, one_more_step=with_real, context_noise=self.config.context_noise)
        return rollout.video, rollout.next_video

    def disc_pair(self, fake: torch.Tensor, real: torch.Tensor, generator: torch.Generator):
        """D's input: the n-step (fake) and (n+1)-step (real) outputs, each noised on its own at
        D's levels, batched n-step half first: (x_t (2B, ...), timesteps (2B,))."""
        fake_t, t_fake, _, _ = self.noised(fake, generator, for_discriminator=True)
        real_t, t_real, _, _ = self.noised(real, generator, for_discriminator=True)
        return torch.cat([fake_t, real_t]), torch.cat([t_fake, t_real])

    def disc_features(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> list[torch.Tensor]:
        """The critic's hidden states at D's depths for a pair batch from `disc_pair` (2B);
        `context` (B) is the captions, shared by both halves.

        One batched pass over both branches: the same arithmetic per sample, half the calls.
        """
        _, features = self.critic(x_t, t, torch.cat([context, context]), return_features=self.depths)
        return features

    def disc_logits(self, features: list[torch.Tensor], n: int) -> torch.Tensor:
        """D's logits (2B,) for a pair batch's features."""
        return self.discriminator(features, n)

    # -- one iteration ----------------------------------------------------------------------

    def train_step(self, step: int) -> StepResult:
        c, rt = self.config, self.runtime
        generator = torch.Generator().manual_seed(step_seed(c.seed, rt.rank, step))
        indices = rank_indices(step, c.batch_size, rt.rank, rt.world_size)
        context = self.prompts.contexts(indices)
        channels = self.generator.config.in_channels
        noise = noise_like((len(indices), channels, self.frames, self.height, self.width), generator, rt.device)

        exit_rest = self.draw_exit(step)
        n = exit_rest + 1
        use_asd = c.asd_weight > 0 and n in self.asd_counts
        train_generator = step % c.gen_update_ratio == 0
        logs: dict[str, float] = {"exit_step": float(exit_rest), "asd_n": float(n if use_asd else 0)}
        skipped: list[str] = []
        disc_input = None  # (x, t, features) of D's pair, when the generator's ASD term made one

        # video (B, C, F, H, W): the n-step output (grad on generator iterations); next_video: the
        # (n+1)-step "real" sample ASD compares it with (None without ASD)
        video, next_video = self.rollout_pair(noise, context, exit_rest, generator, grad=train_generator,
                                              with_real=use_asd)

        if train_generator:
            self.critic.requires_grad_(False)
            self.discriminator.requires_grad_(False)
            with torch.no_grad():
                x_t, t, sigma, _ = self.noised(video.detach(), generator)
                real = x0_from_flow(x_t, guided_flow(self.teacher, x_t, t, context, self.prompts.uncond, c.cfg_scale), sigma)
                fake = x0_from_flow(x_t, self.critic(x_t, t, context).float(), sigma)
            loss, dmd_logs = dmd_loss(video, real, fake)
            logs.update({"dmd_loss": loss.item(), **dmd_logs})
            if use_asd:
                # Gradients flow through the critic's features into the n-step half; the critic and D are
                # frozen here (the teacher always is), so none of them gets an ASD gradient.
                x, t_pair = self.disc_pair(video, next_video.detach(), generator)
                features = self.disc_features(x, t_pair, context)
                d_fake, d_real = self.disc_logits(features, n).chunk(2)
                disc_input = (x.detach(), t_pair, [f.detach() for f in features])
                g_loss = asd_generator_loss(d_fake, d_real)
                logs["asd_generator_loss"] = g_loss.item()
                loss, weigh_logs = weigh_at_output(video, loss, g_loss, c.asd_weight,
                                                   relative=c.asd_weighting == "relative")
                logs["asd_grad_ratio"], logs["asd_effective_weight"] = weigh_logs["grad_ratio"], weigh_logs["extra_weight"]
            logs["generator_loss"] = loss.item()
            applied, norm = apply_update(loss, list(self.generator.parameters()), self.opt_generator, rt, c.grad_clip)
            # Unfrozen only after backward: gradient checkpointing recomputes the critic's blocks in
            # backward and must see the same requires_grad as the forward did (else it fails).
            self.critic.requires_grad_(True)
            self.discriminator.requires_grad_(True)
            logs["grad_norm/generator"] = norm
            if applied:
                self.sched["generator"].step()
                update_ema(self.ema, self.generator, c.ema_decay, step, c.ema_start)
            else:
                skipped.append("generator")

        # D's step comes before the critic's update: its features and R1/R2's perturbed features
        # must come from the same critic weights (across an update the finite difference would
        # measure the update, not D's slope). On generator iterations D steps on the pair the ASD
        # term just read (the critic has not moved since; the generator's update does not touch
        # it), which saves a critic pass; otherwise one batched no-grad pass reads both branches
        # (D's noise range differs from the critic's, so the critic's training forward cannot serve).
        sample = video.detach()
        if use_asd:
            if disc_input is None:
                x, t_pair = self.disc_pair(sample, next_video.detach(), generator)
                with torch.no_grad():
                    disc_input = (x, t_pair, self.disc_features(x, t_pair, context))
            x, t_pair, features = disc_input
            skipped += self.discriminator_step(step, x, t_pair, features, context, n, generator, logs)

        # Critic (fake score): flow matching on the generator's current samples.
        x_t, t, _, critic_noise = self.noised(sample, generator)
        prediction = self.critic(x_t, t, context)
        critic_loss = flow_matching_loss(prediction, sample, critic_noise)
        logs["critic_loss"] = critic_loss.item()
        applied, norm = apply_update(critic_loss, list(self.critic.parameters()), self.opt_critic, rt, c.grad_clip)
        logs["grad_norm/critic"] = norm
        if applied:
            self.sched["critic"].step()
        else:
            skipped.append("critic")
        return StepResult(logs, skipped)

    def discriminator_step(self, step, x, t, features, context, n, generator, logs) -> list[str]:
        """Relativistic loss ranking the (n+1)-step sample above the n-step one, plus approx R1/R2.

        x, t, features: both branches batched, the n-step half first: noised inputs, their
        timesteps, and the critic's features at D's depths taken without a graph (D's
        parameters get the gradient, never the critic).

        R1 (on the (n+1)-step branch) and R2 (on the n-step one) are finite differences of D's
        logits under a small input perturbation, taken every `r1_every` D steps with their weight
        scaled by r1_every (lazy regularisation, as StyleGAN2): same expected penalty, less compute.
        """
        c, rt = self.config, self.runtime
        batch = x.shape[0] // 2
        logits = self.disc_logits(features, n)
        d_fake, d_real = logits.chunk(2)
        loss = asd_discriminator_loss(d_fake, d_real)
        logs["logit_gap"] = (d_real - d_fake).mean().item()
        if c.r1_weight > 0 and step % c.r1_every == 0:
            eps = noise_like(x.shape, generator, x.device)
            with torch.no_grad():  # D's parameters get the gradient, not the critic
                perturbed = self.disc_features(x + c.r1_sigma * eps, t, context)
            penalty = finite_difference_penalty(self.disc_logits(perturbed, n), logits, c.r1_sigma)
            r2, r1 = penalty[:batch].mean(), penalty[batch:].mean()
            logs["r1"], logs["r2"] = r1.item(), r2.item()
            loss = loss + c.r1_weight * c.r1_every * (r1 + r2)
        logs["discriminator_loss"] = loss.item()
        applied, norm = apply_update(loss, list(self.discriminator.parameters()), self.opt_discriminator, rt,
                                     c.grad_clip)
        logs["grad_norm/discriminator"] = norm
        if applied:
            self.sched["discriminator"].step()
            return []
        return ["discriminator"]

    def write_samples(self, step: int, directory: Path) -> list[Path]:
        """The EMA generator at the plan it is exported with, on the first prompts (fixed seeds), no CFG."""
        if not samples_wanted(self):
            return []
        return write_sample_videos(self, self.ema, directory, step, plan=self.export_plan(),
                                   context=self.prompts.contexts(list(range(SAMPLE_COUNT))))
