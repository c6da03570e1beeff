"""Figures computed from a model and a data split. Every function is seeded and reproducible,
and returns a plain dict of floats.

Likelihood figures are per image, in nats: reconstruction NLL, KL, and -ELBO (= recon + KL,
beta = 1, whatever beta the model trained with, so models compare on one scale); the
importance-weighted bound of Burda et al. (2016) tightens -ELBO towards -log p(x).

The latent-space figures ask what the tutorial asks of a generative latent space, with a
reference classifier (`vae.classifier`) as the judge:
- completeness: do codes drawn from the prior (or from the box the test codes span) decode to
  images the classifier recognises, and of every class?
- continuity: does a straight line between two codes decode to a smooth morph, without a jump
  and without passing through unrecognisable images?
- the Fréchet distance between classifier features of prior samples and of test images.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import losses
from .data import ImageSplit
from .errors import ConfigError
from .latent import decode_codes, encode_means, evaluating, posteriors, sample_codes
from .models import Autoencoder


@torch.no_grad()
def likelihood_metrics(model: Autoencoder, split: ImageSplit, batch_size: int = 1000, seed: int = 0,
                       device: torch.device | str | None = None) -> dict[str, float]:
    """Test-set means: recon, kl, neg_elbo (VAE only), loss (the training objective), bits_per_dim.

    The VAE's terms use one posterior sample per image (the ELBO is an expectation over q);
    the AE's use its code. bits/dim is reported for Gaussian likelihoods on colour images.
    """
    device = torch.device(device) if device else next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    sums = {"recon": 0.0, "kl": 0.0, "loss": 0.0}
    with evaluating(model):  # the trainer's models: back in training mode even if this raises
        for images, _ in split.batches(batch_size, shuffle=False):
            x = model.preprocess(images.to(device))
            terms = model.loss(x, generator=gen)
            sums["recon"] += float(terms.recon.sum())
            sums["kl"] += float(terms.kl.sum())
            sums["loss"] += float(terms.total.sum())
    out = {k: v / len(split) for k, v in sums.items()}
    cfg = model.config
    if cfg.variational:
        out["neg_elbo"] = out["recon"] + out["kl"]
    if cfg.likelihood != "bernoulli" and cfg.image_shape[0] == 3:
        nll = out.get("neg_elbo", out["recon"])
        bin_width = (2 if cfg.data_range == "symmetric" else 1) / 256
        out["bits_per_dim"] = losses.bits_per_dim(nll, cfg.num_pixels, bin_width)
    return out


# --- the judges' verdicts -------------------------------------------------------------------------
def class_evenness(predicted: torch.Tensor, num_classes: int) -> float:
    """Normalised entropy H(class histogram) / log K: 1 when every class is predicted equally
    often, 0 when one class takes every sample."""
    share = torch.bincount(predicted, minlength=num_classes).double() / max(len(predicted), 1)
    share = share[share > 0]
    return max(0.0, float(-(share * share.log()).sum() / math.log(num_classes)))  # no "-0.0"


def confidence_summary(probs: torch.Tensor, threshold: float = 0.9) -> dict[str, float]:
    """Share of images the classifier gives one class >= threshold, mean top probability, evenness."""
    confidence, predicted = probs.max(1)
    return {"confident_share": float((confidence >= threshold).double().mean()),
            "mean_confidence": float(confidence.double().mean()),
            "class_evenness": class_evenness(predicted, probs.shape[1])}


# --- completeness -----------------------------------------------------------------------------------
def completeness(model: Autoencoder, classifier, n: int = 2000, seed: int = 0, source: str = "prior",
                 box_codes: torch.Tensor | None = None, threshold: float = 0.9) -> dict[str, float]:
    """Decode n codes from the prior N(0, I) (what sampling a VAE means) or from the box around
    box_codes (fairer to an AE, whose codes need not sit near the origin) and ask the classifier.

    confident_share: images with max class probability >= threshold; class_evenness: normalised
    entropy of the predicted-class histogram over all n samples; mean_confidence.
    """
    z = sample_codes(model.config.latent_dim, n, seed, source, box_codes)
    return confidence_summary(classifier.probs(decode_codes(model, z)), threshold)


def reference_confidence_share(classifier, images: torch.Tensor, threshold: float = 0.9) -> dict[str, float]:
    """The same figures for real images (uint8 or [0, 1] floats): the ceiling completeness is read against."""
    return confidence_summary(classifier.probs(images), threshold)


# --- continuity ---------------------------------------------------------------------------------------
def continuity(model: Autoencoder, split: ImageSplit, classifier, n_pairs: int = 200, steps: int = 16,
               seed: int = 0) -> dict[str, float]:
    """Straight lines z(t) = (1 - t) z_a + t z_b between posterior means of random test pairs,
    decoded at steps + 1 evenly spaced t.

    max_step_share: the largest pixel-space step's share of the path length; 1/steps (reported
    as even_share) is a perfectly even morph, 1 a single jump. min_confidence: the classifier's
    lowest top-class probability along the path (low: the path crosses unrecognisable images).
    """
    if steps < 1 or n_pairs < 1 or 2 * n_pairs > len(split):
        raise ConfigError(f"n_pairs={n_pairs}, steps={steps} invalid: need steps >= 1 and "
                          f"1 <= 2 * n_pairs <= {len(split)}")
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:2 * n_pairs]
    codes = encode_means(model, split.images[idx])
    start, end = codes[:n_pairs], codes[n_pairs:]
    t = torch.linspace(0, 1, steps + 1)[None, :, None]
    paths = start[:, None] + t * (end - start)[:, None]  # [P, steps + 1, D]
    images = decode_codes(model, paths.flatten(0, 1))
    frames = images.view(n_pairs, steps + 1, -1)
    step_len = (frames[:, 1:] - frames[:, :-1]).norm(dim=2)  # Euclidean pixel distance per step
    total = step_len.sum(1)
    share = torch.where(total > 0, step_len.max(1).values / total.clamp_min(1e-12), torch.tensor(1 / steps))
    lowest = classifier.probs(images).max(1).values.view(n_pairs, steps + 1).min(1).values
    return {"max_step_share_mean": float(share.mean()), "max_step_share_median": float(share.median()),
            "min_confidence_mean": float(lowest.mean()), "min_confidence_median": float(lowest.median()),
            "even_share": 1 / steps}


# --- Fréchet distance ---------------------------------------------------------------------------------
def frechet_distance(features_a, features_b, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, F] (Dowson & Landau 1982;
    the FID of Heusel et al. 2017 with our classifier's features in place of Inception's):

        d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))

    In float64; when the product is near-singular, sqrtm is retried with eps * I added to both
    covariances (as pytorch-fid does); a negligible imaginary part from round-off is dropped.
    """
    from scipy import linalg

    a, b = (np.asarray(torch.as_tensor(f).double().cpu(), dtype=np.float64) for f in (features_a, features_b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ConfigError(f"feature sets of shapes {a.shape} and {b.shape}: expected [N, F] with the same F, N >= 2")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        offset = eps * np.eye(len(cov_a))
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real  # imaginary parts are round-off for PSD inputs
    d2 = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))
    return max(d2, 0.0)


