"""Grids of points and of pictures, numpy only: the grid decoder's 2-D grids (even, and at the
prior's quantiles), the extent around a cloud of points, and image tiling.

Kept apart from vae/latent.py (which decodes them with torch) so that the map-fit child
(vae/map_fit.py) and the projections import no torch."""
from __future__ import annotations

import numpy as np
from scipy.stats import norm

from .errors import ConfigError


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


__all__ = ["gaussian_grid_2d", "grid_points_2d", "image_grid", "padded_limits", "to_uint8"]
