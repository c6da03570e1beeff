"""vae/uploads.py: an uploaded .npz or image-folder .zip is checked before it is unpacked."""
import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vae import DatasetError, load_dataset
from vae.uploads import UploadLimits, store_upload

ROOT = Path(__file__).resolve().parent.parent  # AppTest resolves a relative path against this file


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def good_arrays(n_train=30, n_test=10, shape=(28, 28)):
    rng = np.random.default_rng(0)
    return dict(x_train=rng.integers(0, 256, (n_train, *shape), dtype=np.uint8), y_train=rng.integers(0, 3, n_train),
                x_test=rng.integers(0, 256, (n_test, *shape), dtype=np.uint8), y_test=rng.integers(0, 3, n_test))


def png(size=(8, 8), value=100, mode="L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, value if mode == "L" else (value, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def image_folder_zip(top="shapes/", classes=("circle", "square"), n=3, **png_args) -> dict[str, bytes]:
    return {f"{top}{split}/{c}/{i}.png": png(value=40 * i, **png_args)
            for split in ("train", "test") for c in classes for i in range(n)}


def declare_size(data: bytes, member: str, size: int) -> bytes:
    """The same zip with `member`'s uncompressed size in the central directory set to `size`."""
    at = data.index(b"PK\x01\x02")  # the first central directory header
    while True:
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46:at + 46 + name_len].decode() == member:
            return data[:at + 24] + struct.pack("<I", size) + data[at + 28:]
        at = data.index(b"PK\x01\x02", at + 4)


def test_a_valid_npz_is_stored_once_by_content_and_loads(tmp_path):
    data = npz_bytes(**good_arrays())
    stored = store_upload("my digits.npz", data, tmp_path)
    assert stored.path.parent.parent == tmp_path and stored.path.name == "my-digits.npz" and stored.kind == "npz"
    assert (stored.image_shape, stored.train_size, stored.test_size) == ((1, 28, 28), 30, 10)
    assert "30 training and 10 test images of 28×28 grey-scale" in stored.describe()
    d = load_dataset(str(stored.path))  # what a training job does with the path
    assert d.image_shape == (1, 28, 28) and len(d.train) == 30
    assert store_upload("again.npz", data, tmp_path).path == stored.path  # content-addressed: stored once
    assert len(list(tmp_path.iterdir())) == 1
    assert not list(tmp_path.glob(".upload-*"))  # no staging folder left


def test_a_valid_image_folder_zip_keeps_its_class_names(tmp_path):
    stored = store_upload("shapes.zip", zip_bytes({**image_folder_zip(), "__MACOSX/._x": b"junk",
                                                  "shapes/.DS_Store": b"junk"}), tmp_path / "uploads")
    assert stored.kind == "folder" and stored.path.is_dir() and stored.classes == ("circle", "square")
    d = load_dataset(str(stored.path))
    assert d.classes == ["circle", "square"] and d.image_shape == (1, 8, 8) and len(d.train) == len(d.test) == 6


def test_a_colour_zip_without_a_top_folder(tmp_path):
    stored = store_upload("c.zip", zip_bytes(image_folder_zip(top="", mode="RGB")), tmp_path)
    assert stored.image_shape == (3, 8, 8)


def test_an_upload_over_the_cap_is_refused_before_it_is_read(tmp_path):
    data = npz_bytes(**good_arrays())
    with pytest.raises(DatasetError, match=r"this server takes uploads of at most 0 MB"):
        store_upload("big.npz", data, tmp_path, UploadLimits(max_bytes=len(data) - 1))
    assert not list(tmp_path.iterdir())


def test_a_zip_bomb_by_ratio_is_refused(tmp_path):
    bomb = zip_bytes({**image_folder_zip(), "shapes/train/circle/zeros.png": bytes(20 * 2**20)})
    assert len(bomb) < 2**20  # 20 MB of zeros packs to ~20 kB
    with pytest.raises(DatasetError, match="compressed .* to 1 .*zip bomb"):
        store_upload("bomb.zip", bomb, tmp_path)


