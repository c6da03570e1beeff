"""vae/neighbours.py: the one nearest-neighbour search, checked against a brute-force scan."""
import numpy as np
import pytest

from vae.errors import ConfigError
from vae.neighbours import nearest, nearest_indices


def test_nearest_matches_a_brute_force_scan_in_any_dimension():
    rng = np.random.default_rng(0)
    for dim in (2, 16):
        points, queries = rng.normal(size=(300, dim)), rng.normal(size=(40, dim))
        dist, idx = nearest(points, queries, k=4)
        brute = np.sqrt(((queries[:, None] - points[None]) ** 2).sum(-1))
        np.testing.assert_array_equal(idx, np.argsort(brute, axis=1)[:, :4])
        np.testing.assert_allclose(dist, np.sort(brute, axis=1)[:, :4], rtol=1e-12)
        assert idx.dtype == np.int64 and dist.shape == (40, 4)


def test_one_query_and_the_edges():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.25, 0.0], [0.5, 0.0]])
    np.testing.assert_array_equal(nearest_indices(points, [0.1, 0], k=3), [0, 2, 3])
    assert nearest_indices(points, [5, 5], k=10).shape == (4,)  # k is capped at the number of points
    dist, idx = nearest(points, points, k=1)  # a point is its own nearest, at distance 0, shape [M, 1]
    assert dist.shape == (4, 1) and (dist == 0).all() and (idx[:, 0] == np.arange(4)).all()
    assert nearest(points[:0], [[0.0, 0.0]], k=3)[1].shape == (1, 0)
    with pytest.raises(ConfigError, match="cannot be matched"):
        nearest(points, [[0.0, 0.0, 0.0]])
