"""Training losses: flow matching, DMD, and ASD's relativistic GAN with approximate R1/R2.

Conventions (as the sampler): sigma = t / 1000, x_t = (1 - sigma) x0 + sigma * noise, the
network predicts the flow (noise - x0). Latents are (B, C, F, H, W); sigma may be a scalar,
per sample (B,) or per frame (B, F) (diffusion forcing).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _broadcast_sigma(sigma, like: torch.Tensor) -> torch.Tensor:
    """scalar / (B,) / (B, F) -> broadcastable over (B, C, F, H, W)."""
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if sigma.ndim == 0:
        return sigma
    if sigma.ndim == 1:
        return sigma.view(-1, 1, 1, 1, 1)
    if sigma.ndim == 2:
        return sigma[:, None, :, None, None]
    raise ValueError(f"sigma must be a scalar, (B,) or (B, F), got shape {tuple(sigma.shape)}")


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma) -> torch.Tensor:
    """Rectified-flow interpolation x_t = (1 - sigma) x0 + sigma noise."""
    s = _broadcast_sigma(sigma, x0)
    return (1 - s) * x0 + s * noise


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity a flow-matching network regresses (Lipman et al. 2023): noise - x0."""
    return noise - x0


def x0_from_flow(x_t: torch.Tensor, flow: torch.Tensor, sigma) -> torch.Tensor:
    """Clean sample implied by a flow prediction: x0 = x_t - sigma * flow."""
    return x_t - _broadcast_sigma(sigma, x_t) * flow


def flow_matching_loss(pred_flow: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """Flow-matching MSE (Lipman et al. 2023; Wan's training objective), optionally weighted per sample."""
    error = (pred_flow.float() - flow_target(x0, noise).float()).square().flatten(1).mean(1)  # (B,)
    if weight is not None:
        error = error * weight
    return error.mean()


def dmd_loss(x: torch.Tensor, pred_real_x0: torch.Tensor, pred_fake_x0: torch.Tensor,
             eps: float = 1e-6) -> tuple[torch.Tensor, dict[str, float]]:
    """Distribution matching distillation (Yin et al. 2024), normalised as in Self Forcing.

    grad = (fake - real) / mean|x - real| per sample; the loss 0.5 * ||x - (x - grad)||^2 / N
    has d loss / dx = grad / N, so the generator moves along the score difference.
    """
    with torch.no_grad():
        real, fake = pred_real_x0.float(), pred_fake_x0.float()
        normaliser = (x.float() - real).abs().flatten(1).mean(1).clamp_min(eps).view(-1, *[1] * (x.ndim - 1))
        grad = torch.nan_to_num((fake - real) / normaliser)
        target = (x.float() - grad).detach()
    loss = 0.5 * F.mse_loss(x.float(), target)
    return loss, {"dmd_grad_norm": grad.norm().item(), "dmd_normaliser": normaliser.mean().item()}


def asd_generator_loss(d_fake: torch.Tensor, d_real: torch.Tensor) -> torch.Tensor:
    """ASD generator side of the relativistic pairing GAN (Jolicoeur-Martineau 2019; R3GAN, Huang et al. 2024).

    d_fake = D(noised n-step output) carries the gradient; d_real = D(noised (n+1)-step
    output) is the "real" branch and is detached here: the loss acts on the n-step branch only.
    """
    return F.softplus(-(d_fake - d_real.detach())).mean()


def asd_discriminator_loss(d_fake: torch.Tensor, d_real: torch.Tensor) -> torch.Tensor:
    """ASD discriminator side: rank the (n+1)-step sample above the n-step one (inputs detached upstream)."""
    return F.softplus(d_fake - d_real).mean()


def approx_gradient_penalty(d_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, sigma: float = 0.01,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """Approximate R1/R2 by finite differences (no double backward), as in e.g. SANA-Sprint / APT.

    mean((D(x + sigma*eps) - D(x))^2) / sigma^2 with eps ~ N(0, I) estimates E||grad_x D||^2,
    since D(x + sigma eps) - D(x) ~ sigma <grad, eps> and E<grad, eps>^2 = ||grad||^2.
    R1 applies it to real samples, R2 to fake ones; gradients flow into D's parameters only.
    """
    x = x.detach()
    eps = torch.randn(x.shape, generator=generator, device="cpu" if generator is not None else x.device,
                      dtype=x.dtype).to(x.device)
    return finite_difference_penalty(d_fn(x + sigma * eps), d_fn(x), sigma).mean()


def finite_difference_penalty(d_perturbed: torch.Tensor, d_clean: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-sample (D(x + sigma*eps) - D(x))^2 / sigma^2: the estimate above, when D(x) is already at hand."""
    return (d_perturbed - d_clean).float().square() / sigma**2


def weigh_at_output(x: torch.Tensor, main: torch.Tensor, extra: torch.Tensor, weight: float,
                    relative: bool, eps: float = 1e-12) -> tuple[torch.Tensor, dict[str, float]]:
    """main + w * extra as one loss, with w set from both losses' gradients at the output x.

    Why: with a fixed alpha the ASD gradient's share of the generator's update is whatever D
    makes it, and students collapsed once D learned (docs/results.md). Taking both gradients
    at x (the generator's output; neither pass reaches the generator, so this is cheap) lets
    `relative=True` fix the share instead: per sample, ||w g_extra|| = weight * ||g_main||
    (VQGAN's adaptive weight, taken at the output rather than at the last layer). With
    `relative=False`, w = weight, the same gradient as backward of main + weight * extra.

    Returns (loss, logs). The loss's value is main + mean(w) * extra; its backward sends exactly
    g_main + w * g_extra into x, so the generator's backward runs once. The graph from `extra`
    to x is consumed here. logs: grad_ratio = mean ||g_extra|| / ||g_main|| (unweighted),
    extra_weight = mean(w).
    """
    g_main, = torch.autograd.grad(main, x, retain_graph=True)
    g_extra, = torch.autograd.grad(extra, x)
    norm_main = g_main.float().flatten(1).norm(dim=1)
    norm_extra = g_extra.float().flatten(1).norm(dim=1)
    ratio = norm_extra / norm_main.clamp_min(eps)
    if relative:
        w = weight * norm_main / norm_extra.clamp_min(eps)
    else:
        w = torch.full_like(norm_main, weight)
    direction = g_main.float() + w.view(-1, *[1] * (x.ndim - 1)) * g_extra.float()
    along = (x.float() * direction).sum()
    value = (main + w.mean() * extra).detach()
    return along - along.detach() + value, {"grad_ratio": ratio.mean().item(), "extra_weight": w.mean().item()}
