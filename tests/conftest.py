import numpy as np
import pytest
import torch

from vae.data import ImageDataset, ImageSplit


def make_blobs_dataset(n_train=256, n_test=64, shape=(1, 28, 28), seed=0) -> ImageDataset:
    """Two classes of synthetic images (a bright square top-left or bottom-right), plus noise."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape

    def split(n):
        labels = torch.randint(0, 2, (n,), generator=g)
        x = torch.rand((n, c, h, w), generator=g) * 40
        x[labels == 0, :, : h // 2, : w // 2] += 200
        x[labels == 1, :, h // 2:, w // 2:] += 200
        return ImageSplit(x.clamp(0, 255).to(torch.uint8), labels)

    return ImageDataset("blobs", split(n_train), split(n_test), ["top-left", "bottom-right"], source="synthetic")


@pytest.fixture
def blobs():
    return make_blobs_dataset()


@pytest.fixture
def npz_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), y_train=rng.integers(0, 3, 40),
             x_test=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), y_test=rng.integers(0, 3, 10))
    return path


@pytest.fixture
def bands_npz(tmp_path):
    """600 train / 120 test 28x28 images of 3 classes, a bright band whose height is the class:
    big enough for a few hundred training steps."""
    rng = np.random.default_rng(0)

    def split(n):
        y = rng.integers(0, 3, n)
        x = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
        for c in range(3):
            x[y == c, 9 * c:9 * c + 9, :] += 150
        return x, y

    (xtr, ytr), (xte, yte) = split(600), split(120)
    path = tmp_path / "bands.npz"
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return path
