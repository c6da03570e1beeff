"""The reference classifier: it learns, it round-trips through its file, and a bad file says so."""
import numpy as np
import pytest
import torch

from vae.checkpoint import Checkpoint, save_checkpoint
from vae.classifier import (FORMAT, Classifier, ClassifierConfig, default_config, load_classifier, main,
                            random_crop_flip, read_classifier_metadata, save_classifier, train_classifier)
from vae.data import ImageDataset, ImageSplit
from vae.errors import CheckpointError, ConfigError
from vae.models import Autoencoder, ModelConfig

SIZE = 12


def block_images(n: int, seed: int = 0, channels: int = 1):
    """Four classes: a bright 4x4 block in one quadrant of a noisy dark image."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.randint(0, 30, (n, channels, SIZE, SIZE), generator=gen, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        r, q = 1 + 6 * (c // 2), 1 + 6 * (c % 2)
        images[i, :, r:r + 4, q:q + 4] = 255
    return images, labels


def block_dataset(n_train=400, n_test=100, channels=1) -> ImageDataset:
    train, test = block_images(n_train, 0, channels), block_images(n_test, 1, channels)
    return ImageDataset("blocks", ImageSplit(*train), ImageSplit(*test), ["tl", "tr", "bl", "br"])


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    return train_classifier(block_dataset(), epochs=3, batch_size=32, channels=(4, 8))


def test_learns_separable_classes(trained):
    assert trained.test_accuracy >= 0.95
    assert trained.classes == ["tl", "tr", "bl", "br"] and trained.dataset == "blocks"


def test_probs_and_features_shapes_and_mode(trained):
    images, _ = block_images(10, seed=3)
    trained.train()
    probs, feats = trained.probs(images), trained.features(images.float() / 255)
    assert probs.shape == (10, 4) and torch.allclose(probs.sum(1), torch.ones(10))
    assert feats.shape == (10, trained.feature_dim)
    assert trained.training  # the conveniences restore the caller's mode
    trained.eval()
    assert torch.equal(trained.probs(images), trained.probs(images.float() / 255))  # uint8 == [0, 1] floats


def test_save_load_round_trip(trained, tmp_path):
    path = save_classifier(trained, tmp_path / "clf.safetensors", train={"epochs": 3})
    loaded = load_classifier(path)
    images, _ = block_images(20, seed=4)
    assert torch.allclose(loaded.probs(images), trained.probs(images), atol=1e-6)
    assert loaded.config == trained.config and loaded.classes == trained.classes
    assert loaded.test_accuracy == pytest.approx(trained.test_accuracy)
    meta = read_classifier_metadata(path)
    assert meta["format"] == FORMAT and meta["dataset"] == "blocks" and meta["train"] == {"epochs": 3}
    assert not list(tmp_path.glob("*.tmp"))  # the temporary file was renamed, not left behind


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
def test_corrupt_file_names_the_file(trained, tmp_path, damage):
    path = save_classifier(trained, tmp_path / "broken.safetensors")
    if damage == "garbage":
        path.write_bytes(b"not a safetensors file at all" * 10)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        load_classifier(path)


def test_model_checkpoint_is_not_a_classifier(tmp_path):
    path = save_checkpoint(Checkpoint(Autoencoder(ModelConfig(image_shape=(1, 8, 8), hidden=(8,), latent_dim=2))),
                           tmp_path / "vae.safetensors")
    with pytest.raises(CheckpointError, match="vae.safetensors.*not a Latent Explorer classifier"):
        load_classifier(path)


def test_random_crop_flip_gives_shifted_crops():
    x = torch.rand(30, 3, 8, 8)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for b in range(len(x)):
        crops = [padded[b, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[b], c) or torch.equal(out[b], c.flip(2)) for c in crops)


def test_colour_images_train_with_augmentation():
    model = train_classifier(block_dataset(64, 16, channels=3), epochs=1, batch_size=32, channels=(4,))
    assert model.config.image_shape == (3, SIZE, SIZE) and 0 <= model.test_accuracy <= 1


def test_default_configs_per_data_set():
    assert default_config((1, 28, 28), 10).channels == (16, 32, 64)
    assert default_config((3, 32, 32), 10).channels == (32, 64, 128)
    with pytest.raises(ConfigError, match="too small"):
        ClassifierConfig(image_shape=(1, 4, 4), channels=(4, 8, 16))
    size_mb = sum(p.numel() for p in Classifier(default_config((3, 32, 32), 10)).parameters()) * 4 / 1e6
    assert size_mb < 2  # the shipped CIFAR-10 file stays small


def test_cli_trains_and_prints_accuracy(tmp_path, capsys):
    (xtr, ytr), (xte, yte) = block_images(200, 0), block_images(40, 1)
    npz = tmp_path / "blocks.npz"
    np.savez(npz, x_train=xtr[:, 0].numpy(), y_train=ytr.numpy(), x_test=xte[:, 0].numpy(), y_test=yte.numpy())
    out = tmp_path / "classifier-blocks.safetensors"
    args = ["--data", str(npz), "--out", str(out), "--epochs", "2", "--channels", "4,8", "--batch-size", "32"]
    assert main(args) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert load_classifier(out).dataset == "blocks"


def test_cli_reports_bad_data(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "c.safetensors")]) == 2
    assert "nope.npz" in capsys.readouterr().err


def test_a_failed_prediction_leaves_the_model_in_the_mode_it_was_in():
    model = Classifier(default_config((1, SIZE, SIZE), 4)).train()
    with pytest.raises(RuntimeError):
        model.probs(torch.zeros(2, 3, SIZE + 1, SIZE + 1, dtype=torch.uint8))  # not the images it reads
    assert model.training


def test_judges_for_keeps_the_readable_judges_and_names_the_broken_one(trained, tmp_path):
    """A broken judge file beside good ones is left out with a message naming it, never raised
    (the app's sidebar and ui.prebuild's log show the message); an unknown data set has none."""
    from vae.evaluate import judges_for

    save_classifier(trained, tmp_path / "classifier-mnist.safetensors")
    (tmp_path / "classifier-mnist-mlp.safetensors").write_bytes(b"not a classifier")
    good, bad = judges_for("mnist", (1, 28, 28), [tmp_path])
    assert good == [tmp_path / "classifier-mnist.safetensors"]
    assert len(bad) == 1 and "classifier-mnist-mlp.safetensors" in bad[0]
    assert judges_for("my-own-data", (3, 17, 17), [tmp_path]) == ([], [])
