"""2-D maps of latent codes behind one scikit-learn-style contract.

Every projection has `fit(codes)`, `transform`, `fit_transform` and `inverse_transform`
(2-D map point -> latent code), keeps what it learned in attributes ending in `_`
(`embedding_` holds the fitted codes' 2-D coordinates), and says how much to trust its inverse
through `inverse_is_exact` and `label`. The grid decoder calls `inverse_transform` whatever
the method, so decoding a clicked point costs a matrix product (PCA) or a table look-up
(UMAP's precomputed grid, t-SNE's nearest code) plus one decoder pass.

Fitted projections are kept on disk by `ProjectionCache` as .npz arrays and JSON, never pickled.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .atomic import write_npz
from .errors import ConfigError, LatentExplorerError
from .codes import Codes
from .grids import grid_points_2d, padded_limits
from .neighbours import nearest


class ProjectionError(LatentExplorerError):
    """A projection is used before it is ready (not fitted, inverse grid not precomputed)."""


def _as_array(codes, name: str = "codes") -> np.ndarray:
    """[N, d] float32 from an array or a `codes.Codes` (whose means are the map's codes)."""
    x = codes.mean if isinstance(codes, Codes) else codes
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ConfigError(f"{name} has shape {x.shape}: expected a non-empty [N, d] array")
    return x


def _as_points_2d(points) -> np.ndarray:
    p = np.atleast_2d(np.asarray(points, dtype=np.float32))
    if p.ndim != 2 or p.shape[1] != 2:
        raise ConfigError(f"points have shape {p.shape}: expected [M, 2] (or one point [2])")
    return p


def _place_by_neighbours(codes_fit: np.ndarray, embedding: np.ndarray, codes: np.ndarray, k: int = 5) -> np.ndarray:
    """Put new codes at the inverse-distance-weighted mean of their k nearest fitted codes'
    map positions (how UMAP starts its own transform); a fitted code lands on its own dot."""
    dist, idx = nearest(codes_fit, codes, k)
    weights = 1.0 / (dist + 1e-12)
    weights[dist[:, 0] == 0] = np.eye(dist.shape[1])[0]  # exact hits: the code's own position
    weights /= weights.sum(axis=1, keepdims=True)
    return (weights[:, :, None] * embedding[idx]).sum(axis=1).astype(np.float32)


# --- the contract ----------------------------------------------------------------------------
class Projection:
    """Base class: subclasses implement `_fit`, `transform`, `inverse_transform` and their state."""

    method: str = ""
    label: str = ""
    inverse_is_exact: bool = False

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, codes) -> "Projection":
        codes = _as_array(codes)
        self.n_features_in_ = codes.shape[1]
        self._fit(codes)
        return self

    def fit_transform(self, codes) -> np.ndarray:
        return self.fit(codes).embedding_

    def precompute_inverse_grid(self, xlim, ylim, n: int = 24) -> "Projection":
        """Only UMAP's inverse is slow enough to need a precomputed table; a no-op here."""
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "embedding_"):
            raise ProjectionError(f"{type(self).__name__} is not fitted: call fit(codes) first")

    def _check_codes(self, codes) -> np.ndarray:
        self._check_fitted()
        codes = _as_array(codes)
        if codes.shape[1] != self.n_features_in_:
            raise ConfigError(f"codes have {codes.shape[1]} dimensions; "
                              f"this projection was fitted on {self.n_features_in_}")
        return codes

    # state for ProjectionCache: plain params (JSON) and arrays (npz), enough to rebuild
    def _params(self) -> dict:
        return {"seed": self.seed}

    def _state(self) -> dict[str, np.ndarray]:
        return {"embedding_": self.embedding_}

    @classmethod
    def _from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "Projection":
        proj = cls(**params)
        for name, value in arrays.items():
            setattr(proj, name, value)
        proj.n_features_in_ = proj._latent_dim_from_state()
        return proj

    def _latent_dim_from_state(self) -> int:
        raise NotImplementedError


