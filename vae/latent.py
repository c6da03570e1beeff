"""Encoding, decoding and sampling: the one place a model turns images into codes and back.

Everything here runs without gradients, in eval mode (BatchNorm must use its running
statistics, not the batch's), and is seeded. Two layers: torch in, torch out for the scores
(`posteriors`, `encode_means`, `decode_codes`, `sample_codes`: images [N, C, H, W]), and on top
of them numpy arrays ready to plot for the pages: codes as float32 [N, d], images as float32
[M, H, W, C] in [0, 1] (channels-last, as plotting wants).
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from .codes import Codes
from .data import ImageSplit
from .errors import ConfigError
from .models import Autoencoder


@contextmanager
def evaluating(model: torch.nn.Module):
    """The model in eval mode inside the block, back in its own mode after (even if it raises):
    the trainer's and the app's shared models are evaluated mid-training."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _device(module: torch.nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


# --- torch in, torch out: what the scores use ---------------------------------------------------
@torch.no_grad()
def posteriors(model: Autoencoder, images: torch.Tensor, batch_size: int = 1000):
    """Yield (x, q(z|x)) per batch of uint8 images [N, C, H, W], in order, the model in eval mode."""
    with evaluating(model):
        for chunk in images.split(batch_size):
            x = model.preprocess(chunk.to(_device(model)))
            yield x, model.encode(x)


def encode_means(model: Autoencoder, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Posterior means E_q[z|x] [N, latent_dim] (the AE's codes) of uint8 images, on the CPU."""
    means = [q.mean.cpu() for _, q in posteriors(model, images, batch_size)]
    return torch.cat(means) if means else torch.zeros(0, model.config.latent_dim)


@torch.no_grad()
def decode_codes(model: Autoencoder, z: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Codes -> images in [0, 1] [N, C, H, W], on the CPU, the model in eval mode."""
    with evaluating(model):
        images = [model.decode_images(c.to(_device(model))).cpu() for c in z.split(batch_size)]
    return torch.cat(images) if images else torch.zeros(0, *model.config.image_shape)


def sample_codes(latent_dim: int, n: int, seed: int, source: str = "prior",
                 box_codes: torch.Tensor | None = None) -> torch.Tensor:
    """n codes from N(0, I) ("prior"), or uniform in the per-dimension [min, max] box of box_codes:
    the samples the judges score (torch's generator; the pages' pictures come from numpy's, below)."""
    gen = torch.Generator().manual_seed(seed)
    if source == "prior":
        return torch.randn(n, latent_dim, generator=gen)
    if source != "box":
        raise ConfigError(f"source={source!r} is invalid: expected 'prior' or 'box'")
    if box_codes is None or len(box_codes) < 2:
        raise ConfigError("source='box' needs box_codes: at least two codes (e.g. encode_means of test images)")
    lo, hi = box_codes.min(0).values.cpu(), box_codes.max(0).values.cpu()
    return lo + (hi - lo) * torch.rand(n, latent_dim, generator=gen)


# --- numpy out: what the pages plot ---------------------------------------------------------------
def encode_split(model: Autoencoder, split: ImageSplit, batch_size: int = 1000) -> Codes:
    """Encode every image of `split` in order; maps use the posterior mode (its mean)."""
    means, logvars = [], []
    for _, q in posteriors(model, split.images, batch_size):
        means.append(q.mode().float().cpu())
        if q.logvar is not None:
            logvars.append(q.logvar.float().cpu())
    mean = torch.cat(means).numpy() if means else np.zeros((0, model.config.latent_dim), np.float32)
    logvar = torch.cat(logvars).numpy() if logvars else None
    return Codes(mean=mean, logvar=logvar, labels=split.labels.numpy().astype(np.int64))


def decode_points(model: Autoencoder, z: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Latent points [M, d] (or one point [d]) -> images float32 [M, H, W, C] in [0, 1]."""
    z = torch.from_numpy(_as_points(z, model.config.latent_dim, "z"))
    return decode_codes(model, z, batch_size).permute(0, 2, 3, 1).float().numpy()


def _as_points(z, dim: int, name: str) -> np.ndarray:
    z = np.atleast_2d(np.asarray(z, dtype=np.float32))
    if z.ndim != 2 or z.shape[1] != dim:
        raise ConfigError(f"{name} has shape {z.shape}: expected [M, {dim}] (or one point [{dim}])")
    return np.ascontiguousarray(z)


# --- paths and samples -----------------------------------------------------------------
def interpolation_path(z_a: np.ndarray, z_b: np.ndarray, steps: int = 10) -> np.ndarray:
    """`steps` points on the straight line from z_a to z_b, both ends included: [steps, d]."""
    if steps < 2:
        raise ConfigError(f"steps={steps!r} is invalid: expected at least 2 (both ends are included)")
    z_a, z_b = (np.asarray(z, dtype=np.float32).reshape(-1) for z in (z_a, z_b))
    if z_a.shape != z_b.shape:
        raise ConfigError(f"z_a has {z_a.size} dimensions but z_b has {z_b.size}")
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    return (1 - t) * z_a + t * z_b


def interpolate(model: Autoencoder, z_a: np.ndarray, z_b: np.ndarray, steps: int = 10) -> np.ndarray:
    """Decode the straight line from z_a to z_b: images [steps, H, W, C]."""
    return decode_points(model, interpolation_path(z_a, z_b, steps))


def sample_prior(model: Autoencoder, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n draws z ~ N(0, I) (the VAE's prior) and their images."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, model.config.latent_dim)).astype(np.float32)
    return z, decode_points(model, z)


def sample_box(model: Autoencoder, codes_mean: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n draws uniform in the axis-aligned box spanned by the codes (per-dimension min/max).

    The AE has no prior to sample from; "somewhere among its codes" is the fair comparison,
    and the empty space inside that box is what the tutorial shows it decodes badly.
    """
    codes_mean = _as_points(codes_mean, model.config.latent_dim, "codes_mean")
    if len(codes_mean) == 0:
        raise ConfigError("codes_mean is empty: encode some images first")
    rng = np.random.default_rng(seed)
    z = rng.uniform(codes_mean.min(axis=0), codes_mean.max(axis=0), (n, codes_mean.shape[1]))
    z = z.astype(np.float32)
    return z, decode_points(model, z)


__all__ = [
    "decode_codes", "decode_points", "encode_means", "encode_split", "evaluating", "interpolate",
    "interpolation_path", "posteriors", "sample_box", "sample_codes", "sample_prior",
]