@pytest.mark.parametrize("kind", ["zip", "npz"])
def test_a_member_that_declares_a_huge_size_is_refused_before_unpacking(tmp_path, kind):
    if kind == "zip":
        data = declare_size(zip_bytes(image_folder_zip()), "shapes/train/circle/0.png", 3 * 2**30)
    else:
        data = declare_size(npz_bytes(**good_arrays()), "x_train.npy", 3 * 2**30)
    with pytest.raises(DatasetError, match=r"unpacks to 3,07\d MB; this server takes at most 256 MB"):
        store_upload(f"liar.{kind}", data, tmp_path)


def test_a_member_larger_than_its_header_says_is_refused(tmp_path):
    data = declare_size(zip_bytes(image_folder_zip()), "shapes/train/circle/0.png", 10)
    with pytest.raises(DatasetError, match="0.png"):
        store_upload("short.zip", data, tmp_path)


def test_too_many_members(tmp_path):
    with pytest.raises(DatasetError, match="holds 12 files; this server takes at most 5"):
        store_upload("many.zip", zip_bytes(image_folder_zip()), tmp_path, UploadLimits(max_members=5))


@pytest.mark.parametrize("evil", ["../evil.png", "shapes/train/../../evil.png", "/tmp/evil.png", "C:/evil.png",
                                  "shapes\\..\\evil.png"])
def test_zip_slip_names_are_refused_and_nothing_is_written(tmp_path, evil):
    folder = tmp_path / "uploads"
    with pytest.raises(DatasetError, match="refused"):
        store_upload("slip.zip", zip_bytes({**image_folder_zip(), evil: png()}), folder)
    assert not list(tmp_path.rglob("evil.png"))
    assert not [p for p in folder.rglob("*") if p.is_file()]


def test_a_symlink_member_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in image_folder_zip().items():
            z.writestr(name, data)
        link = zipfile.ZipInfo("shapes/train/circle/link.png")
        link.external_attr = (0o120777 << 16)
        z.writestr(link, "/etc/passwd")
    with pytest.raises(DatasetError, match="symbolic link"):
        store_upload("link.zip", buf.getvalue(), tmp_path)


@pytest.mark.parametrize("members,match", [
    ({"data/train/a/": b"", "data/test/a/": b""}, "holds no files"),
    ({"data/train/a/notes.txt": b"hi", "data/test/a/notes.txt": b"hi"}, "notes.txt is not an image file"),
    ({"data/train/a/0.png": png(), "data/train/b/0.png": png()}, r"no images in test/<class>/"),
    ({"data/a/0.png": png(), "data/b/0.png": png()}, "is not in train/<class>/ or test/<class>/"),
    ({"data/train/a/0.png": png(), "data/train/b/0.png": png(), "data/test/a/0.png": png(),
      "data/test/c/0.png": png()}, "must be the same folders"),
    ({"data/train/a/0.png": png(), "data/test/a/0.png": png()}, "only one class"),
    ({**image_folder_zip(), "shapes/test/square/big.png": png(size=(9, 8))}, "all images must have one size"),
    ({**image_folder_zip(), "shapes/test/square/rgb.png": png(mode="RGB")}, "one colour kind"),
    ({**image_folder_zip(), "shapes/test/square/fake.png": b"not a png"}, "fake.png is not a readable image"),
    ({**image_folder_zip(), "shapes/test/square/huge.png": png(size=(300, 300))}, "at most 256×256"),
])
def test_bad_image_folder_zips_get_clear_errors(tmp_path, members, match):
    with pytest.raises(DatasetError, match=match):
        store_upload("bad.zip", zip_bytes(members), tmp_path)


def _without(arrays, key):
    return {k: v for k, v in arrays.items() if k != key}