class IdentityProjection(Projection):
    """The latent space itself, for a 2-D latent: the map is z, the inverse is exact."""

    method, label, inverse_is_exact = "identity", "Latent axes (z1, z2)", True

    def _fit(self, codes: np.ndarray) -> None:
        if codes.shape[1] != 2:
            raise ConfigError(f"the identity projection needs a 2-D latent space, got {codes.shape[1]} dimensions")
        self.embedding_ = codes.copy()

    def transform(self, codes) -> np.ndarray:
        return self._check_codes(codes).copy()

    def inverse_transform(self, points) -> np.ndarray:
        self._check_fitted()
        return _as_points_2d(points).copy()

    def _latent_dim_from_state(self) -> int:
        return 2


class PCAProjection(Projection):
    """The plane of the two largest principal components.

    The inverse is exact for codes in that plane and drops the other components otherwise:
    transform(inverse_transform(p)) == p for every map point p, which is what the grid decoder
    needs (the decoded code lies exactly under the click).
    """

    method, label, inverse_is_exact = "pca", "PCA", True

    def _fit(self, codes: np.ndarray) -> None:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=self.seed).fit(codes.astype(np.float64))
        self.components_ = pca.components_.astype(np.float32)  # [2, d], orthonormal rows
        self.mean_ = pca.mean_.astype(np.float32)
        self.explained_variance_ratio_ = pca.explained_variance_ratio_.astype(np.float32)
        self.embedding_ = self._project(codes)

    def transform(self, codes) -> np.ndarray:
        return self._project(self._check_codes(codes))

    def _project(self, codes: np.ndarray) -> np.ndarray:
        # sklearn's PCA.transform without whitening, written out so a cached PCA needs no refit
        return (codes - self.mean_) @ self.components_.T

    def inverse_transform(self, points) -> np.ndarray:
        self._check_fitted()
        return _as_points_2d(points) @ self.components_ + self.mean_

    def _state(self) -> dict[str, np.ndarray]:
        return {**super()._state(), "components_": self.components_, "mean_": self.mean_,
                "explained_variance_ratio_": self.explained_variance_ratio_}

    def _latent_dim_from_state(self) -> int:
        return self.components_.shape[1]


class _NeighbourProjection(Projection):
    """Shared by UMAP and t-SNE: keeps the fitted codes, places new codes by their neighbours,
    and inverts a map point to the code of the nearest dot."""

    def _keep(self, codes: np.ndarray, embedding: np.ndarray) -> None:
        self.codes_ = codes.copy()
        self.embedding_ = np.asarray(embedding, dtype=np.float32)

    def transform(self, codes) -> np.ndarray:
        """Approximate: each code goes to the weighted mean position of its 5 nearest fitted
        codes (milliseconds, the same before and after a cache reload); fitted codes land on
        their own dots."""
        return _place_by_neighbours(self.codes_, self.embedding_, self._check_codes(codes))

    def _nearest_code(self, points) -> np.ndarray:
        self._check_fitted()
        _, idx = nearest(self.embedding_, _as_points_2d(points), 1)
        return self.codes_[idx[:, 0]]

    def _state(self) -> dict[str, np.ndarray]:
        return {**super()._state(), "codes_": self.codes_}

    def _latent_dim_from_state(self) -> int:
        return self.codes_.shape[1]


class TSNEProjection(_NeighbourProjection):
    """scikit-learn's t-SNE. It has no inverse (nor a transform for new codes): a map point is
    decoded from the code of the nearest dot, so only the data's own codes are ever decoded."""

    method, label, inverse_is_exact = "tsne", "t-SNE (no inverse: nearest code)", False

    def __init__(self, seed: int = 0, perplexity: float = 30.0, max_iter: int = 1000):
        super().__init__(seed)
        self.perplexity, self.max_iter = perplexity, max_iter

    def _fit(self, codes: np.ndarray) -> None:
        from sklearn.manifold import TSNE

        perplexity = min(self.perplexity, max(1.0, (len(codes) - 1) / 3))  # must stay < N
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", max_iter=self.max_iter,
                    random_state=self.seed)
        self._keep(codes, tsne.fit_transform(codes))

    def inverse_transform(self, points) -> np.ndarray:
        return self._nearest_code(points)

    def _params(self) -> dict:
        return {**super()._params(), "perplexity": self.perplexity, "max_iter": self.max_iter}


UMAP_INVERSE_MODES = ("grid", "nearest-code")