def sample_fid(model: Autoencoder, classifier, split: ImageSplit, n: int = 2000, seed: int = 0) -> dict[str, float]:
    """Fréchet distance between classifier features of n decoded prior samples and n test images."""
    real = split.subset(n, seed).images
    fake = decode_codes(model, sample_codes(model.config.latent_dim, n, seed))
    return {"frechet_distance": frechet_distance(classifier.features(fake), classifier.features(real))}


# --- the latent dimensions in use ----------------------------------------------------------------------
def kl_per_dimension(model: Autoencoder, split: ImageSplit, batch_size: int = 1000) -> dict[str, float]:
    """Mean over x of KL(q(z_j|x) || N(0, 1)) per latent dimension j, keys "z0", "z1", ...
    (the summands of `losses.kl_closed_form`); all 0 for the AE, which has no posterior variance."""
    total = torch.zeros(model.config.latent_dim, dtype=torch.float64)
    for _, q in posteriors(model, split.images, batch_size):
        if q.logvar is not None:
            total += losses.kl_closed_form_terms(q.mean, q.logvar).sum(0).double().cpu()
    return {f"z{j}": float(v) for j, v in enumerate(total / len(split))}


def active_units(model: Autoencoder, split: ImageSplit, threshold: float = 0.01,
                 batch_size: int = 1000) -> dict[str, float]:
    """Burda et al. (2016), Sec. 5.2: unit u is active if A_u = Cov_x(E_{u~q(u|x)}[u]) > 0.01.

    For the AE the code scale is arbitrary, so the 0.01 threshold means less than for a VAE,
    whose prior fixes the scale.
    """
    activity = encode_means(model, split.images, batch_size).double().var(0)
    return {"active_units": float((activity > threshold).sum()), "latent_dim": float(len(activity))}


# --- importance-weighted likelihood ----------------------------------------------------------------------
@torch.no_grad()
def iwae_nll(model: Autoencoder, split: ImageSplit, k: int = 100, seed: int = 0, n_images: int = 1000,
             batch_size: int | None = None) -> dict[str, float]:
    """-log p(x) estimated with k importance samples from q(z|x) (Burda et al. 2016, eq. 8):

        log p(x) >= log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),  z_i ~ q(z|x)

    The bound tightens as k grows (k = 1 is the ELBO). The AE defines no density, so for it the
    result is empty. Averaged over a fixed random subset of n_images test images, in nats.
    """
    if not model.config.variational:
        return {}
    if k < 1:
        raise ConfigError(f"k={k!r} is invalid: expected an integer >= 1")
    images = split.subset(n_images, seed).images
    gen = torch.Generator().manual_seed(seed)
    batch_size = batch_size or max(1, 4096 // k)
    total = 0.0
    for x, q in posteriors(model, images, batch_size):
        eps = losses.standard_normal((len(x), k, q.mean.shape[1]), gen).to(q.mean.device)
        mean, logvar = q.mean[:, None], q.logvar[:, None]
        z = losses.reparameterize(mean, q.std[:, None], eps)  # [B, k, D]
        log_q = losses.log_normal(z, mean, logvar).sum(2)
        log_p = losses.log_normal(z).sum(2)
        log_px_z = -model.reconstruction_nll(model.decode(z.flatten(0, 1)), x.repeat_interleave(k, 0))
        log_w = log_px_z.view(len(x), k) + log_p - log_q
        total -= float((torch.logsumexp(log_w, dim=1) - math.log(k)).sum())
    out = {"iwae_nll": total / len(images)}
    cfg = model.config
    if cfg.likelihood != "bernoulli" and cfg.image_shape[0] == 3:
        bin_width = (2 if cfg.data_range == "symmetric" else 1) / 256
        out["iwae_bits_per_dim"] = losses.bits_per_dim(out["iwae_nll"], cfg.num_pixels, bin_width)
    return out
