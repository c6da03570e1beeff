"""Nearest-neighbour search: the one place points are matched to their nearest points.

The maps' clicks (the real images nearest to a location), the t-SNE and UMAP inverses (the code
of the nearest dot), new codes placed among fitted ones, and the biggest hole of a map all ask
it. scipy's cKDTree answers exactly (Euclidean distances, not an approximate index), in
O(log N) per query after an O(N log N) build instead of the O(N) of a brute-force scan.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .errors import ConfigError


def nearest(reference, queries, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Distances (float64) and indices (int64) [M, min(k, N)] of each query's k nearest
    reference rows, nearest first. reference [N, d], queries [M, d]."""
    reference = np.asarray(reference, dtype=np.float64)
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    if reference.ndim != 2 or queries.shape[1:] != reference.shape[1:]:
        raise ConfigError(f"queries of shape {queries.shape} cannot be matched to points of shape {reference.shape}")
    k = min(int(k), len(reference))
    if k < 1:
        return np.zeros((len(queries), 0)), np.zeros((len(queries), 0), np.int64)
    dist, idx = cKDTree(reference).query(queries, k=[*range(1, k + 1)])  # a list keeps the [M, k] shape for k = 1
    return dist, idx.astype(np.int64)


def nearest_indices(points, query, k: int = 1) -> np.ndarray:
    """Indices of the k points nearest to one `query`, nearest first: int64 [min(k, N)]."""
    return nearest(points, [np.asarray(query, dtype=np.float64).reshape(-1)], k)[1][0]


__all__ = ["nearest", "nearest_indices"]
