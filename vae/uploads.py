"""Data sets that a visitor uploads to a shared server: checked before anything is unpacked.

Two kinds of upload, given as the file's name and its bytes:
- a `.npz` with x_train, y_train, x_test, y_test (what `vae.data.load_npz` reads);
- a `.zip` of an image folder: train/<class>/* and test/<class>/* (optionally inside one top
  folder, as zipping a folder makes it).

Both are zip archives, and a zip's central directory says how big each member claims to be
before a byte is inflated. So the caps are checked there first (the upload's size, the number of
members, their total unpacked size and each one's compression ratio: a zip bomb fails before it
is opened), then each member's name (no absolute paths, no `..`: zip slip; no control characters,
none too long for a file system, no two that differ only in case), then the .npy headers or the
image headers (shape, dtype, one image size, at most `max_classes` classes). Only then is the
upload written, under a name made from its content hash, fully loaded once with `vae.data` (so
every remaining problem is reported now, not when a job starts), and moved into place. Every
refusal raises DatasetError with a message a visitor can act on, naming members as they are
inside the upload, never a path on the server. Nothing here imports streamlit.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import time
import unicodedata
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .data import load_image_folder, load_npz
from .errors import DatasetError

MiB = 2**20
NAME_MAX_BYTES = 255  # one file or folder name, in UTF-8 bytes: the limit of ext4, XFS, btrfs and most others
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")  # a subset of torchvision's
JUNK = ("__MACOSX/", ".DS_Store", "Thumbs.db", "desktop.ini")  # what zipping a folder adds on macOS / Windows


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may be. The unpacked cap bounds memory: the whole data set is loaded once."""

    max_bytes: int = 50 * MiB  # the uploaded file itself
    max_unpacked_bytes: int = 256 * MiB  # all members together, as their headers declare (CIFAR-10: 184 MB)
    max_members: int = 100_000  # files in a .zip (MNIST as PNGs: 70,000)
    max_ratio: float = 100.0  # unpacked / packed size of one member (real images and arrays: under 10)
    max_image_side: int = 256  # pixels, per side of one image
    # smaller images hold too little to map, and the conv presets need sides divisible by 8
    min_image_side: int = 8
    max_classes: int = 1000  # class folders of a .zip, or label values of a .npz: one limit for both

    @classmethod
    def from_mb(cls, max_upload_mb: int) -> UploadLimits:
        return cls(max_bytes=int(max_upload_mb) * MiB)


@dataclass(frozen=True)
class StoredUpload:
    """An upload that passed every check, stored where `vae.data.load_dataset(path)` reads it."""

    path: Path  # the .npz file or the image folder
    kind: str  # "npz" or "folder"
    image_shape: tuple  # (C, H, W)
    train_size: int
    test_size: int
    classes: tuple

    def describe(self) -> str:
        c, h, w = self.image_shape
        return (f"{self.train_size:,} training and {self.test_size:,} test images of {h}×{w} "
                f"{'colour' if c == 3 else 'grey-scale'}, {len(self.classes)} classes")


def store_upload(name: str, data: bytes, folder: str | Path, limits: UploadLimits = UploadLimits()) -> StoredUpload:
    """Check an uploaded .npz or .zip and store it in `folder` (see the module doc).

    Content-addressed: `<folder>/<sha256 of the bytes>/<name as uploaded>`, so the same bytes
    uploaded twice (under any name, by anyone) are stored once, under the first name."""
    suffix = Path(name).suffix.lower()
    if suffix not in (".npz", ".zip"):
        raise DatasetError(f"{name}: expected a .npz file or a .zip of an image folder, not {suffix or 'no extension'}")
    check_size(name, data, limits)
    folder = Path(folder)
    home = folder / upload_digest(data)
    stored = _read_summary(home)
    if stored is not None:
        os.utime(home)  # recently used: the last to be pruned
        return stored
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(name).stem).strip("-")[:40] or "upload"
    filename = f"{stem}.npz" if suffix == ".npz" else stem
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".upload-", dir=folder) as tmp:
        staged_home = Path(tmp) / home.name
        staged_home.mkdir()
        loaded = _stage(name, data, staged_home / filename, suffix == ".npz", limits)
        stored = StoredUpload(home / filename, "npz" if suffix == ".npz" else "folder", tuple(loaded.image_shape),
                              len(loaded.train), len(loaded.test), tuple(loaded.classes))
        del loaded
        (staged_home / SUMMARY).write_text(json.dumps({**asdict(stored), "path": filename}))
        if home.exists():  # a half-stored upload of an earlier crash (no summary): replaced
            shutil.rmtree(home, ignore_errors=True)
        try:
            os.replace(staged_home, home)  # atomic: a visitor uploading the same file at once sees one or the other
        except OSError:
            stored = _read_summary(home)
            if stored is None:
                raise
    return stored


