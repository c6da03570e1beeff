"""Loss terms of the AE and the VAE, each per image, in nats.

The VAE maximises the evidence lower bound (tutorial, "Mathematical details"):

    ELBO(x) = E_{z~q(z|x)}[log p(x|z)] - KL(q(z|x) || p(z))

We minimise -ELBO = reconstruction NLL + KL; a beta weight on the KL gives the beta-VAE.
The tutorial's listing calls `kl - recon_loss` "elbo": that quantity is the *negative*
ELBO (a loss), which is what `negative_elbo` returns here, named for what it is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class LossTerms:
    """Per-image loss terms (shape [B]); `total` is what the optimiser minimises."""

    recon: torch.Tensor
    kl: torch.Tensor
    total: torch.Tensor


def _per_image(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) for a Bernoulli decoder, x in [0, 1] (Kingma & Welling 2014, App. C.1).

    On grey-level pixels this is the cross-entropy used by the PyTorch VAE example; strictly
    a density needs the continuous-Bernoulli normaliser (Loaiza-Ganem & Cunningham 2019),
    which we leave out so the numbers compare with the literature's MNIST figures.
    """
    # BCE-with-logits written out, max(l, 0) - l x + log(1 + e^-|l|): the same value, but this
    # CPU build of torch does not vectorise log1p (bench/README.md, "Figures behind the code")
    return _per_image(logits.clamp_min(0) - logits * x + torch.log(1 + torch.exp(-logits.abs())))


def gaussian_nll(mean: torch.Tensor, x: torch.Tensor, log_scale: torch.Tensor | float) -> torch.Tensor:
    """-log N(x; mean, sigma^2 I) with sigma = exp(log_scale), summed over pixels.

    With a fixed sigma^2 = c this is the tutorial's C * ||x - f(z)||^2 (C = 1/(2c)) plus the
    constant D/2 log(2 pi c) that makes it a proper likelihood; with a learned log_scale it is
    the tutorial's CIFAR-10 `gaussian_likelihood` (negated: a loss, not a log-probability).
    """
    log_scale = torch.as_tensor(log_scale, dtype=mean.dtype, device=mean.device)
    sq = (x - mean).pow(2) * torch.exp(-2 * log_scale) / 2
    return _per_image(sq + log_scale + 0.5 * LOG_2PI)


# --- the posterior q(z|x) = N(mu, diag sigma^2) and the prior p(z) = N(0, I) ------------------------
def standard_normal(shape, generator: torch.Generator | None = None, *, device=None,
                    dtype: torch.dtype | None = None) -> torch.Tensor:
    """eps ~ N(0, I): the noise of the reparameterisation, the one place it is drawn (the
    trainer's backends draw the same numbers from the same generator state)."""
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


def reparameterize(mu: torch.Tensor, std: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I): a sample of q(z|x) that is a differentiable function of
    mu and sigma (the reparameterisation trick; Kingma & Welling 2014, Sec. 2.4; tutorial eq.)."""
    return mu + std * eps


def kl_closed_form_terms(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The summands of `kl_closed_form`, one per latent dimension: [B, D]."""
    return 0.5 * (logvar.exp() + mu.pow(2) - 1 - logvar)


def kl_closed_form(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)) = 1/2 sum(sigma^2 + mu^2 - 1 - ln sigma^2) (tutorial eq.)."""
    return kl_closed_form_terms(mu, logvar).sum(1)


def log_normal(z: torch.Tensor, mu: torch.Tensor | float = 0.0, logvar: torch.Tensor | float = 0.0) -> torch.Tensor:
    """log N(z; mu, sigma^2) per element, sigma^2 = exp(logvar): the prior's log-density by default."""
    logvar = torch.as_tensor(logvar, dtype=z.dtype, device=z.device)
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar))


def kl_monte_carlo(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """One-sample estimate log q(z|x) - log p(z) at z ~ q (the tutorial's CIFAR-10 listing).

    Unbiased but noisy; its mean over samples converges to `kl_closed_form`.
    """
    return (log_normal(z, mu, logvar) - log_normal(z)).sum(1)


def bits_per_dim(nll_nats: torch.Tensor | float, num_dims: int, bin_width: float = 1 / 256) -> float:
    """Convert a per-image NLL of a continuous density over pixels into bits/dim.

    Pixels are discrete (256 levels); the probability of a pixel's bin is about
    p(x) * bin_width per dimension, hence the -D * log(bin_width) term (Theis et al. 2016).
    The bin is 1/256 for data on [0, 1] and 2/256 for the tutorial's [-1, 1] data.
    """
    nll = float(torch.as_tensor(nll_nats).mean())
    return (nll - num_dims * math.log(bin_width)) / (num_dims * math.log(2))
