"""The 2-D maps of a model pair, without any UI: both models' codes of a fixed sample of test
images, each model's projection to 2-D, and the frame both maps share.

One `LatentMap` holds a fixed sample of test images encoded by both models, each model's
projection to 2-D (identity, PCA, UMAP, t-SNE: `vae.projections`), and, when `aligned`, the AE's
map rotated, scaled and shifted onto the VAE's (Procrustes on the same images), so a region of
digits sits at the same place on both maps. Unaligned, each model keeps its own coordinates: the
AE's arbitrary scale and the prior N(0, I) at its true size on both maps.

`GridSpec` is the grid of locations the grid decoder decodes; `largest_gap` the biggest hole of
a map; `map_csv` a map's coordinates for download. The app caches these (ui/maps.py); the
benchmarks, `ui.prebuild` and `vae.lesson` use them directly.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.stats import norm

from .codes import Codes
from .data import ImageSplit
from .grids import gaussian_grid_2d, grid_points_2d, padded_limits
from .latent import decode_points, encode_split
from .models import Autoencoder
from .neighbours import nearest
from .projections import (UMAP_INVERSE_GRID, Projection, ProjectionCache, SimilarityTransform, fit_projection,
                          procrustes_align)

RECOGNISED = 0.9  # a classifier this sure of one class "recognises" an image (as vae.evaluate)
PRIOR_EDGE = 3.0  # the prior grid's outer cells end at 3 sigma (99.7% of N(0, 1))
SLOW_METHODS = ("umap", "tsne")  # fitted once, off the page run, and cached on disk (`ui.prebuild` bakes them)
DEFAULT_SAMPLE = 2000  # test images per map: the pages' default


def data_id(name: str, split: ImageSplit) -> str:
    """Name, size and a fingerprint of the first images: a fallback data set never shares a key."""
    head = split.images[:64].numpy().tobytes() + split.labels[:64].numpy().tobytes()
    return f"{name}/test/{len(split)}/{hashlib.sha1(head).hexdigest()[:12]}"


def sample_indices(n_total: int, n: int, seed: int = 0) -> np.ndarray:
    """A fixed random sample of test-split indices, sorted (all of them if n >= n_total)."""
    if n >= n_total:
        return np.arange(n_total, dtype=np.int64)
    idx = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n].numpy()
    return np.sort(idx).astype(np.int64)


@dataclass(frozen=True, eq=False)
class LatentMap:
    """Both models' codes of one image sample and their 2-D maps in one shared frame.

    The frame is the reference model's (the VAE's when there is one) own projection; the other
    model's map is rotated, scaled and shifted onto it. `to_latent` / `to_map` convert between a
    frame point and a model's code, whatever the projection.
    """

    key: str  # identifies everything the map depends on
    method: str
    label: str  # the projection's own label, e.g. "UMAP (approximate inverse)"
    inverse_is_exact: bool
    latent_dim: int
    indices: np.ndarray  # test-split index of each point [N]
    labels: np.ndarray  # [N]
    classes: tuple
    codes: dict  # kind -> codes.Codes
    points: dict  # kind -> [N, 2] in the shared frame
    projections: dict  # kind -> fitted Projection
    alignments: dict  # kind -> SimilarityTransform onto the reference frame, or None for the reference
    xlim: tuple
    ylim: tuple
    reference: str
    aligned: bool = True  # False: each model in its own coordinates, no alignment
    from_disk: bool = False  # every projection came from the disk cache
    seconds: float = 0.0  # time to build (encode + fit or load)

    @property
    def kinds(self) -> list[str]:
        return [k for k in ("ae", "vae") if k in self.points]

    def to_latent(self, kind: str, map_points) -> np.ndarray:
        """Shared-frame points [M, 2] -> the model's codes [M, d] (the projection's inverse)."""
        p = np.atleast_2d(np.asarray(map_points, dtype=np.float32))
        align = self.alignments[kind]
        own = align.invert(p) if align is not None else p
        return np.asarray(self.projections[kind].inverse_transform(own), dtype=np.float32)

    def to_map(self, kind: str, codes) -> np.ndarray:
        """The model's codes [M, d] -> shared-frame points [M, 2] (approximate for UMAP / t-SNE)."""
        own = self.projections[kind].transform(np.atleast_2d(np.asarray(codes, dtype=np.float32)))
        align = self.alignments[kind]
        return align.apply(own) if align is not None else np.asarray(own, dtype=np.float32)

    def prior_center(self, kind: str | None = None) -> np.ndarray | None:
        """Where z = 0 sits on a model's map (default: the reference's), when the prior N(0, I)
        shows there as circles: identity (the map is z) or PCA (orthonormal axes: the prior's
        shadow on the plane is N(centre, I_2)). On an aligned map only the reference (the VAE)
        keeps its own units; unaligned, every model's map does. None for non-linear maps."""
        kind = kind or self.reference
        if (self.aligned and kind != "vae") or kind not in self.projections:
            return None
        return _prior_center(self.method, self.projections[kind], self.latent_dim)

    @property
    def transform_is_exact(self) -> bool:
        """Are new codes (a drawing) placed exactly? Only linear projections place them so."""
        return self.method in ("identity", "pca")

    def inverse_note(self) -> str:
        """One sentence a student can read: how a map location becomes a code."""
        if self.method == "identity" and not self.aligned:
            return ("The map is the 2-D latent space itself, each model in its own coordinates: a location is the "
                    "code, decoded exactly. The same location is the same code for both models.")
        if self.method == "identity":
            return ("The map is the 2-D latent space itself: each location is decoded exactly "
                    "(the AE's plane is rotated and scaled onto the VAE's; the inverse undoes that exactly).")
        if self.method == "pca":
            return (("" if self.aligned else "Each model in its own PCA coordinates. ") +
                    f"PCA inverse (exact in the plane): a location becomes the mean code plus x·PC1 + y·PC2; the "
                    f"other {self.latent_dim - 2} directions of the {self.latent_dim}-D code stay at the data's average.")
        if self.method == "umap":
            if any(getattr(p, "inverse", "") == "nearest-code" for p in self.projections.values()):
                return ("UMAP's inverse failed for this data, so a location is decoded from the code of the nearest "
                        "data point: only real codes are decoded and holes cannot show. Use PCA to see holes.")
            return (f"UMAP inverse, approximate: umap-learn's inverse_transform was run once on a "
                    f"{UMAP_INVERSE_GRID}×{UMAP_INVERSE_GRID} grid over the data; a location gets the code of its "
                    f"nearest grid node (locations beyond the data are clipped to the grid's edge).")
        return ("t-SNE has no inverse: a location is decoded from the code of the nearest data point, so only real "
                "codes are decoded and holes cannot show. Use PCA (or a 2-D pair) to see holes.")

    def axis_titles(self, kind: str) -> tuple[str, str]:
        names = {"identity": ("z1", "z2"), "pca": ("PC 1", "PC 2"), "umap": ("UMAP 1", "UMAP 2"),
                 "tsne": ("t-SNE 1", "t-SNE 2")}[self.method]
        if self.alignments.get(kind) is not None:
            return f"{names[0]} (aligned)", f"{names[1]} (aligned)"
        return names


