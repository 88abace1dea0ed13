"""Losses and the ASD discriminator: gradients go where the method says, and D can learn."""

import pytest
import torch

from asd_core.discriminator import ASDDiscriminator
from asd_core.losses import (
    add_noise,
    approx_gradient_penalty,
    asd_discriminator_loss,
    asd_generator_loss,
    dmd_loss,
    flow_matching_loss,
    flow_target,
    weigh_at_output,
    x0_from_flow,
)


def test_flow_helpers_round_trip_with_per_frame_sigma():
    x0, noise = torch.randn(2, 4, 3, 5, 5), torch.randn(2, 4, 3, 5, 5)
    sigma = torch.tensor([[0.1, 0.5, 0.9], [1.0, 0.0, 0.3]])
    x_t = add_noise(x0, noise, sigma)
    assert torch.allclose(x_t[1, :, 1], x0[1, :, 1]) and torch.allclose(x_t[1, :, 0], noise[1, :, 0])
    torch.testing.assert_close(x0_from_flow(x_t, flow_target(x0, noise), sigma), x0)
    assert flow_matching_loss(flow_target(x0, noise), x0, noise) == 0


def test_dmd_gradient_is_zero_when_fake_equals_real():
    x = torch.randn(2, 4, 3, 5, 5, requires_grad=True)
    real = torch.randn_like(x)
    loss, _ = dmd_loss(x, real, real.clone())
    loss.backward()
    assert torch.count_nonzero(x.grad) == 0


def test_dmd_gradient_is_the_normalised_score_difference():
    x = torch.randn(2, 4, 3, 5, 5, requires_grad=True)
    real, fake = torch.randn_like(x), torch.randn_like(x)
    loss, logs = dmd_loss(x, real, fake)
    loss.backward()
    normaliser = (x.detach() - real).abs().flatten(1).mean(1).view(-1, 1, 1, 1, 1)
    expected = (fake - real) / normaliser / x.numel()
    torch.testing.assert_close(x.grad, expected)
    assert logs["dmd_grad_norm"] > 0


def test_asd_generator_loss_reaches_the_n_step_branch_only():
    n_step = torch.randn(4, requires_grad=True)
    n_plus_1 = torch.randn(4, requires_grad=True)
    asd_generator_loss(n_step * 2, n_plus_1 * 2).backward()
    assert n_step.grad is not None and n_step.grad.abs().sum() > 0
    assert n_plus_1.grad is None


def test_generator_and_discriminator_push_the_gap_in_opposite_directions():
    d_fake = torch.zeros(3, requires_grad=True)
    d_real = torch.zeros(3, requires_grad=True)
    asd_generator_loss(d_fake, d_real).backward()
    generator_direction = -d_fake.grad  # descent direction on d_fake for the generator
    d_fake.grad = None
    asd_discriminator_loss(d_fake, d_real).backward()
    discriminator_direction = -d_fake.grad
    assert (generator_direction > 0).all() and (discriminator_direction < 0).all()


def test_discriminator_separates_two_distributions():
    torch.manual_seed(0)
    disc = ASDDiscriminator(width=32, num_depths=2, num_n=3, num_queries=2, heads=2)
    optimizer = torch.optim.Adam(disc.parameters(), lr=2e-3)

    # "real" features carry a pattern (first half of the channels raised); a constant offset of
    # every channel would be invisible through the heads' LayerNorm, a pattern is not.
    pattern = torch.cat([torch.full((16,), 0.7), torch.zeros(16)])

    def batch(shift, size=16):
        return [torch.randn(size, 8, 32) + shift * pattern for _ in range(2)]

    for _ in range(200):
        n = torch.randint(1, 4, (16,))
        loss = asd_discriminator_loss(disc(batch(0.0), n), disc(batch(1.0), n))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        n = torch.randint(1, 4, (256,))
        fake, real = disc(batch(0.0, 256), n), disc(batch(1.0, 256), n)
    assert (real > fake).float().mean() > 0.9


def test_discriminator_picks_the_logit_of_each_samples_n_and_checks_inputs():
    torch.manual_seed(1)
    disc = ASDDiscriminator(width=16, num_depths=3, num_n=3, num_queries=2, heads=2)
    features = [torch.randn(2, 5, 16) for _ in range(3)]
    a = disc(features, torch.tensor([1, 3]))
    b = disc(features, torch.tensor([3, 1]))
    assert not torch.allclose(a, b)

    with pytest.raises(ValueError, match="3 depths"):
        disc(features[:2], torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="1..3"):
        disc(features, torch.tensor([0, 4]))