class UMAPProjection(_NeighbourProjection):
    """umap-learn's UMAP with a fixed random_state (which makes it single-threaded).

    umap's own inverse_transform takes seconds per call and is poor outside the data's hull,
    so the inverse is answered from a table:
    - inverse="grid" (default): `precompute_inverse_grid(xlim, ylim, n)` runs umap's inverse
      once on an n x n grid; a map point then gets the code of its nearest grid node.
    - inverse="nearest-code": a map point gets the code of the nearest dot (like t-SNE).
    `transform` of new codes is by neighbours (see `_NeighbourProjection.transform`); umap's
    own (slow, seconds) transform stays reachable as `umap_.transform` until a cache reload.
    """

    method, inverse_is_exact = "umap", False

    def __init__(self, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1, inverse: str = "grid"):
        super().__init__(seed)
        if inverse not in UMAP_INVERSE_MODES:
            raise ConfigError(f"inverse={inverse!r} is invalid: expected one of {UMAP_INVERSE_MODES}")
        self.n_neighbors, self.min_dist, self.inverse = n_neighbors, min_dist, inverse
        self.umap_ = None  # the fitted umap.UMAP; never cached (that would need pickle)

    @property
    def label(self) -> str:
        return "UMAP (approximate inverse)" if self.inverse == "grid" else "UMAP (no inverse: nearest code)"

    def _fit(self, codes: np.ndarray) -> None:
        import umap  # slow to import (numba): only when a UMAP map is asked for

        n_neighbors = max(2, min(self.n_neighbors, len(codes) - 1))  # umap needs k < N
        self.umap_ = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=self.min_dist,
                               random_state=self.seed, n_jobs=1)
        self._keep(codes, self.umap_.fit_transform(codes))

    def precompute_inverse_grid(self, xlim, ylim, n: int = 24) -> "UMAPProjection":
        """Run umap's inverse once on an n x n grid over xlim x ylim (one call: ~seconds)."""
        self._check_fitted()
        if self.umap_ is None:
            raise ProjectionError("this UMAP was rebuilt from the cache without its model: "
                                  "refit it to compute a new grid")
        grid = grid_points_2d(xlim, ylim, n)
        _repair_umap_sigmas(self.umap_)
        try:
            grid_codes = np.asarray(self.umap_.inverse_transform(grid), dtype=np.float32)
        except (ValueError, ZeroDivisionError) as err:
            raise ProjectionError(f"umap's inverse_transform failed ({type(err).__name__}: {err}); "
                                  f"use inverse='nearest-code'") from err
        if not np.isfinite(grid_codes).all():
            raise ProjectionError("umap's inverse_transform returned non-finite codes; use inverse='nearest-code'")
        self.grid_points_, self.grid_codes_ = grid, grid_codes
        self.grid_limits_ = np.array([*xlim, *ylim], dtype=np.float32)
        return self

    def inverse_transform(self, points) -> np.ndarray:
        if self.inverse == "nearest-code":
            return self._nearest_code(points)
        if not hasattr(self, "grid_codes_"):
            raise ProjectionError("UMAP's inverse needs precompute_inverse_grid(xlim, ylim, n) first "
                                  "(or inverse='nearest-code')")
        return self.grid_codes_[self._grid_cells(_as_points_2d(points))]

    def _grid_cells(self, points: np.ndarray) -> np.ndarray:
        # the grid is regular, so the nearest node is arithmetic; points outside clip to the edge
        x0, x1, y0, y1 = self.grid_limits_
        n = int(round(np.sqrt(len(self.grid_points_))))
        col = np.clip(np.rint((points[:, 0] - x0) / (x1 - x0) * (n - 1)), 0, n - 1).astype(np.int64)
        row = np.clip(np.rint((y1 - points[:, 1]) / (y1 - y0) * (n - 1)), 0, n - 1).astype(np.int64)
        return row * n + col  # top row is max y (grid_points_2d's layout)

    def _params(self) -> dict:
        return {**super()._params(), "n_neighbors": self.n_neighbors, "min_dist": self.min_dist,
                "inverse": self.inverse}

    def _state(self) -> dict[str, np.ndarray]:
        state = super()._state()
        if hasattr(self, "grid_codes_"):
            state.update(grid_points_=self.grid_points_, grid_codes_=self.grid_codes_, grid_limits_=self.grid_limits_)
        return state


