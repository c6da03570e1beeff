import math

import torch
from torch.distributions import Normal, kl_divergence

from vae import losses


def test_closed_form_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(losses.kl_closed_form(mu, logvar), expected, atol=1e-5)


def test_kl_is_zero_only_at_the_prior():
    assert torch.allclose(losses.kl_closed_form(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))
    assert (losses.kl_closed_form(torch.ones(2, 3), torch.zeros(2, 3)) > 0).all()


def test_monte_carlo_kl_converges_to_closed_form():
    torch.manual_seed(0)
    mu, logvar = torch.randn(1, 4).expand(200_000, 4), torch.randn(1, 4).expand(200_000, 4)
    z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
    mc = losses.kl_monte_carlo(z, mu, logvar).mean()
    assert abs(float(mc) - float(losses.kl_closed_form(mu[:1], logvar[:1]))) < 0.05


def test_gaussian_nll_matches_torch_normal_and_tutorial_weight():
    torch.manual_seed(0)
    x, mean = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    log_scale = torch.tensor(0.3)
    expected = -Normal(mean, log_scale.exp()).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(losses.gaussian_nll(mean, x, log_scale), expected, atol=1e-4)
    # fixed variance c = 1/(2 alpha): the NLL is alpha * ||x - mean||^2 plus a constant
    alpha = 2.0
    c = 1 / (2 * alpha)
    nll = losses.gaussian_nll(mean, x, 0.5 * math.log(c))
    const = 16 * 0.5 * math.log(2 * math.pi * c)
    assert torch.allclose(nll, alpha * (x - mean).pow(2).flatten(1).sum(1) + const, atol=1e-4)


def test_bernoulli_nll_is_bce_summed_per_image():
    logits = torch.zeros(2, 1, 2, 2)
    x = torch.ones(2, 1, 2, 2)
    assert torch.allclose(losses.bernoulli_nll(logits, x), torch.full((2,), 4 * math.log(2)))


def test_bits_per_dim_of_uniform_density_is_eight():
    # a uniform density on [0, 1] has NLL 0; each of 256 levels then has probability 1/256: 8 bits
    assert abs(losses.bits_per_dim(0.0, 3072) - 8.0) < 1e-9
    assert abs(losses.bits_per_dim(0.0, 10, bin_width=2 / 256) - 7.0) < 1e-9


def test_bernoulli_nll_matches_torch_bce_with_logits():
    import torch.nn.functional as F

    torch.manual_seed(0)
    logits, x = torch.randn(4, 1, 8, 8) * 10, torch.rand(4, 1, 8, 8)
    expected = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    assert torch.allclose(losses.bernoulli_nll(logits, x), expected, atol=1e-4)