def caption_flipped_pairs(size, width=32, text_dim=8):
    """Pairs whose better branch depends on the caption: under caption A the (n+1)-step branch
    carries a feature pattern and the n-step one its negative, under caption B the reverse. A
    caption-blind head sees each pattern called better half the time; only the caption tells."""
    pattern = torch.cat([torch.full((width // 2,), 0.7), torch.zeros(width // 2)])
    sign = torch.randint(0, 2, (size,)).float() * 2 - 1  # +1: caption A, -1: caption B
    captions = torch.zeros(size, 5, text_dim)
    captions[:, :2, 0] = sign[:, None]  # two real tokens, three padding rows (zero)
    captions[:, :2, 1] = 1.0

    def branch(direction):
        return [torch.randn(size, 8, width) + direction * sign[:, None, None] * pattern for _ in range(2)]

    return branch(-1.0), branch(1.0), captions


@pytest.mark.parametrize("caption_aware", [False, True])
def test_caption_aware_discriminator_ranks_pairs_only_a_caption_can_tell(caption_aware):
    torch.manual_seed(0)
    disc = ASDDiscriminator(width=32, num_depths=2, num_n=1, num_queries=2, heads=2,
                            context_dim=8 if caption_aware else 0)
    optimizer = torch.optim.Adam(disc.parameters(), lr=2e-3)
    for _ in range(200):
        fake, real, captions = caption_flipped_pairs(16)
        loss = asd_discriminator_loss(disc(fake, 1, captions), disc(real, 1, captions))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        fake, real, captions = caption_flipped_pairs(512)
        accuracy = (disc(real, 1, captions) > disc(fake, 1, captions)).float().mean()
    if caption_aware:
        assert accuracy > 0.9
    else:
        assert 0.35 < accuracy < 0.65


def test_caption_aware_discriminator_ignores_padding_and_checks_the_caption():
    torch.manual_seed(2)
    disc = ASDDiscriminator(width=16, num_depths=1, num_n=2, num_queries=2, heads=2, context_dim=8)
    features = [torch.randn(2, 5, 16)]
    caption = torch.randn(2, 3, 8)
    padded = torch.cat([caption, torch.zeros(2, 4, 8)], dim=1)
    assert torch.allclose(disc(features, 1, caption), disc(features, 1, padded), atol=1e-6)
    assert not torch.allclose(disc(features, 1, caption), disc(features, 1, caption.flip(0)))
    assert torch.isfinite(disc(features, 2, torch.zeros(2, 3, 8))).all()  # empty captions: no 0/0
    with pytest.raises(ValueError, match="caption-aware: it needs context"):
        disc(features, 1)
    with pytest.raises(ValueError, match="caption-aware: it needs context"):
        disc(features, 1, torch.randn(2, 3, 4))


def test_finite_difference_penalty_matches_autograd_gradient_norm():
    torch.manual_seed(0)
    dim = 64
    w = torch.randn(dim)
    a = torch.randn(dim, dim) * 0.01
    a = a + a.T

    def d_fn(x):  # smooth toy D: linear + small quadratic, per sample
        return x @ w + 0.5 * ((x @ a) * x).sum(-1)

    x = torch.randn(4096, dim, requires_grad=True)
    d_fn(x).sum().backward()
    autograd = x.grad.square().sum(-1).mean()
    estimate = approx_gradient_penalty(d_fn, x, sigma=1e-3, generator=torch.Generator().manual_seed(0))
    assert abs(estimate.item() / autograd.item() - 1) < 0.05


def _output_and_losses(seed: int):
    """A parameter, an output computed from it (B=3, video-shaped), and two losses of the output."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(3, 2, 2, 3, 3, generator=g, requires_grad=True)
    x = torch.tanh(theta) * 2  # a non-leaf output, like the generator's video
    target = torch.randn(3, 2, 2, 3, 3, generator=g)
    scale = torch.tensor([1.0, 10.0, 0.1]).view(3, 1, 1, 1, 1)  # per-sample gradient sizes differ
    main = 0.5 * (x - target).square().mean()
    extra = (scale * x.sin()).sum(dim=(1, 2, 3, 4)).mean()
    return theta, x, main, extra


def test_fixed_weighting_gives_the_gradient_of_the_weighted_sum():
    theta, x, main, extra = _output_and_losses(0)
    expected, = torch.autograd.grad(main + 0.7 * extra, theta, retain_graph=True)
    loss, logs = weigh_at_output(x, main, extra, 0.7, relative=False)
    got, = torch.autograd.grad(loss, theta)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(loss, (main + 0.7 * extra).detach())
    assert logs["extra_weight"] == pytest.approx(0.7)


def test_relative_weighting_scales_each_samples_extra_gradient_to_a_share_of_the_main_one():
    theta, x, main, extra = _output_and_losses(1)
    g_main, = torch.autograd.grad(main, x, retain_graph=True)
    g_extra, = torch.autograd.grad(extra, x, retain_graph=True)
    loss, logs = weigh_at_output(x, main, extra, 0.5, relative=True)
    at_x, = torch.autograd.grad(loss, x, retain_graph=True)
    extra_part = at_x - g_main  # what the extra loss contributes at the output, per sample
    for i in range(3):
        # Same direction as the extra loss's own gradient, half the main gradient's norm.
        cosine = torch.nn.functional.cosine_similarity(extra_part[i].flatten(), g_extra[i].flatten(), dim=0)
        assert cosine == pytest.approx(1.0, abs=1e-5)
        assert extra_part[i].norm() == pytest.approx(0.5 * g_main[i].norm().item(), rel=1e-5)
    ratios = g_extra.flatten(1).norm(dim=1) / g_main.flatten(1).norm(dim=1)
    assert logs["grad_ratio"] == pytest.approx(ratios.mean().item(), rel=1e-5)
    # The chain rule below the output is untouched: theta gets d x / d theta applied to it.
    got, = torch.autograd.grad(loss, theta, retain_graph=True)
    expected, = torch.autograd.grad(x, theta, grad_outputs=at_x)
    torch.testing.assert_close(got, expected)