def _repair_umap_sigmas(model) -> None:
    """Recompute the few infinite kernel widths umap's fit can leave behind.

    umap 0.5.9 compiles smooth_knn_dist with fastmath, which assumes no infinities, yet its
    binary search starts from hi = inf; under numba >= 0.62 some rows come back as sigma = inf
    (lmcinnes/umap#1216), and inverse_transform then divides 0 by 0. The un-jitted function
    (`py_func`) gives the right value: same search, float32 as in umap, only the bad rows.
    """
    from sklearn.metrics import pairwise_distances
    from umap.umap_ import smooth_knn_dist

    sigmas = getattr(model, "_sigmas", None)  # private: a future umap may differ, then do nothing
    if sigmas is None or np.isfinite(sigmas).all() or not hasattr(smooth_knn_dist, "py_func"):
        return
    bad = np.flatnonzero(~np.isfinite(sigmas))
    dist = pairwise_distances(model._raw_data[bad], model._raw_data)  # includes the point itself, as umap's
    knn = np.sort(dist, axis=1)[:, :model._n_neighbors].astype(np.float32)
    fixed, _ = smooth_knn_dist.py_func(knn, float(model._n_neighbors),
                                       local_connectivity=float(model.local_connectivity))
    sigmas[bad] = fixed


PROJECTIONS: dict[str, type[Projection]] = {
    p.method: p for p in (IdentityProjection, PCAProjection, UMAPProjection, TSNEProjection)
}


def available_methods(latent_dim: int) -> list[str]:
    """Methods that can map a latent_dim-dimensional space to 2-D, the natural one first."""
    if latent_dim == 2:
        return ["identity", "pca", "umap", "tsne"]
    return ["pca", "umap", "tsne"] if latent_dim > 2 else []


def make_projection(method: str, latent_dim: int, seed: int = 0, **options) -> Projection:
    """A fresh, unfitted projection by name; options go to its constructor (e.g. inverse=)."""
    key = str(method).strip().lower()
    if key not in PROJECTIONS:
        raise ConfigError(f"projection method={method!r} is unknown: expected one of {list(PROJECTIONS)}")
    if not available_methods(latent_dim):
        raise ConfigError(f"a {latent_dim}-D latent space has no 2-D map: projections need latent_dim >= 2")
    if key not in available_methods(latent_dim):
        raise ConfigError(f"projection method={method!r} cannot map a {latent_dim}-D latent space to 2-D: "
                          f"use one of {available_methods(latent_dim)}")
    try:
        return PROJECTIONS[key](seed=seed, **options)
    except TypeError as err:
        raise ConfigError(f"projection method={method!r}: {err}") from err


UMAP_INVERSE_GRID = 24  # umap's own inverse is run once on this many nodes per side


def fit_projection(method: str, codes: np.ndarray, seed: int) -> Projection:
    """One model's projection of its codes [N, d], as the maps use it (UMAP with its inverse grid)."""
    proj = make_projection(method, codes.shape[1], seed=seed).fit(codes)
    if method == "umap":
        try:
            proj.precompute_inverse_grid(*padded_limits(proj.embedding_, 0.15), n=UMAP_INVERSE_GRID)
        except ProjectionError:
            proj.inverse = "nearest-code"  # saved with the projection; inverse_note says so
    return proj


# --- aligning the AE's map with the VAE's ----------------------------------------------------
@dataclass(frozen=True, eq=False)  # arrays inside: no element-wise __eq__
class SimilarityTransform:
    """p -> scale * (p - source_mean) @ rotation + target_mean (rotation may reflect)."""

    rotation: np.ndarray  # [2, 2] orthogonal
    scale: float
    source_mean: np.ndarray
    target_mean: np.ndarray

    def apply(self, points) -> np.ndarray:
        p = np.atleast_2d(np.asarray(points, dtype=np.float64))
        return (self.scale * (p - self.source_mean) @ self.rotation + self.target_mean).astype(np.float32)

    def invert(self, points) -> np.ndarray:
        """Aligned-map points back to the source projection's own coordinates."""
        p = np.atleast_2d(np.asarray(points, dtype=np.float64))
        return ((p - self.target_mean) @ self.rotation.T / self.scale + self.source_mean).astype(np.float32)

    @property
    def reflects(self) -> bool:
        return bool(np.linalg.det(self.rotation) < 0)


