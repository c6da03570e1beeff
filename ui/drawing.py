"""A drawing made with the mouse, turned into an image the way MNIST's digits were made.

MNIST (LeCun et al., 1998): "the images were size normalized to fit in a 20x20 pixel box while
preserving their aspect ratio ... centered in a 28x28 image by computing the center of mass of
the pixels, and translating the image so as to position this point at the center".
"""
from __future__ import annotations

import numpy as np
from PIL import Image

BOX, SIZE = 20, 28
MIN_INK = 0.002  # share of canvas pixels that must be inked before a drawing counts


def ink(canvas_rgba: np.ndarray) -> np.ndarray:
    """Canvas pixels -> ink in [0, 255] (float): white strokes on black or on transparency."""
    arr = np.asarray(canvas_rgba, dtype=np.float32)
    if arr.ndim == 2:
        return arr
    gray = arr[..., :3].mean(axis=-1)
    if arr.shape[-1] == 4:
        gray = gray * (arr[..., 3] / 255.0)  # an undrawn, transparent pixel is no ink
    return gray


def mnist_style(canvas_rgba: np.ndarray, threshold: float = 10.0) -> np.ndarray | None:
    """A drawing (white on black, any size) -> uint8 [28, 28] like an MNIST digit, or None if blank.

    Crop to the inked bounding box, scale its longer side to 20 pixels keeping the aspect
    ratio (with anti-aliasing, which makes MNIST's grey edges), then place it in 28 x 28 so
    that its centre of mass is the image centre.
    """
    gray = ink(canvas_rgba)
    inked = gray > threshold
    if inked.mean() < MIN_INK:
        return None
    rows, cols = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    crop = gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    small = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).resize((new_w, new_h), Image.Resampling.LANCZOS)
    small = np.asarray(small, dtype=np.float32)
    total = small.sum()
    ys, xs = np.indices(small.shape)
    com_y, com_x = (ys * small).sum() / total, (xs * small).sum() / total
    # the pixel grid's centre is at 13.5 (pixel i spans [i, i+1), its centre is i + 0.5)
    top, left = int(round((SIZE - 1) / 2 - com_y)), int(round((SIZE - 1) / 2 - com_x))
    out = np.zeros((SIZE, SIZE), np.float32)
    _paste(out, small, top, left)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _paste(out: np.ndarray, patch: np.ndarray, top: int, left: int) -> None:
    """Copy patch into out at (top, left), clipping whatever falls outside."""
    h, w = patch.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, out.shape[0]), min(left + w, out.shape[1])
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = patch[y0 - top:y1 - top, x0 - left:x1 - left]


__all__ = ["ink", "mnist_style"]
