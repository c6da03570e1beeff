"""Encoding, decoding and sampling: the one place a model turns images into codes and back.

Everything here runs without gradients, in eval mode (BatchNorm must use its running
statistics, not the batch's), and is seeded. Two layers: torch in, torch out for the scores
(`posteriors`, `encode_means`, `decode_codes`, `sample_codes`: images [N, C, H, W]), and on top
of them numpy arrays ready to plot for the pages: codes as float32 [N, d], images as float32
[M, H, W, C] in [0, 1] (channels-last, as plotting wants).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm

from .data import ImageSplit
from .errors import ConfigError
from .models import Autoencoder


@dataclass(frozen=True)
class Codes:
    """Posterior parameters of a split: the mean (the mode, used for maps) and, for a VAE, the log-variance."""

    mean: np.ndarray  # float32 [N, d]
    logvar: np.ndarray | None  # float32 [N, d]; None for the AE (a point mass)
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return self.mean.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.mean.shape[1]

    @property
    def std(self) -> np.ndarray | None:
        return None if self.logvar is None else np.exp(0.5 * self.logvar)


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


# --- 2-D grids for the grid decoder --------------------------------------------------------
def _grid_from_axes(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    # row-major with the top row at max y, so decoded tiles read like the plot above them
    gx, gy = np.meshgrid(xs, ys[::-1])
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def grid_points_2d(xlim: tuple[float, float], ylim: tuple[float, float], n: int) -> np.ndarray:
    """n x n evenly spaced points covering xlim x ylim: [n*n, 2], row-major, top row = max y."""
    _check_grid_size(n)
    return _grid_from_axes(np.linspace(*xlim, n), np.linspace(*ylim, n))


def gaussian_grid_2d(n: int, eps: float = 0.05) -> np.ndarray:
    """n x n points at the N(0, 1) quantiles of linspace(eps, 1 - eps, n) per axis.

    Every cell holds the same prior mass (the Keras VAE example's norm.ppf grid), so the grid
    is dense near the origin where the prior puts its codes. Layout as in `grid_points_2d`.
    """
    _check_grid_size(n)
    if not 0 < eps < 0.5:
        raise ConfigError(f"eps={eps!r} is invalid: expected 0 < eps < 0.5 (norm.ppf(0) is -inf)")
    axis = norm.ppf(np.linspace(eps, 1 - eps, n))
    return _grid_from_axes(axis, axis)


def _check_grid_size(n: int) -> None:
    if not (isinstance(n, (int, np.integer)) and n >= 2):
        raise ConfigError(f"n={n!r} is invalid: expected an integer >= 2 points per side")


def padded_limits(points_2d: np.ndarray, margin: float = 0.05) -> tuple[tuple[float, float], tuple[float, float]]:
    """(xlim, ylim) around the points, widened by `margin` of each range: one extent for the
    scatter plot and the grid decoder, so a grid cell sits under the dots it decodes."""
    points_2d = np.asarray(points_2d, dtype=np.float64)
    lo, hi = points_2d.min(axis=0), points_2d.max(axis=0)
    pad = np.maximum(hi - lo, 1e-6) * margin  # a flat axis still gets a non-empty range
    return (float(lo[0] - pad[0]), float(hi[0] + pad[0])), (float(lo[1] - pad[1]), float(hi[1] + pad[1]))


# --- display helpers -----------------------------------------------------------------------
def image_grid(images: np.ndarray, nrow: int, separator: int = 1, pad_value: int = 128) -> np.ndarray:
    """Tile images [M, H, W, C] into one uint8 picture, `nrow` images per row (torchvision's
    `make_grid` convention), with a `separator`-pixel line of `pad_value` between tiles.

    Float images are taken to be in [0, 1]; uint8 images pass through. Empty trailing cells
    are filled with `pad_value`. Grey separators show on black (MNIST) and white backgrounds.
    """
    images = to_uint8(np.asarray(images))
    if images.ndim != 4 or len(images) == 0:
        raise ConfigError(f"images has shape {images.shape}: expected a non-empty [M, H, W, C]")
    if nrow < 1:
        raise ConfigError(f"nrow={nrow!r} is invalid: expected at least 1 image per row")
    m, h, w, c = images.shape
    cols = min(nrow, m)
    rows = -(-m // cols)
    out = np.full((rows * (h + separator) - separator, cols * (w + separator) - separator, c), pad_value, np.uint8)
    for i, image in enumerate(images):
        top, left = (i // cols) * (h + separator), (i % cols) * (w + separator)
        out[top:top + h, left:left + w] = image
    return out


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Pictures as uint8: floats taken to be in [0, 1] (clipped, rounded), uint8 passes through."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)


__all__ = [
    "Codes", "decode_codes", "decode_points", "encode_means", "encode_split", "evaluating", "posteriors",
    "sample_codes", "to_uint8", "gaussian_grid_2d", "grid_points_2d", "image_grid",
    "interpolate", "interpolation_path", "padded_limits", "sample_box", "sample_prior",
]