@pytest.mark.parametrize("change,match", [
    (lambda a: _without(a, "y_test"), r"missing arrays \['y_test'\]"),
    (lambda a: {**_without(a, "x_train"), "images": a["x_train"]}, r"missing arrays \['x_train'\]"),
    (lambda a: {**a, "extra": np.zeros(3)}, "unexpected members"),
    (lambda a: {**a, "x_train": a["x_train"].astype(np.float32)}, "x_train must be uint8"),
    (lambda a: {**a, "x_train": a["x_train"].reshape(30, -1)}, r"x_train has shape \(30, 784\)"),
    (lambda a: {**a, "x_test": np.zeros((10, 28, 28, 5), np.uint8)}, r"x_test has shape \(10, 28, 28, 5\)"),
    (lambda a: {**a, "y_train": a["y_train"][:5]}, r"y_train must be 30 integer labels"),
    (lambda a: {**a, "y_test": a["y_test"].astype(float)}, "y_test must be 10 integer labels"),
    (lambda a: {**a, "x_test": np.zeros((10, 32, 32), np.uint8)}, "must match"),
    (lambda a: {**a, "y_train": np.full(30, 10**9)}, "labels must be class numbers"),
    (lambda a: {**a, "y_test": np.full(10, -1)}, "labels must be class numbers"),
    (lambda a: {**a, "x_train": np.zeros((0, 28, 28), np.uint8), "y_train": np.zeros(0, int)}, "x_train is empty"),
    (lambda a: {**a, "x_train": np.zeros((2, 512, 512), np.uint8), "y_train": np.zeros(2, int),
                "x_test": np.zeros((2, 512, 512), np.uint8), "y_test": np.zeros(2, int)}, "at most 256×256"),
])
def test_npz_with_wrong_keys_or_shapes_gets_clear_errors(tmp_path, change, match):
    with pytest.raises(DatasetError, match=match):
        store_upload("bad.npz", npz_bytes(**change(good_arrays())), tmp_path)
    assert not list(tmp_path.iterdir())


def test_an_npz_of_python_objects_is_refused_without_unpickling(tmp_path):
    arrays = {**good_arrays(), "y_train": np.array([object()] * 30)}
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # allow_pickle on save: the file holds a pickle
    with pytest.raises(DatasetError, match="Python objects"):
        store_upload("pickle.npz", buf.getvalue(), tmp_path)


def test_a_truncated_npz_member(tmp_path):
    data = npz_bytes(**good_arrays())
    with pytest.raises(DatasetError, match="bad.npz"):
        store_upload("bad.npz", data[: len(data) // 2], tmp_path)


@pytest.mark.parametrize("name,data,match", [
    ("data.csv", b"1,2,3", "expected a .npz file or a .zip"),
    ("data.npz", b"not a zip", "not a readable .npz archive"),
    ("data.zip", b"", "is empty"),
])
def test_not_an_archive(tmp_path, name, data, match):
    with pytest.raises(DatasetError, match=match):
        store_upload(name, data, tmp_path)


def test_the_hosted_train_page_offers_an_upload(tmp_path, monkeypatch):
    """The browser part (file in, checked, offered for training; inside another site's frame on
    the Space) is tests/e2e/test_browser.py's and test_iframe_upload.py's."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LATENT_EXPLORER_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("LATENT_EXPLORER_CHECKPOINTS", str(tmp_path / "none"))
    monkeypatch.setenv("LATENT_EXPLORER_HOSTED", "1")
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=60).run()
        options = at.selectbox(key="train_dataset").options
        assert "Upload (.npz or .zip)" in options and not any("on this server" in o for o in options)
        at.selectbox(key="train_dataset").select("upload").run()
        assert not at.exception
        assert at.button(key="FormSubmitter:train_form-Start training").disabled  # nothing uploaded yet
    finally:
        st.cache_resource.clear()
