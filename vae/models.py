"""AE and VAE built from one config: the VAE is the AE plus a log-variance head and sampling.

`encode(x)` returns a `Posterior` for both (the AE's is a point mass: no variance, KL 0), so
every caller treats the two models alike and the difference the tutorial teaches is the
difference in this file: `Autoencoder.variational`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import losses
from .config import DATA_RANGES, FAMILIES, KL_ESTIMATORS, LIKELIHOODS, ModelConfig  # noqa: F401 (re-exported)
from .networks import build_decoder, build_encoder  # the families

# log sigma^2 is clamped to this range (as diffusers' DiagonalGaussianDistribution): sigma from
# 3e-7 to 2e4, so a diverging run gives a large loss, not exp(logvar) = inf and NaN gradients
LOGVAR_RANGE = (-30.0, 20.0)


class Posterior:
    """q(z|x) = N(mean, diag exp(logvar)); a point mass at `mean` when logvar is None (the AE)."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor | None = None):
        if logvar is not None:
            logvar = logvar.clamp(*LOGVAR_RANGE)  # no gradient flows through a clamped entry
        self.mean, self.logvar = mean, logvar

    @property
    def std(self) -> torch.Tensor:
        return torch.zeros_like(self.mean) if self.logvar is None else torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """One z ~ q(z|x) per row by `losses.reparameterize`, its eps drawn from `generator` or
        given as `noise` (a compiled training step draws it outside its graph)."""
        if self.logvar is None:
            return self.mean
        if noise is None:
            noise = losses.standard_normal(self.mean.shape, generator, device=self.mean.device, dtype=self.mean.dtype)
        return losses.reparameterize(self.mean, self.std, noise)

    def kl(self) -> torch.Tensor:
        if self.logvar is None:
            return torch.zeros(self.mean.shape[0], device=self.mean.device)
        return losses.kl_closed_form(self.mean, self.logvar)


class Autoencoder(nn.Module):
    """Encoder, decoder and (for a VAE) a log-variance head, built from a `ModelConfig`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder, features = build_encoder(config)
        self.to_mean = nn.Linear(features, config.latent_dim)
        self.to_logvar = nn.Linear(features, config.latent_dim) if config.variational else None
        self.decoder = build_decoder(config)
        if config.likelihood == "gaussian-learned":
            # the tutorial's learned log sigma; starting at sigma = 1 on [0, 1] pixels leaves the
            # reconstruction term nearly silent for the first thousands of steps
            self.log_scale = nn.Parameter(torch.full((1,), float(config.init_log_scale)))
        else:
            self.register_parameter("log_scale", None)

    @property
    def variational(self) -> bool:
        return self.config.variational

    # --- data conversions -------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] images -> float inputs in the model's data range."""
        x = images.to(torch.float32) / 255.0
        return x * 2 - 1 if self.config.data_range == "symmetric" else x

    def to_image(self, output: torch.Tensor) -> torch.Tensor:
        """Decoder output -> displayable images in [0, 1] (the likelihood's mean)."""
        if self.config.likelihood == "bernoulli":
            output = torch.sigmoid(output)
        elif self.config.data_range == "symmetric":
            output = (output + 1) / 2
        return output.clamp(0, 1)

    # --- the model -------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> Posterior:
        h = self.encoder(x)
        logvar = self.to_logvar(h) if self.to_logvar is not None else None
        return Posterior(self.to_mean(h), logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.encode(x)
        return self.decode(q.sample() if self.training else q.mode())

    def reconstruction_nll(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per image, in nats."""
        cfg = self.config
        if cfg.likelihood == "bernoulli":
            return losses.bernoulli_nll(output, x)
        if cfg.likelihood == "gaussian-learned":
            return losses.gaussian_nll(output, x, self.log_scale)
        # fixed variance c = 1/(2 alpha): the NLL is alpha * ||x - f(z)||^2 + const (tutorial's C)
        return losses.gaussian_nll(output, x, 0.5 * math.log(1 / (2 * cfg.recon_weight)))

    def draw_noise(self, batch: int, generator: torch.Generator | None = None, *, device=None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
        """The eps [batch, latent_dim] that `loss(x, generator)` would draw for a float32 batch
        (None for the AE, which draws none): for steps that take the noise as an input."""
        if not self.variational:
            return None
        return losses.standard_normal((batch, self.config.latent_dim), generator, device=device, dtype=dtype)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None,
             beta: float | None = None, noise: torch.Tensor | None = None) -> losses.LossTerms:
        """Per-image loss terms. AE: reconstruction only. VAE: -ELBO with a beta on the KL.
        The VAE's eps is `noise` if given, else drawn from `generator`."""
        q = self.encode(x)
        z = q.sample(generator, noise) if self.variational else q.mode()
        recon = self.reconstruction_nll(self.decode(z), x)
        if not self.variational:
            return losses.LossTerms(recon=recon, kl=torch.zeros_like(recon), total=recon)
        if self.config.kl_estimator == "monte-carlo":
            kl = losses.kl_monte_carlo(z, q.mean, q.logvar)
        else:
            kl = q.kl()
        beta = self.config.beta if beta is None else beta
        return losses.LossTerms(recon=recon, kl=kl, total=recon + beta * kl)

    # --- conveniences for the app (no grad, images in, images out) ----------------------
    @torch.no_grad()
    def decode_images(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_image(self.decode(z))



def build_model(config: ModelConfig) -> Autoencoder:
    return Autoencoder(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["ModelConfig", "Posterior", "Autoencoder", "build_model", "count_parameters"]