SUMMARY = "upload.json"


def upload_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:24]


def upload_of(path: str | Path, folder: str | Path) -> str | None:
    """The digest of the stored upload that `path` (a job's data source) lies in, or None when it
    is not inside `folder`."""
    try:
        parts = Path(path).resolve().relative_to(Path(folder).resolve()).parts
    except ValueError:
        return None
    return parts[0] if parts else None


def prune_uploads(folder: str | Path, max_age_s: float, max_total_bytes: int, in_use: set[str] = frozenset(),
                  now: float | None = None) -> list[str]:
    """Delete stored uploads unused for longer than `max_age_s`, then the least recently used
    until all of them fit in `max_total_bytes`; never one in `in_use` (digests a job trains on).
    Returns the digests deleted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now = time.time() if now is None else now
    homes = []
    for home in folder.iterdir():
        if home.name.startswith(".") or not home.is_dir():
            continue
        size = sum(f.stat().st_size for f in home.rglob("*") if f.is_file())
        homes.append((home.stat().st_mtime, size, home))
    homes.sort()  # least recently used first
    total, removed = sum(h[1] for h in homes), []
    for mtime, size, home in homes:
        if home.name in in_use:
            continue
        if now - mtime > max_age_s or total > max_total_bytes:
            shutil.rmtree(home, ignore_errors=True)
            total -= size
            removed.append(home.name)
    return removed


def _stage(name: str, data: bytes, staged: Path, is_npz: bool, limits: UploadLimits):
    """Check the upload, write it at `staged` and load it once with vae.data. The loader's refusals
    name the server's files: they are reworded to name the members inside the upload."""
    if is_npz:
        check_npz(name, data, limits)
    members = [] if is_npz else check_image_zip(name, data, limits)
    try:
        if is_npz:
            staged.write_bytes(data)
            return load_npz(staged)
        _extract(data, members, staged)
        return load_image_folder(staged, cache=False)
    except DatasetError as err:
        raise DatasetError(_named_as_uploaded(str(err), name, staged, members)) from err
    except OSError as err:  # what this file system refuses and the checks did not foresee; strerror names no path
        raise DatasetError(f"{name} cannot be unpacked on this server ({err.strerror or type(err).__name__})") from err


def _named_as_uploaded(message: str, name: str, staged: Path, members: list[_Member]) -> str:
    """`message` with each server path in it replaced by the member's name inside the upload."""
    for m in members:
        message = message.replace(str(staged / m.split / m.cls / m.file), m.info.filename)
    message = message.replace(str(staged), name).replace(str(staged.parent), name)
    return message if message.startswith(name) else f"{name}: {message}"


def check_size(name: str, data: bytes, limits: UploadLimits) -> None:
    if len(data) > limits.max_bytes:
        raise DatasetError(f"{name} is {len(data) / MiB:.1f} MB; this server takes uploads of at most "
                           f"{limits.max_bytes / MiB:.0f} MB. Upload fewer images (the training-images limit "
                           "samples them anyway), or a compressed .npz (numpy.savez_compressed).")
    if not data:
        raise DatasetError(f"{name} is empty")