def procrustes_align(source_2d: np.ndarray, target_2d: np.ndarray) -> tuple[np.ndarray, SimilarityTransform]:
    """Rotate/reflect, scale and shift `source_2d` onto `target_2d` (least squares).

    Both maps must place the SAME points in the same order (e.g. the AE's and the VAE's codes
    of one image subset): then a region of images sits in the same place on both maps.
    Orthogonal Procrustes (Schoenemann 1966) on the centred points gives the rotation R; the
    uniform scale that then minimises the error is trace(S) / ||A||_F^2.
    """
    from scipy.linalg import orthogonal_procrustes

    a, b = (np.asarray(p, dtype=np.float64) for p in (source_2d, target_2d))
    if a.shape != b.shape or a.ndim != 2:
        raise ConfigError(f"procrustes_align needs two maps of the same points: got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    a0, b0 = a - mu_a, b - mu_b
    norm2 = (a0 ** 2).sum()
    if norm2 == 0:
        raise ConfigError("procrustes_align: the source points are all identical, nothing to align")
    rotation, singular_sum = orthogonal_procrustes(a0, b0)
    transform = SimilarityTransform(rotation, float(singular_sum / norm2), mu_a, mu_b)
    return transform.apply(a), transform


# --- disk cache ------------------------------------------------------------------------------
def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """A checkpoint's identity for cache keys: retraining to the same path changes it."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class ProjectionCache:
    """Compute-once store of fitted projections, one .npz per key, shared by every session.

    key_parts is a JSON-able dict, e.g. {"model": file_sha256(ckpt), "data": "mnist/test",
    "n": 2000, "method": "umap", "seed": 0, "grid": 24}: everything that changes the result.
    Files hold arrays plus JSON strings (loaded with allow_pickle=False); a file that cannot be
    read back, or whose stored key differs, is ignored and recomputed.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.last_was_hit = False  # for a "loaded from cache" caption

    def path_for(self, key_parts: dict) -> Path:
        prefix = str(key_parts.get("method", "projection"))
        return self.directory / f"{prefix}-{hashlib.sha256(key_json(key_parts).encode()).hexdigest()[:24]}.npz"

    def get_or_compute(self, key_parts: dict, compute_fn: Callable[[], Projection]) -> Projection:
        """The cached projection for key_parts, or compute_fn()'s (a fitted projection), saved.

        For UMAP, compute_fn should also call precompute_inverse_grid: the grid is saved with
        it, and a UMAP loaded back has no model to compute a new one.
        """
        path = self.path_for(key_parts)
        cached = self.load(path, key_parts)
        self.last_was_hit = cached is not None
        if cached is not None:
            return cached
        proj = compute_fn()
        self.save(path, key_parts, proj)
        return proj

    def load(self, path: Path, key_parts: dict) -> Projection | None:
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {name: f[name] for name in f.files}
            if str(arrays.pop("key_json")) != key_json(key_parts):
                return None
            cls = PROJECTIONS[str(arrays.pop("method"))]
            params = json.loads(str(arrays.pop("params_json")))
            return cls._from_state(params, {k.removeprefix("state_"): v for k, v in arrays.items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile):
            return None  # corrupt, truncated or from an older layout: recompute

    def save(self, path: Path, key_parts: dict, proj: Projection) -> None:
        proj._check_fitted()
        arrays = {f"state_{k}": np.asarray(v) for k, v in proj._state().items()}
        arrays.update(key_json=np.array(key_json(key_parts)), method=np.array(proj.method),
                      params_json=np.array(json.dumps(proj._params())))
        write_npz(path, arrays)


def key_json(key_parts: dict) -> str:
    """A cache key as canonical JSON: the same parts, the same string, whatever their order."""
    try:
        return json.dumps(key_parts, sort_keys=True, separators=(",", ":"))
    except TypeError as err:
        raise ConfigError(f"cache key parts must be JSON values (str, int, float, bool, lists): {err}") from err


__all__ = [
    "IdentityProjection", "PCAProjection", "PROJECTIONS", "Projection", "ProjectionCache", "ProjectionError",
    "SimilarityTransform", "TSNEProjection", "UMAPProjection", "UMAP_INVERSE_GRID", "available_methods",
    "file_sha256", "fit_projection", "key_json", "make_projection", "procrustes_align",
]
