"""Figures computed from a model and a data split. Every function is seeded and reproducible.

Likelihood figures are per image, in nats: reconstruction NLL, KL, and -ELBO (= recon + KL,
beta = 1, whatever beta the model trained with, so models compare on one scale).
"""
from __future__ import annotations

import torch

from . import losses
from .data import ImageSplit
from .models import Autoencoder


@torch.no_grad()
def likelihood_metrics(model: Autoencoder, split: ImageSplit, batch_size: int = 1000, seed: int = 0,
                       device: torch.device | str | None = None) -> dict[str, float]:
    """Test-set means: recon, kl, neg_elbo (VAE only), loss (the training objective), bits_per_dim.

    The VAE's terms use one posterior sample per image (the ELBO is an expectation over q);
    the AE's use its code. bits/dim is reported for Gaussian likelihoods on colour images.
    """
    device = torch.device(device) if device else next(model.parameters()).device
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    sums = {"recon": 0.0, "kl": 0.0, "loss": 0.0}
    for images, _ in split.batches(batch_size, shuffle=False):
        x = model.preprocess(images.to(device))
        terms = model.loss(x, generator=gen)
        sums["recon"] += float(terms.recon.sum())
        sums["kl"] += float(terms.kl.sum())
        sums["loss"] += float(terms.total.sum())
    model.train(was_training)
    out = {k: v / len(split) for k, v in sums.items()}
    cfg = model.config
    if cfg.variational:
        out["neg_elbo"] = out["recon"] + out["kl"]
    if cfg.likelihood != "bernoulli" and cfg.image_shape[0] == 3:
        nll = out.get("neg_elbo", out["recon"])
        bin_width = (2 if cfg.data_range == "symmetric" else 1) / 256
        out["bits_per_dim"] = losses.bits_per_dim(nll, cfg.num_pixels, bin_width)
    return out
