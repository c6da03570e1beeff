import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from vae.codes import Codes
from vae.errors import ConfigError
from vae.grids import padded_limits
from vae.latent import decode_points
from vae.models import Autoencoder, ModelConfig
from vae.projections import (IdentityProjection, PCAProjection, ProjectionCache, ProjectionError, TSNEProjection,
                             UMAPProjection, available_methods, make_projection, procrustes_align)


def clustered_codes(n=200, d=8, seed=0):
    """Three well-separated Gaussian clusters in d dimensions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, d)) * 6
    return (centres[rng.integers(0, 3, n)] + rng.normal(size=(n, d))).astype(np.float32)


def rotation(theta):
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


# --- PCA and identity ------------------------------------------------------------------------
def test_pca_inverse_is_exact_for_codes_in_its_plane():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(8, 2)))[0].T  # two orthonormal directions in 8-D
    codes = (rng.normal(size=(100, 2)) * [3, 1]) @ basis + rng.normal(size=8)
    pca = PCAProjection().fit(codes)
    np.testing.assert_allclose(pca.inverse_transform(pca.transform(codes)), codes, atol=1e-4)
    assert pca.inverse_is_exact and pca.label == "PCA"
    assert pca.explained_variance_ratio_.sum() == pytest.approx(1, abs=1e-5)


def test_pca_decodes_a_clicked_point_exactly_under_the_click():
    codes = clustered_codes()
    pca = make_projection("pca", 8)
    coords = pca.fit_transform(Codes(mean=codes, logvar=None, labels=np.zeros(len(codes), np.int64)))
    assert coords.shape == (200, 2) and coords.dtype == np.float32
    np.testing.assert_array_equal(coords, pca.embedding_)
    clicks = np.array([[0.0, 0.0], [3.0, -2.0]], np.float32)
    z = pca.inverse_transform(clicks)
    assert z.shape == (2, 8)
    np.testing.assert_allclose(pca.transform(z), clicks, atol=1e-4)
    assert pca.inverse_transform([1.0, 2.0]).shape == (1, 8)  # one point


def test_identity_needs_a_2d_latent_and_is_its_own_inverse():
    codes = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
    ident = IdentityProjection().fit(codes)
    np.testing.assert_array_equal(ident.transform(codes), codes)
    np.testing.assert_array_equal(ident.inverse_transform(codes), codes)
    with pytest.raises(ConfigError, match="2-D latent"):
        IdentityProjection().fit(np.zeros((10, 3)))


def test_unfitted_projection_says_what_to_do():
    with pytest.raises(ProjectionError, match="fit"):
        PCAProjection().inverse_transform([0.0, 0.0])


# --- factory ---------------------------------------------------------------------------------
def test_factory_lists_and_builds_methods():
    assert available_methods(2) == ["identity", "pca", "umap", "tsne"]
    assert available_methods(16) == ["pca", "umap", "tsne"]
    assert isinstance(make_projection("UMAP", 16, seed=3), UMAPProjection)
    assert make_projection("umap", 16, inverse="nearest-code").inverse == "nearest-code"
    with pytest.raises(ConfigError, match="unknown.*identity"):
        make_projection("isomap", 16)
    with pytest.raises(ConfigError, match="2-D latent|cannot map"):
        make_projection("identity", 16)
    with pytest.raises(ConfigError, match="inverse"):
        make_projection("umap", 16, inverse="exact")
    with pytest.raises(ConfigError, match="no 2-D map"):
        make_projection("pca", 1)
    with pytest.raises(ConfigError, match="projection method='pca'"):
        make_projection("pca", 16, bogus=1)


# --- Procrustes ------------------------------------------------------------------------------
def test_procrustes_recovers_a_known_rotation_scale_and_shift():
    target = np.random.default_rng(0).normal(size=(50, 2))
    r, scale, shift = rotation(0.7), 2.5, np.array([4.0, -1.0])
    source = (target - shift) @ r / scale  # so target = scale * source @ r.T + shift
    aligned, transform = procrustes_align(source, target)
    np.testing.assert_allclose(aligned, target, atol=1e-4)
    assert transform.scale == pytest.approx(scale)
    assert not transform.reflects
    new = np.array([[10.0, 10.0], [-3.0, 0.5]])
    np.testing.assert_allclose(transform.apply(new), scale * new @ r.T + shift, atol=1e-4)
    np.testing.assert_allclose(transform.invert(transform.apply(new)), new, atol=1e-4)  # round trip


def test_procrustes_undoes_a_mirror_image():
    target = np.random.default_rng(1).normal(size=(30, 2))
    aligned, transform = procrustes_align(target * [-1, 1], target)
    np.testing.assert_allclose(aligned, target, atol=1e-5)
    assert transform.reflects


def test_procrustes_rejects_maps_of_different_points():
    with pytest.raises(ConfigError, match="same points"):
        procrustes_align(np.zeros((5, 2)), np.zeros((6, 2)))


# --- t-SNE -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tsne_fit():
    codes = clustered_codes(n=60)
    with threadpool_limits(1):  # OpenMP threads spin-wait on a busy 2-core box: 0.1 s becomes 5 s
        return codes, TSNEProjection(seed=0, max_iter=250).fit(codes)  # 250: sklearn's minimum


def test_tsne_inverse_returns_the_nearest_dots_code(tsne_fit):
    codes, tsne = tsne_fit
    assert tsne.embedding_.shape == (60, 2) and not tsne.inverse_is_exact
    z = tsne.inverse_transform(tsne.embedding_[[7, 42]] + 1e-3)
    np.testing.assert_array_equal(z, codes[[7, 42]])
    np.testing.assert_allclose(tsne.transform(codes[:5]), tsne.embedding_[:5])  # fitted codes land on their dots


# --- cache -----------------------------------------------------------------------------------
KEY = {"model": "sha-of-ckpt", "data": "blobs/test", "n": 200, "method": "pca", "seed": 0}


def test_cache_hit_returns_identical_arrays_without_recomputing(tmp_path):
    codes, calls = clustered_codes(), []

    def compute():
        calls.append(1)
        return PCAProjection().fit(codes)

    cache = ProjectionCache(tmp_path)
    first = cache.get_or_compute(KEY, compute)
    assert not cache.last_was_hit
    second = ProjectionCache(tmp_path).get_or_compute(KEY, compute)  # a new session, same directory
    assert len(calls) == 1
    assert isinstance(second, PCAProjection)
    for name in ("embedding_", "components_", "mean_", "explained_variance_ratio_"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))
    click = np.array([[1.0, -2.0]], np.float32)
    np.testing.assert_array_equal(second.inverse_transform(click), first.inverse_transform(click))
    assert list(tmp_path.glob("*.tmp")) == []  # the temporary file was renamed into place


def test_cache_keys_separate_results(tmp_path):
    cache, calls = ProjectionCache(tmp_path), []

    def compute():
        calls.append(1)
        return PCAProjection().fit(clustered_codes())

    cache.get_or_compute(KEY, compute)
    cache.get_or_compute({**KEY, "seed": 1}, compute)
    assert len(calls) == 2 and len(list(tmp_path.glob("*.npz"))) == 2
    with pytest.raises(ConfigError, match="JSON"):
        cache.get_or_compute({**KEY, "model": object()}, compute)


def test_corrupt_cache_file_is_recomputed(tmp_path):
    cache, calls = ProjectionCache(tmp_path), []

    def compute():
        calls.append(1)
        return PCAProjection().fit(clustered_codes())

    cache.get_or_compute(KEY, compute)
    cache.path_for(KEY).write_bytes(b"not a zip file")
    again = cache.get_or_compute(KEY, compute)
    assert len(calls) == 2 and not cache.last_was_hit
    assert again.embedding_.shape == (200, 2)
    cache.get_or_compute(KEY, compute)  # and the rewritten file is good again
    assert len(calls) == 2 and cache.last_was_hit


def test_tsne_survives_a_cache_round_trip(tsne_fit, tmp_path):
    codes, tsne = tsne_fit
    key = {**KEY, "method": "tsne", "n": 60}
    ProjectionCache(tmp_path).get_or_compute(key, lambda: tsne)
    loaded = ProjectionCache(tmp_path).get_or_compute(key, lambda: pytest.fail("recomputed"))
    assert isinstance(loaded, TSNEProjection) and (loaded.perplexity, loaded.max_iter) == (30.0, 250)
    np.testing.assert_array_equal(loaded.embedding_, tsne.embedding_)
    np.testing.assert_array_equal(loaded.inverse_transform(loaded.embedding_[3]), codes[[3]])


# --- UMAP (one small fit shared by the tests below) ---------------------------------------
@pytest.fixture(scope="module")
def umap_fit():
    codes = clustered_codes(n=200)
    proj = UMAPProjection(seed=0).fit(codes)
    xlim, ylim = padded_limits(proj.embedding_)
    return codes, proj.precompute_inverse_grid(xlim, ylim, n=6)


@pytest.mark.timeout(180)  # numba compiles umap on first use: seconds, not milliseconds
def test_umap_map_and_grid_inverse(umap_fit):
    codes, proj = umap_fit
    assert proj.embedding_.shape == (200, 2) and np.isfinite(proj.embedding_).all()
    assert proj.grid_codes_.shape == (36, 8) and not proj.inverse_is_exact
    assert "approximate" in proj.label
    clicks = proj.embedding_[:3]
    z = proj.inverse_transform(clicks)
    assert z.shape == (3, 8) and np.isfinite(z).all()
    corner = proj.grid_points_[0]  # top-left node of the grid answers for a point near it
    np.testing.assert_array_equal(proj.inverse_transform(corner + 1e-3), proj.grid_codes_[[0]])
    np.testing.assert_array_equal(proj.transform(codes[:4]), proj.embedding_[:4])
    model = Autoencoder(ModelConfig(family="mlp", hidden=(32,), latent_dim=8, image_shape=(1, 28, 28)))
    assert decode_points(model, z).shape == (3, 28, 28, 1)


@pytest.mark.timeout(180)
def test_umap_needs_its_grid_or_nearest_code_mode(umap_fit):
    codes, proj = umap_fit
    small = UMAPProjection().fit(codes[:12])  # n_neighbors=15 is clipped to 11
    assert small.embedding_.shape == (12, 2)
    with pytest.raises(ProjectionError, match="precompute_inverse_grid"):
        small.inverse_transform([0.0, 0.0])
    proj.inverse = "nearest-code"
    try:
        np.testing.assert_array_equal(proj.inverse_transform(proj.embedding_[5]), codes[[5]])
    finally:
        proj.inverse = "grid"


@pytest.mark.timeout(180)
def test_umap_survives_a_cache_round_trip_with_its_grid(umap_fit, tmp_path):
    codes, proj = umap_fit
    key = {**KEY, "method": "umap", "grid": 6}
    ProjectionCache(tmp_path).get_or_compute(key, lambda: proj)
    loaded = ProjectionCache(tmp_path).get_or_compute(key, lambda: pytest.fail("recomputed"))
    assert isinstance(loaded, UMAPProjection) and loaded.umap_ is None
    np.testing.assert_array_equal(loaded.embedding_, proj.embedding_)
    np.testing.assert_array_equal(loaded.codes_, codes)
    clicks = np.array([[0.5, 0.5], [-100.0, 100.0]], np.float32)
    np.testing.assert_array_equal(loaded.inverse_transform(clicks), proj.inverse_transform(clicks))
    with pytest.raises(ProjectionError, match="refit"):
        loaded.precompute_inverse_grid((0, 1), (0, 1), 4)