def build_latent_map(models: dict[str, Autoencoder], split: ImageSplit, classes, method: str, n: int,
                     seed: int = 0, *, model_ids: dict[str, str], data_key: str,
                     cache: ProjectionCache | None = None, aligned: bool = True) -> LatentMap:
    """Encode a fixed sample with each model, fit (or load) each model's projection, align
    the maps (unless `aligned` is False: then each keeps its own coordinates, on shared axes)."""
    t0 = time.perf_counter()
    idx = sample_indices(len(split), n, seed)
    sample = ImageSplit(split.images[idx], split.labels[idx])
    codes = {kind: encode_split(m, sample) for kind, m in models.items()}
    projections, hits = {}, []
    for kind, c in codes.items():
        key_parts = projection_key(model_ids[kind], data_key, len(idx), method, seed)
        fit = _fitter(method, c, seed)
        if cache is None:
            projections[kind] = fit()
            hits.append(False)
        else:
            projections[kind] = cache.get_or_compute(key_parts, fit)
            hits.append(cache.last_was_hit)
    reference = "vae" if "vae" in projections else next(iter(projections))
    target = projections[reference].embedding_
    points, alignments = {}, {}
    for kind, proj in projections.items():
        if kind == reference or not aligned:
            points[kind], alignments[kind] = np.asarray(proj.embedding_, np.float32), None
        else:
            points[kind], alignments[kind] = align_same_size(proj.embedding_, target)
    ref = projections[reference]
    # the prior shows on the VAE's map, and unaligned on every model's (each keeps its own units)
    shown = [k for k in projections if not aligned or k == reference == "vae"]
    centers = [_prior_center(method, projections[k], codes[k].latent_dim) for k in shown]
    xlim, ylim = map_limits(list(points.values()), prior_centers=[c for c in centers if c is not None])
    return LatentMap(
        key=map_key(model_ids, data_key, len(idx), method, seed, aligned), method=method, label=ref.label, aligned=aligned,
        inverse_is_exact=ref.inverse_is_exact, latent_dim=codes[reference].latent_dim, indices=idx,
        labels=sample.labels.numpy(), classes=tuple(classes), codes=codes, points=points, projections=projections,
        alignments=alignments, xlim=xlim, ylim=ylim, reference=reference, from_disk=all(hits),
        seconds=time.perf_counter() - t0)


