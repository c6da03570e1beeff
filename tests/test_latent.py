import numpy as np
import pytest
import torch
from scipy.stats import norm

from vae.data import ImageSplit
from vae.errors import ConfigError
from vae.codes import Codes
from vae.grids import gaussian_grid_2d, grid_points_2d, image_grid, padded_limits
from vae.latent import (decode_codes, decode_points, encode_means, encode_split, evaluating, interpolate,
                        interpolation_path, sample_box, sample_codes, sample_prior)
from vae.models import Autoencoder, ModelConfig


def tiny_model(latent_dim=2, variational=True, seed=0):
    torch.manual_seed(seed)
    return Autoencoder(ModelConfig(family="mlp", hidden=(32,), latent_dim=latent_dim, image_shape=(1, 28, 28),
                                   variational=variational))


def random_split(n=25, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageSplit(torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8),
                      torch.randint(0, 10, (n,), generator=g))


@pytest.mark.parametrize("variational", [True, False])
def test_encode_split_returns_posterior_means_in_order(variational):
    model, split = tiny_model(latent_dim=8, variational=variational), random_split(25)
    codes = encode_split(model, split, batch_size=10)  # 3 batches, the last one partial
    assert isinstance(codes, Codes) and len(codes) == 25 and codes.latent_dim == 8
    assert codes.mean.dtype == np.float32 and codes.labels.dtype == np.int64
    np.testing.assert_array_equal(codes.labels, split.labels.numpy())
    expected = model.eval().encode(model.preprocess(split.images)).mean.detach().numpy()
    np.testing.assert_allclose(codes.mean, expected, atol=1e-5)
    if variational:
        assert codes.logvar.shape == (25, 8) and codes.std.shape == (25, 8)
    else:
        assert codes.logvar is None and codes.std is None


def test_encode_split_leaves_training_mode_as_it_was():
    model = tiny_model().train()
    encode_split(model, random_split(4))
    assert model.training


def test_decode_points_is_channels_last_in_unit_range():
    model = tiny_model(latent_dim=8)
    images = decode_points(model, np.random.default_rng(0).normal(size=(5, 8)) * 3)
    assert images.shape == (5, 28, 28, 1) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1
    assert decode_points(model, np.zeros(8)).shape == (1, 28, 28, 1)  # one point
    with pytest.raises(ConfigError, match="expected \\[M, 8\\]"):
        decode_points(model, np.zeros((3, 2)))


def test_interpolation_includes_both_ends_on_a_straight_line():
    z_a, z_b = np.zeros(8, np.float32), np.arange(8, dtype=np.float32)
    path = interpolation_path(z_a, z_b, steps=5)
    assert path.shape == (5, 8)
    np.testing.assert_array_equal(path[0], z_a)
    np.testing.assert_allclose(path[-1], z_b)
    np.testing.assert_allclose(np.diff(path, axis=0), np.tile(z_b / 4, (4, 1)), atol=1e-6)  # equal steps
    model = tiny_model(latent_dim=8)
    strip = interpolate(model, z_a, z_b, steps=5)
    assert strip.shape == (5, 28, 28, 1)
    np.testing.assert_allclose(strip[-1], decode_points(model, z_b)[0], atol=1e-6)
    with pytest.raises(ConfigError, match="steps"):
        interpolation_path(z_a, z_b, steps=1)


def test_prior_samples_are_seeded_standard_normal():
    model = tiny_model(latent_dim=8)
    z, images = sample_prior(model, 400, seed=3)
    assert z.shape == (400, 8) and images.shape == (400, 28, 28, 1)
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.1
    np.testing.assert_array_equal(sample_prior(model, 400, seed=3)[0], z)
    assert not np.array_equal(sample_prior(model, 400, seed=4)[0], z)


def test_box_samples_stay_inside_the_codes_box():
    model = tiny_model(latent_dim=2, variational=False)
    codes = np.array([[-3.0, 10.0], [5.0, 12.0], [0.0, 11.0]], np.float32)
    z, images = sample_box(model, codes, 200, seed=0)
    assert z.shape == (200, 2) and images.shape == (200, 28, 28, 1)
    assert (z >= codes.min(0)).all() and (z <= codes.max(0)).all()
    assert z[:, 0].max() - z[:, 0].min() > 6  # it fills the box, not a corner
    np.testing.assert_array_equal(sample_box(model, codes, 200, seed=0)[0], z)


