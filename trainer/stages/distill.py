"""Stage 3: Self Forcing DMD + adversarial self-distillation (ASD).

Networks: the generator (causal student, from the ode_init run), its EMA, the frozen teacher
(real score, with CFG), the critic (fake score: the teacher's weights, trained with flow
matching on generated videos) and the ASD discriminator (a light head on the critic's features,
or the frozen teacher's with disc_backbone=teacher).

One iteration (Self Forcing's schedule): the generator is rolled out chunk by chunk with its
own KV cache; the exit step index e ~ U{0..N-1} (or weighted by `exit_weights`) is drawn on
rank 0 and broadcast. The critic is updated every iteration; the generator every `gen_update_ratio`-th with
L_DMD + alpha * L_ASD (`asd_weighting=relative`: alpha fixes the ratio of the two gradients'
norms at the generator's output instead). *(inferred)* ASD's n is the exit step's count, n = e + 1: the
n-step output (with gradient) is compared against the same rollout taken one step further
(the (n+1)-step output, no gradient; `asd_real=rollout`: a separate rollout to n+1 steps from
fresh noise instead); when e is the last step there is no (n+1)-step output and the ASD
terms are skipped, so n is uniform over {1..N-1} (or over `asd_counts`, when given: ASD's
terms run at those n only) whenever they run and asd_weight=0 is exactly Self Forcing's DMD.
Both branches are noised independently (own noise, own timesteps) and scored by D on its
backbone's features at a few depths; the critic gets no gradient from any ASD term. D's noise
levels (disc_min_t..disc_max_t) are lower than DMD's: at DMD's mostly-high levels D never told
the branches apart. D is trained on the same pairs with the relativistic loss plus approximate
R1 (on the (n+1)-step branch) and R2 (on the n-step branch).
FFE-aware training (`ffe_first_plan`): chunk 0 is rolled out with its longer plan to its end.
`exit_plans=per_count`: an n-step exit walks the n-step plan the sampler runs (plan "2" is
[1000, 833.3]) instead of the first n timesteps of the training plan ([1000, 937.5]), so the
2-step output trained is the 2-step output users get; ASD's real branch is then the (n+1)-step
plan's own rollout (`asd_real=same_noise` or `rollout`).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from asd_core.checkpoint import save_checkpoint
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
from asd_core.schedule import parse_plan

from .. import dist
from ..loop import Stage, StepResult, apply_update, step_seed, update_ema, warmup_scheduler
from ..rollout import guided_flow, noise_like, self_forcing_rollout
from ..state import network_state
from .common import (
    SAMPLE_COUNT,
    TEXT_ENCODER_FILE,
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


class DistillStage(Stage):
    name = "distill"

    def __init__(self, config, runtime):
        super().__init__(config, runtime)
        torch.manual_seed(config.seed)
        c = config
        self.frames, self.height, self.width = video_size(c)
        self.first_steps, self.rest_steps = training_plan(c.plan, c.ffe_first_plan)
        self.num_steps = len(self.rest_steps)  # N: the training step count of later chunks
        # per_count: the later chunks' timesteps of an n-step exit, n = 1..N (the sampler's plan "n")
        self.count_plans = {n: tuple(parse_plan(str(n)).rest) for n in range(1, self.num_steps + 1)}
        if c.exit_weights and len(c.exit_weights) != self.num_steps:
            raise ValueError(f"exit_weights {c.exit_weights}: with plan={c.plan!r} (N = {self.num_steps} steps) give "
                             f"one weight per exit count n = 1..{self.num_steps}")
        self.asd_counts = set(c.asd_counts or range(1, self.num_steps))
        if self.asd_counts and max(self.asd_counts) > self.num_steps - 1:
            raise ValueError(f"asd_counts {sorted(self.asd_counts)}: with plan={c.plan!r} (N = {self.num_steps} steps) "
                             f"ASD can compare n-step with (n+1)-step outputs for n = 1..{self.num_steps - 1} only")
        if c.asd_weight > 0 and c.exit_weights and not any(c.exit_weights[n - 1] > 0 for n in self.asd_counts):
            raise ValueError(f"exit_weights {c.exit_weights} never draw an exit ASD runs at (n in "
                             f"{sorted(self.asd_counts)}), so asd_weight={c.asd_weight} would train DMD only: "
                             f"give one of those n a weight > 0, or set asd_weight=0")

        chunk = model_config_of(c.init).chunk_frames
        if self.frames % chunk:
            raise ValueError(f"num_frames={self.frames} must be a multiple of the student's chunk_frames={chunk}")
        self.generator = load_network(c.init, chunk_frames=chunk, device=runtime.device, trainable=True)
        self.teacher = load_network(c.teacher, chunk_frames=self.frames, device=runtime.device, trainable=False)
        self.critic = load_network(c.teacher, chunk_frames=self.frames, device=runtime.device, trainable=True)
        for model in (self.generator, self.critic, self.teacher):  # the teacher: ASD's pass may run through it
            model.gradient_checkpointing = c.gradient_checkpointing
        self.disc_backbone = self.critic if c.disc_backbone == "critic" else self.teacher
        self.model_config = self.generator.config
        self.prompts = PromptSource(c, c.teacher, runtime.device)

        layers = self.critic.config.num_layers
        self.depths = tuple(c.disc_depths or default_depths(layers))
        if any(not 0 <= d < layers for d in self.depths):
            raise ValueError(f"disc_depths {list(self.depths)} must index the critic's {layers} blocks")
        width = self.critic.config.width
        if c.disc_width and c.disc_width != width:
            raise ValueError(f"disc_width={c.disc_width} must equal the critic's width {width} (or 0)")
        heads = next(h for h in (4, 2, 1) if width % h == 0)
        self.discriminator = ASDDiscriminator(width, len(self.depths), max(1, self.num_steps - 1),
                                              num_queries=c.disc_queries, heads=heads,
                                              context_dim=self.critic.config.text_dim if c.disc_caption else 0,
                                              ).to(runtime.device)
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

    def checkpoint_extra(self):
        return {"model_config": self.model_config.to_json(), "plan": self.export_plan(), "vae": self.vae,
                "export_metadata": self.export_metadata()}

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
        sigma = t / 1000.0
        return add_noise(x, noise, sigma), t, sigma, noise

    def exit_timesteps(self, exit_rest: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(first chunk's, later chunks') timesteps walked by a rollout exiting at index `exit_rest`
        on later chunks: the training plan (nested) or the (exit_rest + 1)-step plan (per_count;
        the first chunk too, unless FFE-aware training gives it its own plan)."""
        if self.config.exit_plans == "nested":
            return self.first_steps, self.rest_steps
        rest = self.count_plans[exit_rest + 1]
        return (self.first_steps if self.config.ffe_first_plan else rest), rest

    def rollout(self, noise: torch.Tensor, context: torch.Tensor, exit_rest: int, generator: torch.Generator, *,
                grad: bool, one_more_step: bool = False):
        """The generator rolled out to exit step `exit_rest` on later chunks; the first chunk runs
        its whole FFE plan (ffe_first_plan) or exits at the same step (capped by its plan)."""
        c = self.config
        first_steps, rest_steps = self.exit_timesteps(exit_rest)
        exit_first = len(first_steps) - 1 if c.ffe_first_plan else min(exit_rest, len(first_steps) - 1)
        return self_forcing_rollout(
            self.generator, noise, context, first_steps=first_steps, rest_steps=rest_steps,
            exit_first=exit_first, exit_rest=exit_rest, generator=generator, grad=grad,
            one_more_step=one_more_step, context_noise=c.context_noise)

    @torch.no_grad()
    def separate_rollout(self, noise: torch.Tensor, context: torch.Tensor, exit_rest: int,
                         generator: torch.Generator):
        """ASD's real branch as its own rollout, exiting at `exit_rest`, no gradient: from fresh
        noise (asd_real=rollout) or from the n-step branch's `noise` (asd_real=same_noise)."""
        if self.config.asd_real == "rollout":
            noise = noise_like(noise.shape, generator, self.runtime.device)
        return self.rollout(noise, context, exit_rest, generator, grad=False).video

    def rollout_pair(self, noise: torch.Tensor, context: torch.Tensor, exit_rest: int, generator: torch.Generator, *,
                     grad: bool, with_real: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(n-step output, ASD's (n+1)-step real sample or None), n = exit_rest + 1, the real one
        as `asd_real` says: the same rollout one step further, or a separate rollout."""
        continued = with_real and self.config.asd_real == "continue"
        rollout = self.rollout(noise, context, exit_rest, generator, grad=grad, one_more_step=continued)
        if not with_real:
            return rollout.video, None
        real = rollout.next_video if continued else self.separate_rollout(noise, context, exit_rest + 1, generator)
        return rollout.video, real

    def disc_pair(self, fake: torch.Tensor, real: torch.Tensor, generator: torch.Generator):
        """D's input: the n-step (fake) and (n+1)-step (real) outputs, each noised on its own at
        D's levels, batched n-step half first: (x_t (2B, ...), timesteps (2B,))."""
        fake_t, t_fake, _, _ = self.noised(fake, generator, for_discriminator=True)
        real_t, t_real, _, _ = self.noised(real, generator, for_discriminator=True)
        return torch.cat([fake_t, real_t]), torch.cat([t_fake, t_real])

    def disc_features(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> list[torch.Tensor]:
        """Hidden states at D's depths of its backbone (the critic, or the frozen teacher) for a
        pair batch from `disc_pair` (2B); `context` (B) is the captions, shared by both halves.

        One batched pass over both branches: the same arithmetic per sample, half the calls.
        """
        _, features = self.disc_backbone(x_t, t, torch.cat([context, context]), return_features=self.depths)
        return features

    def disc_logits(self, features: list[torch.Tensor], n: int, context: torch.Tensor) -> torch.Tensor:
        """D's logits (2B,) for a pair batch's features; `context` (B) as for `disc_features`."""
        return self.discriminator(features, n, torch.cat([context, context]))

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
                # Gradients flow through D's backbone into the n-step half; the critic and D are
                # frozen here (the teacher always is), so none of them gets an ASD gradient.
                x, t_pair = self.disc_pair(video, next_video.detach(), generator)
                features = self.disc_features(x, t_pair, context)
                d_fake, d_real = self.disc_logits(features, n, context).chunk(2)
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
        # must come from the same backbone weights (across an update the finite difference would
        # measure the update, not D's slope). On generator iterations D steps on the pair the ASD
        # term just read (the backbone has not moved since; the generator's update does not touch
        # it), which saves a backbone pass; otherwise one batched no-grad pass reads both branches
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
        timesteps, and D's backbone's features at D's depths taken without a graph (D's
        parameters get the gradient, never the backbone).

        R1 (on the (n+1)-step branch) and R2 (on the n-step one) are finite differences of D's
        logits under a small input perturbation, taken every `r1_every` D steps with their weight
        scaled by r1_every (lazy regularisation, as StyleGAN2): same expected penalty, less compute.
        """
        c, rt = self.config, self.runtime
        batch = x.shape[0] // 2
        logits = self.disc_logits(features, n, context)
        d_fake, d_real = logits.chunk(2)
        loss = asd_discriminator_loss(d_fake, d_real)
        logs["logit_gap"] = (d_real - d_fake).mean().item()
        if c.r1_weight > 0 and step % c.r1_every == 0:
            eps = noise_like(x.shape, generator, x.device)
            with torch.no_grad():  # D's parameters get the gradient, not its backbone
                perturbed = self.disc_features(x + c.r1_sigma * eps, t, context)
            penalty = finite_difference_penalty(self.disc_logits(perturbed, n, context), logits, c.r1_sigma)
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

    def export(self, path: Path) -> Path:
        """The EMA generator with its config and plan: the file the loader node reads."""
        weights = network_state(self.ema)  # a collective when sharded
        if not self.runtime.is_main:
            return path
        save_checkpoint(path, weights, self.model_config, plan=self.export_plan(),
                        extra=self.export_metadata())
        if self.prompts.encoder is not None:
            self.prompts.encoder.save(path.parent / TEXT_ENCODER_FILE)
        return path