# --- the archive, from its central directory ------------------------------------------------------
def _open_zip(name: str, data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise DatasetError(f"{name}: not a readable {Path(name).suffix or 'zip'} archive ({err})") from err


def check_archive(name: str, infos: list[zipfile.ZipInfo], limits: UploadLimits) -> None:
    """The zip-bomb guard: member count, declared unpacked total, per-member ratio, no encryption."""
    if len(infos) > limits.max_members:
        raise DatasetError(f"{name} holds {len(infos):,} files; this server takes at most {limits.max_members:,}")
    total = sum(i.file_size for i in infos)
    if total > limits.max_unpacked_bytes:
        raise DatasetError(f"{name} unpacks to {total / MiB:,.0f} MB; this server takes at most "
                           f"{limits.max_unpacked_bytes / MiB:,.0f} MB unpacked. Upload fewer images.")
    for info in infos:
        ratio = info.file_size / max(1, info.compress_size)
        if info.file_size > MiB and ratio > limits.max_ratio:
            raise DatasetError(f"{name}: {info.filename} is compressed {ratio:,.0f} to 1 (at most "
                               f"{limits.max_ratio:.0f} to 1 is accepted): refused as a possible zip bomb")
        if info.flag_bits & 0x1:
            raise DatasetError(f"{name}: {info.filename} is encrypted; upload an archive without a password")


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> bytes:
    """A member's bytes, never more than its header declared (a lying header is a CRC error)."""
    try:
        with z.open(info) as f:
            out = f.read(info.file_size + 1)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as err:
        raise DatasetError(f"{name}: {info.filename} cannot be unpacked ({err})") from err
    if len(out) > info.file_size:
        raise DatasetError(f"{name}: {info.filename} is larger than its header says: refused")
    return out


# --- .npz -----------------------------------------------------------------------------------
def check_npz(name: str, data: bytes, limits: UploadLimits) -> dict[str, tuple]:
    """Members and .npy headers of an uploaded .npz, before numpy loads it: {key: shape}."""
    with _open_zip(name, data) as z:
        infos = z.infolist()
        check_archive(name, infos, limits)
        members = {i.filename: i for i in infos}
        keys = {n[:-4]: i for n, i in members.items() if n.endswith(".npy")}
        missing = [k for k in NPZ_KEYS if k not in keys]
        if missing:
            raise DatasetError(f"{name}: missing arrays {missing}; a .npz needs x_train, y_train, x_test, y_test "
                               f"(it has {sorted(keys) or 'none'})")
        extra = sorted(set(members) - {f"{k}.npy" for k in NPZ_KEYS})
        if extra:
            raise DatasetError(f"{name}: unexpected members {extra[:5]}; a .npz needs exactly x_train, y_train, "
                               "x_test, y_test")
        shapes = {}
        for key in NPZ_KEYS:
            shape, dtype = _npy_header(z, keys[key], name)
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if keys[key].file_size < expected:
                raise DatasetError(f"{name}: {key} declares {shape} {dtype} but holds only "
                                   f"{keys[key].file_size:,} bytes (truncated?)")
            shapes[key] = (shape, dtype)
    for split in ("train", "test"):
        (xs, xt), (ys, yt) = shapes[f"x_{split}"], shapes[f"y_{split}"]
        if xt != np.uint8:
            raise DatasetError(f"{name}: x_{split} must be uint8 images (0-255), got {xt}")
        if not (len(xs) == 3 or (len(xs) == 4 and xs[-1] in (1, 3))):
            raise DatasetError(f"{name}: x_{split} has shape {xs}; expected N×H×W (grey) or N×H×W×C with C = 1 or 3")
        _check_image_size(name, "images of", xs[2], xs[1], limits)
        if not (np.issubdtype(yt, np.integer) and ys == (xs[0],)):
            raise DatasetError(f"{name}: y_{split} must be {xs[0]} integer labels (shape ({xs[0]},)), got {yt} {ys}")
        if xs[0] == 0:
            raise DatasetError(f"{name}: x_{split} is empty")
    if shapes["x_train"][0][1:] != shapes["x_test"][0][1:]:
        raise DatasetError(f"{name}: train images are {shapes['x_train'][0][1:]}, test images "
                           f"{shapes['x_test'][0][1:]}: they must match")
    _check_labels(name, data, limits)
    return {k: s for k, (s, _) in shapes.items()}


def _check_image_size(name: str, what: str, width: int, height: int, limits: UploadLimits) -> None:
    if max(width, height) > limits.max_image_side:
        raise DatasetError(f"{name}: {what} {width}×{height} pixels; this server takes at most "
                           f"{limits.max_image_side}×{limits.max_image_side}")
    if min(width, height) < limits.min_image_side:
        lo, hi = limits.min_image_side, limits.max_image_side
        raise DatasetError(f"{name}: {what} {width}×{height} pixels, too small to train on; this server trains on "
                           f"images from {lo}×{lo} to {hi}×{hi} pixels")


def _check_labels(name: str, data: bytes, limits: UploadLimits) -> None:
    """Labels are 0..K-1 with K <= max_classes (vae.data makes one class name per value up to the largest)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as f:  # reads only the members asked for
            labels = {k: f[k] for k in ("y_train", "y_test")}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise DatasetError(f"{name}: the labels cannot be read ({err})") from err
    for key, y in labels.items():
        if len(y) and (y.min() < 0 or y.max() >= limits.max_classes):
            raise DatasetError(f"{name}: {key} holds labels from {y.min()} to {y.max()}; labels must be class numbers "
                               f"0, 1, 2, ... below {limits.max_classes}")


def _npy_header(z: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> tuple[tuple, np.dtype]:
    fmt = np.lib.format
    try:
        with z.open(info) as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, _fortran, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _fortran, dtype = fmt.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise DatasetError(f"{name}: {info.filename} is not a readable .npy array ({err})") from err
    if dtype.hasobject:
        raise DatasetError(f"{name}: {info.filename} holds Python objects; only plain numeric arrays are accepted")
    return tuple(int(s) for s in shape), dtype


# --- .zip of an image folder ----------------------------------------------------------------------
@dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    split: str
    cls: str
    file: str


def check_image_zip(name: str, data: bytes, limits: UploadLimits) -> list[_Member]:
    """Names, layout and image headers of an uploaded image-folder zip: the members to unpack."""
    from PIL import Image, UnidentifiedImageError

    with _open_zip(name, data) as z:
        infos = z.infolist()
        check_archive(name, infos, limits)
        files = []
        for info in infos:
            parts = _safe_parts(name, info)
            if info.is_dir() or _is_junk(info.filename):
                continue
            files.append((info, parts))
        if not files:
            raise DatasetError(f"{name} holds no files; zip a folder with train/<class>/* and test/<class>/*")
        members = _layout(name, files, limits)
        shape = None
        for m in members:
            try:
                with Image.open(io.BytesIO(_read_member(z, m.info, name))) as im:
                    # vae.data decodes modes L and 1 as grey, every other mode as RGB
                    found = (im.width, im.height, "grey" if im.mode in ("L", "1") else "colour")
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
                raise DatasetError(f"{name}: {m.info.filename} is not a readable image ({err})") from err
            _check_image_size(name, f"{m.info.filename} is", found[0], found[1], limits)
            if shape is None:
                shape, first = found, m.info.filename
            elif found != shape:
                raise DatasetError(f"{name}: {m.info.filename} is {found[0]}×{found[1]} {found[2]}, but {first} is "
                                   f"{shape[0]}×{shape[1]} {shape[2]}: all images must have one size and one colour kind")
    return members


def _safe_parts(name: str, info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The member's path as parts; refuses what could land outside the folder (zip slip)."""
    raw = info.filename
    if "\\" in raw or "\x00" in raw or raw.startswith("/") or re.match(r"^[A-Za-z]:", raw):
        raise DatasetError(f"{name}: the member {raw!r} has an absolute or non-portable path: refused")
    parts = PurePosixPath(raw).parts
    if any(p in ("..", ".") for p in parts):
        raise DatasetError(f"{name}: the member {raw!r} points outside the folder ('..'): refused")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DatasetError(f"{name}: the member {raw!r} is a symbolic link: refused")
    if any(unicodedata.category(ch) == "Cc" for ch in raw):  # newlines, escapes: they garble logs and pages
        raise DatasetError(f"{name}: the member {raw!r} has a control character in its name: refused")
    longest = max((len(p.encode()) for p in parts), default=0)
    if longest > NAME_MAX_BYTES:  # unpacked, it would fail with "File name too long"
        raise DatasetError(f"{name}: the member {raw!r} has a name too long for a file system ({longest} bytes; "
                           f"at most {NAME_MAX_BYTES}): refused")
    return parts


def _is_junk(filename: str) -> bool:
    return filename.startswith(JUNK[0]) or PurePosixPath(filename).name in JUNK[1:] \
        or PurePosixPath(filename).name.startswith("._")


def _layout(name: str, files: list[tuple[zipfile.ZipInfo, tuple[str, ...]]], limits: UploadLimits) -> list[_Member]:
    """train/<class>/<file> and test/<class>/<file>, optionally under one common top folder."""
    tops = {parts[0] for _, parts in files}
    strip = 1 if len(tops) == 1 and next(iter(tops)) not in ("train", "test") else 0
    members = []
    for info, parts in files:
        rel = parts[strip:]
        if len(rel) != 3 or rel[0] not in ("train", "test"):
            raise DatasetError(f"{name}: {info.filename} is not in train/<class>/ or test/<class>/; the zip must hold "
                               "train/<class>/<image> and test/<class>/<image> (class = one folder per label)")
        if not rel[2].lower().endswith(IMAGE_SUFFIXES):
            raise DatasetError(f"{name}: {info.filename} is not an image file; accepted: "
                               f"{', '.join(IMAGE_SUFFIXES)}")
        members.append(_Member(info, rel[0], rel[1], rel[2]))
    classes = {s: sorted({m.cls for m in members if m.split == s}) for s in ("train", "test")}
    for split in ("train", "test"):
        if not classes[split]:
            raise DatasetError(f"{name}: no images in {split}/<class>/; the zip needs both train/ and test/")
    if classes["train"] != classes["test"]:
        raise DatasetError(f"{name}: train has classes {classes['train'][:10]}, test has {classes['test'][:10]}: "
                           "they must be the same folders")
    if len(classes["train"]) < 2:
        raise DatasetError(f"{name}: only one class folder ({classes['train'][0]}); a map needs at least two")
    if len(classes["train"]) > limits.max_classes:
        raise DatasetError(f"{name} has {len(classes['train']):,} classes (class folders); this server takes at most "
                           f"{limits.max_classes:,}")
    _check_distinct(name, members)
    return members


def _check_distinct(name: str, members: list[_Member]) -> None:
    """No two members whose unpacked paths differ only in case or in how their accents are encoded
    (é as one code point or as e and a combining accent), or not at all: one would overwrite the
    other, or, on a case- or normalisation-insensitive disk, two class folders would merge into one
    (and two look-alike class names would confuse every map legend)."""
    def same(text: str) -> str:
        return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())

    classes: dict[tuple, _Member] = {}
    files: dict[tuple, _Member] = {}
    for m in members:
        first_of_class = classes.setdefault((m.split, same(m.cls)), m)
        first_of_file = files.setdefault((m.split, same(m.cls), same(m.file)), m)
        clash = first_of_class if first_of_class.cls != m.cls else first_of_file if first_of_file is not m else None
        if clash is not None:
            a, b = clash.info.filename, m.info.filename
            encoded = f" ({a!a} and {b!a})" if a != b and same(a) == same(b) and a.casefold() != b.casefold() else ""
            raise DatasetError(f"{name}: {a} and {b} differ only in case or in how their accents are encoded{encoded} "
                               "(or not at all): unpacked, one would overwrite the other. Rename one.")


def _extract(data: bytes, members: list[_Member], root: Path) -> None:
    """Write the checked members under root, by the parts we checked (never the raw names)."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for m in members:
            out = root / m.split / m.cls / m.file
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(_read_member(z, m.info, "the upload"))


def _read_summary(home: Path) -> StoredUpload | None:
    """The stored upload, or None when it or its summary is missing or unreadable (then it is stored again)."""
    try:
        d = json.loads((home / SUMMARY).read_text())
        path = home / d["path"]
        if not path.exists():
            return None
        return StoredUpload(path, d["kind"], tuple(d["image_shape"]), int(d["train_size"]), int(d["test_size"]),
                            tuple(d["classes"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None

__all__ = ["StoredUpload", "UploadLimits", "check_archive", "check_image_zip", "check_npz", "check_size",
           "prune_uploads", "store_upload", "upload_of"]