def test_grid_points_are_row_major_with_the_top_row_at_max_y():
    points = grid_points_2d((0, 2), (-1, 1), n=3)
    assert points.shape == (9, 2)
    np.testing.assert_allclose(points[:3], [[0, 1], [1, 1], [2, 1]])  # first row: top, left to right
    np.testing.assert_allclose(points[-1], [2, -1])
    with pytest.raises(ConfigError, match="n="):
        grid_points_2d((0, 1), (0, 1), n=1)


def test_gaussian_grid_is_symmetric_with_equal_prior_mass_per_cell():
    n, eps = 7, 0.05
    points = gaussian_grid_2d(n, eps)
    xs, ys = points[:n, 0], points[::n, 1]
    np.testing.assert_allclose(xs, -xs[::-1], atol=1e-6)  # symmetric about 0
    np.testing.assert_allclose(ys, xs[::-1], atol=1e-6)  # same axis, top row = max y
    steps = np.diff(norm.cdf(xs))
    np.testing.assert_allclose(steps, (1 - 2 * eps) / (n - 1), rtol=1e-5)  # equal mass between nodes
    assert np.diff(xs)[n // 2 - 1] < np.diff(xs)[0]  # so spacing is densest at the centre
    np.testing.assert_allclose(xs[0], norm.ppf(eps), rtol=1e-5)


def test_padded_limits_contain_the_points():
    xlim, ylim = padded_limits(np.array([[0, 0], [10, 2]]), margin=0.1)
    assert xlim == pytest.approx((-1, 11)) and ylim == pytest.approx((-0.2, 2.2))


def test_image_grid_tiles_with_one_pixel_separators():
    images = np.zeros((5, 4, 3, 1), np.float32)
    images[4] = 1.0
    grid = image_grid(images, nrow=3)
    assert grid.dtype == np.uint8 and grid.shape == (2 * 4 + 1, 3 * 3 + 2, 1)
    assert grid[4, 0, 0] == 128  # the separator row
    assert (grid[5:, 4:7] == 255).all()  # the fifth tile: second row, second column
    assert (grid[5:, 8:] == 128).all()  # the empty sixth cell
    strip = image_grid(np.zeros((4, 2, 2, 3), np.uint8), nrow=10)
    assert strip.shape == (2, 4 * 2 + 3, 3)  # one row, no wider than the images


def test_box_samples_stay_inside_the_box():
    codes = torch.tensor([[-1.0, 10.0], [3.0, 12.0], [0.0, 11.0]])
    z = sample_codes(2, 500, seed=0, source="box", box_codes=codes)
    assert (z[:, 0] >= -1).all() and (z[:, 0] <= 3).all() and (z[:, 1] >= 10).all() and (z[:, 1] <= 12).all()
    with pytest.raises(ConfigError, match="box_codes"):
        sample_codes(2, 5, seed=0, source="box")
    with pytest.raises(ConfigError, match="source"):
        sample_codes(2, 5, seed=0, source="grid")


def test_the_torch_and_numpy_helpers_are_one_encode_and_one_decode():
    """The scores (torch, [N, C, H, W]) and the pages (numpy, channels-last) see the same codes and images."""
    model = tiny_model()
    images = (torch.rand(7, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    means = encode_means(model, images, batch_size=3)
    np.testing.assert_array_equal(means.numpy(), encode_split(model, ImageSplit(images, torch.zeros(7).long()), 3).mean)
    decoded = decode_codes(model, means, batch_size=4)
    assert decoded.shape == (7, 1, 28, 28)
    np.testing.assert_array_equal(decoded.permute(0, 2, 3, 1).numpy(), decode_points(model, means.numpy(), 4))
    assert encode_means(model, images[:0]).shape == (0, 2) and decode_points(model, np.zeros((0, 2))).shape[0] == 0


def test_evaluating_puts_the_model_back_in_its_mode_even_after_an_error():
    model = tiny_model().train()
    with pytest.raises(RuntimeError), evaluating(model):
        assert not model.training
        raise RuntimeError("inside")
    assert model.training