def align_same_size(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, SimilarityTransform]:
    """procrustes_align's rotation (or reflection) and shift, with the scale that gives both
    clouds the same spread. The least-squares scale shrinks a map in proportion to how badly
    it matches (two models' maps match only roughly), which would make the AE's cloud look
    small and tidy; equal spread keeps the two maps' sizes comparable."""
    _, fit = procrustes_align(source, target)
    spread = lambda p: float(np.sqrt(((p - p.mean(axis=0)) ** 2).sum(axis=1).mean()))  # noqa: E731
    transform = SimilarityTransform(fit.rotation, spread(target) / spread(source), fit.source_mean, fit.target_mean)
    return transform.apply(source), transform


def projection_key(model: str, data_key: str, n: int, method: str, seed: int) -> dict:
    parts = {"model": model, "data": data_key, "n": int(n), "method": method, "seed": int(seed)}
    if method == "umap":
        parts["grid"] = UMAP_INVERSE_GRID
    return parts


def map_key(model_ids: dict, data_key: str, n: int, method: str, seed: int, aligned: bool = True) -> str:
    parts = {"models": dict(sorted(model_ids.items())), "data": data_key, "n": int(n), "method": method,
             "seed": int(seed)} | ({} if aligned else {"aligned": False})
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _fitter(method: str, codes: Codes, seed: int) -> Callable[[], Projection]:
    return lambda: fit_projection(method, codes.mean, seed)


def map_limits(point_sets: list[np.ndarray], prior_centers=(), prior_radius: float = 3.0,
               quantile: float = 0.005, margin: float = 0.08) -> tuple[tuple, tuple]:
    """One square view for every map: the middle 99% of the points (a few far-flung codes
    would otherwise shrink the cloud to a dot), plus the prior's 3-sigma circle when it shows."""
    pts = np.concatenate(point_sets).astype(np.float64)
    box = [np.quantile(pts, quantile, axis=0), np.quantile(pts, 1 - quantile, axis=0)]
    for center in prior_centers:
        box += [np.asarray(center) - prior_radius, np.asarray(center) + prior_radius]
    return square_limits(*padded_limits(np.stack(box), margin))


def _prior_center(method: str, projection: Projection, latent_dim: int) -> np.ndarray | None:
    """Where z = 0 lands on a linear map (identity, PCA); None on a non-linear one."""
    if method not in ("identity", "pca"):
        return None
    return np.asarray(projection.transform(np.zeros((1, latent_dim), np.float32)))[0]


def square_limits(xlim, ylim) -> tuple[tuple[float, float], tuple[float, float]]:
    """Widen the shorter range so one map unit is as long on both axes (circles stay round)."""
    half = max(xlim[1] - xlim[0], ylim[1] - ylim[0]) / 2
    cx, cy = (xlim[0] + xlim[1]) / 2, (ylim[0] + ylim[1]) / 2
    return (cx - half, cx + half), (cy - half, cy + half)


