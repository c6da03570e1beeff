import numpy as np
import pytest
import torch
from PIL import Image

from vae import DatasetError, load_dataset
from vae import data as data_mod


def test_embedded_mnist_is_real_digits_shuffled_and_split():
    d = load_dataset("embedded-mnist")
    assert d.image_shape == (1, 28, 28) and d.train.images.dtype == torch.uint8
    assert len(d.train) == 4000 and len(d.test) == 1000
    assert set(d.test.labels.tolist()) == set(range(10))  # shuffled before the split: every class
    assert d.classes == [str(i) for i in range(10)]


def test_npz_source(npz_file):
    d = load_dataset(str(npz_file))
    assert d.image_shape == (1, 28, 28) and len(d.train) == 40 and len(d.test) == 10


def test_npz_channels_last_colour(tmp_path):
    path = tmp_path / "c.npz"
    x = np.zeros((4, 8, 8, 3), np.uint8)
    np.savez(path, x_train=x, y_train=np.arange(4), x_test=x[:2], y_test=np.arange(2))
    assert load_dataset(str(path)).image_shape == (3, 8, 8)


@pytest.mark.parametrize("arrays,match", [
    ({"x_train": np.zeros((2, 4, 4), np.uint8)}, "missing arrays"),
    ({"x_train": np.zeros((2, 4, 4), np.float32), "y_train": np.zeros(2, int),
      "x_test": np.zeros((2, 4, 4), np.uint8), "y_test": np.zeros(2, int)}, "uint8"),
    ({"x_train": np.zeros((2, 4), np.uint8), "y_train": np.zeros(2, int),
      "x_test": np.zeros((2, 4, 4), np.uint8), "y_test": np.zeros(2, int)}, "shape"),
    ({"x_train": np.zeros((2, 4, 4), np.uint8), "y_train": np.zeros(3, int),
      "x_test": np.zeros((2, 4, 4), np.uint8), "y_test": np.zeros(2, int)}, "labels"),
])
def test_bad_npz_files_get_clear_errors(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=match):
        load_dataset(str(path))


def test_not_an_npz(tmp_path):
    path = tmp_path / "fake.npz"
    path.write_bytes(b"this is not a zip")
    with pytest.raises(DatasetError, match="not a readable"):
        load_dataset(str(path))


def _write_folder(root, n=3):
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / split / cls / f"{i}.png")


def test_image_folder_and_its_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_EXPLORER_DATA", str(tmp_path / "cache"))
    _write_folder(tmp_path / "pets")
    d = load_dataset(str(tmp_path / "pets"))
    assert d.classes == ["cat", "dog"] and d.image_shape == (3, 8, 8) and len(d.train) == 6
    again = load_dataset(str(tmp_path / "pets"))  # from the .npz cache
    assert torch.equal(again.train.images, d.train.images) and again.classes == d.classes


def test_image_folder_without_train_or_images(tmp_path):
    (tmp_path / "empty" / "test").mkdir(parents=True)
    with pytest.raises(DatasetError, match="train"):
        load_dataset(str(tmp_path / "empty"))
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "test" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError):
        load_dataset(str(tmp_path / "empty"))


def test_unknown_name():
    with pytest.raises(DatasetError, match="neither a known name"):
        load_dataset("imagenet-22k")


def test_failed_download_falls_back_with_a_note(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise data_mod.DatasetError("Could not download cifar10 (URLError: offline).")

    monkeypatch.setattr(data_mod, "load_torchvision", offline)
    d = load_dataset("cifar10", root=tmp_path)
    assert d.name == "embedded-mnist" and "Could not download" in d.notes[0]
    with pytest.raises(DatasetError, match="Could not download"):
        load_dataset("cifar10", root=tmp_path, fallback=False)


def test_download_failure_is_wrapped_not_raw(tmp_path, monkeypatch):
    import torchvision

    def boom(*a, **k):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", boom)
    with pytest.raises(DatasetError, match="Could not download mnist"):
        data_mod.load_torchvision("mnist", tmp_path)


def test_batches_cover_the_split_once(blobs):
    seen = torch.cat([y for _, y in blobs.train.batches(50, torch.Generator().manual_seed(0))])
    assert len(seen) == len(blobs.train)
    assert sorted(seen.tolist()) == sorted(blobs.train.labels.tolist())


def test_a_download_times_out_by_itself_and_leaves_the_process_socket_default_alone(tmp_path, monkeypatch):
    # socket.setdefaulttimeout is process-wide: set around a download, it changes every socket the
    # server opens meanwhile (in every thread)
    import socket
    import urllib.error
    import urllib.request

    calls = []

    def offline(request, *args, timeout=None, **kwargs):
        calls.append((timeout, socket.getdefaulttimeout()))
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    default = socket.getdefaulttimeout()
    with pytest.raises(DatasetError, match="Could not download mnist"):
        data_mod.load_torchvision("mnist", tmp_path)
    assert calls and all(c == (data_mod.DOWNLOAD_TIMEOUT_S, default) for c in calls), calls


def test_fetch_tries_each_mirror_until_the_checksum_matches(tmp_path, monkeypatch):
    import hashlib
    import io
    import urllib.request

    served = {"http://a/f.gz": b"corrupt", "http://b/f.gz": b"the real bytes"}
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: io.BytesIO(served[request.full_url]))
    md5 = hashlib.md5(b"the real bytes").hexdigest()
    data_mod._fetch(["http://a/f.gz", "http://b/f.gz"], tmp_path / "raw" / "f.gz", md5)
    assert (tmp_path / "raw" / "f.gz").read_bytes() == b"the real bytes"
    with pytest.raises(OSError, match="checksum mismatch"):
        data_mod._fetch(["http://a/f.gz"], tmp_path / "g.gz", md5)


def test_the_folder_cache_sees_an_image_added_inside_a_class_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_EXPLORER_DATA", str(tmp_path / "cache"))
    _write_folder(tmp_path / "pets")
    assert len(load_dataset(str(tmp_path / "pets")).train) == 6
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "pets" / "train" / "cat" / "new.png")
    assert len(load_dataset(str(tmp_path / "pets")).train) == 7


def test_the_model_pages_find_a_data_set_in_the_same_data_folder(tmp_path, bands_npz, monkeypatch):
    import shutil

    from vae.catalog import data_for

    monkeypatch.setenv("LATENT_EXPLORER_DATA", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    shutil.copy(bands_npz, tmp_path / "data" / "bands.npz")
    found = data_for({"name": "bands", "source": "/gone/bands.npz"}, (1, 28, 28), allow_download=False)
    assert found.source == str(tmp_path / "data" / "bands.npz") and len(found.train) == 600
    assert data_mod.local_copy("embedded-mnist") is None and data_mod.local_copy("../bands") is None


def test_the_old_name_of_the_data_setting_is_not_read_but_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_EXPLORER_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("LATENT_EXPLORER_DATA_DIR", str(tmp_path / "old"))
    with pytest.warns(UserWarning, match="set LATENT_EXPLORER_DATA instead"):
        assert data_mod.default_root() == tmp_path / "data"