@dataclass(frozen=True)
class GridSpec:
    """n x n map locations to decode, in the shared frame.

    uniform: cell centres of an n x n tiling of xlim x ylim (the tiles cover the view exactly);
    gaussian: the VAE prior's N(0, 1) quantiles at (i + 0.5) / n per axis, one cell of equal
    prior mass per node (a 2-D VAE on its own latent axes only)."""

    n: int
    xlim: tuple
    ylim: tuple
    gaussian: bool = False

    def points(self) -> np.ndarray:
        if self.gaussian:
            return gaussian_grid_2d(self.n, eps=0.5 / self.n)
        dx, dy = (self.xlim[1] - self.xlim[0]) / (2 * self.n), (self.ylim[1] - self.ylim[0]) / (2 * self.n)
        return grid_points_2d((self.xlim[0] + dx, self.xlim[1] - dx), (self.ylim[0] + dy, self.ylim[1] - dy), self.n)

    def cell_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(x edges, y edges), each [n+1] ascending, of the cells around the points: the view's
        uniform tiling, or the prior's quantiles i/n (each cell holds 1/n^2 of N(0, I), its node at
        the cell's median), the outer edges drawn at 3 sigma rather than infinity: on an AE's own
        map, far wider than the prior, unbounded outer cells would paint most of the view."""
        if self.gaussian:
            edges = np.clip(norm.ppf(np.linspace(0, 1, self.n + 1)), -PRIOR_EDGE, PRIOR_EDGE)
            return edges, edges.copy()
        return np.linspace(*self.xlim, self.n + 1), np.linspace(*self.ylim, self.n + 1)


def zoomed_limits(lmap: LatentMap, zoom: float, center=None) -> tuple[tuple, tuple]:
    """The map's limits scaled by `zoom` around `center` (default: the map's centre)."""
    cx, cy = center if center is not None else ((lmap.xlim[0] + lmap.xlim[1]) / 2, (lmap.ylim[0] + lmap.ylim[1]) / 2)
    half = (lmap.xlim[1] - lmap.xlim[0]) / 2 * zoom
    return (cx - half, cx + half), (cy - half, cy + half)


def decode_map_points(lmap: LatentMap, kind: str, model: Autoencoder, points) -> np.ndarray:
    """Frame points -> the kind's decoded images [M, H, W, C] in [0, 1]: inverse, then decode."""
    return decode_points(model, lmap.to_latent(kind, points))


def recognised_share(confidence, threshold: float = RECOGNISED) -> float:
    """The share of cells the classifier names with at least `threshold` confidence."""
    return float((np.asarray(confidence) >= threshold).mean())


def map_csv(lmap: LatentMap) -> bytes:
    """The map's coordinates, one row per test image: index, class, then x, y per model."""
    cols = {"test_index": lmap.indices, "class": [lmap.classes[c] if c < len(lmap.classes) else str(c)
                                                  for c in lmap.labels]}
    for kind in lmap.kinds:
        cols[f"{kind}_x"], cols[f"{kind}_y"] = lmap.points[kind][:, 0], lmap.points[kind][:, 1]
    lines = [",".join(cols)]
    for i in range(len(lmap.indices)):
        lines.append(",".join(f"{v[i]:.6g}" if isinstance(v[i], (float, np.floating)) else str(v[i])
                              for v in cols.values()))
    return ("\n".join(lines) + "\n").encode()


def largest_gap(points: np.ndarray, xlim=None, ylim=None, n: int = 48, quantile: float = 0.02) -> tuple[float, float]:
    """The location among the points that lies farthest from every one of them: the biggest
    hole of a map. Searched on an n x n grid over the middle of the points (quantile to
    1 - quantile per axis, so stray codes do not count as "among"), within xlim x ylim if given."""
    p = np.asarray(points, dtype=np.float64)
    lo, hi = np.quantile(p, quantile, axis=0), np.quantile(p, 1 - quantile, axis=0)
    if xlim is not None and ylim is not None:
        lo, hi = np.maximum(lo, [xlim[0], ylim[0]]), np.minimum(hi, [xlim[1], ylim[1]])
    grid = grid_points_2d((lo[0], hi[0]), (lo[1], hi[1]), n).astype(np.float64)
    dist, _ = nearest(p, grid, 1)
    return tuple(float(v) for v in grid[int(np.argmax(dist[:, 0]))])
