"""What a training job trains (`JobSpec`), and what a public server lets one visitor ask for
(`HostedLimits`). Plain values only: a spec travels to a worker process as JSON (vae/worker.py)
and its `key()` names the configuration in the registry's records on disk (vae/job_records.py).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .data import BUILTIN_NAMES, EMBEDDED
from .errors import ConfigError
from .presets import PRESETS, get_preset
from .train import TrainConfig

KINDS = ("ae", "vae")
KNOWN_IMAGE_SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), EMBEDDED: (1, 28, 28),
                      "cifar10": (3, 32, 32)}
MAX_PROCESSES = 64
# fields added after records were first written: left out of key() at these values, so the key of
# every configuration saved before them (and the lock and record named after it) stays the same
LATER_FIELDS = {"betas": (), "processes": 1}


@dataclass(frozen=True)
class JobSpec:
    """One training run. None for latent_dim/beta means the preset's value (filled in, so a
    spec that spells the default out has the same key as one that leaves it).

    `betas` non-empty: a beta sweep instead of a pair (vae/sweep.py): one model per value (0 is
    the AE) on the same batches, written as `<name>-beta-<value>.safetensors`; `kinds` and `beta`
    are then the preset's defaults. `processes` > 1: the job runs under torchrun with that many
    processes (DistributedDataParallel; `batch_size` is the batch of all of them)."""

    dataset: str = EMBEDDED  # a name of vae.data.BUILTIN_NAMES, or a path to a .npz or image folder
    preset: str = "mnist-2d"
    kinds: tuple[str, ...] = KINDS
    latent_dim: int | None = None
    beta: float | None = None
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    limit_train: int | None = None  # train on a fixed random sample of at most this many images
    limit_test: int | None = None  # evaluate on at most this many test images
    precision: str = "float32"  # or "bfloat16": mixed precision (TrainConfig.precision)
    betas: tuple[float, ...] = ()
    processes: int = 1

    def __post_init__(self) -> None:
        dataset = str(self.dataset).strip()
        if not dataset:
            raise ConfigError("dataset is empty: give a name (" + ", ".join(BUILTIN_NAMES) + ") or a path")
        if dataset.lower() in BUILTIN_NAMES:
            dataset = dataset.lower()
        else:  # one key per file, however the path is spelled
            dataset = str(Path(dataset).expanduser().resolve())
        betas = _betas(self.betas)
        kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(self.kinds)
        if betas:
            kinds = KINDS  # a sweep's members come from its betas: one key per sweep
        if not kinds or any(k not in KINDS for k in kinds):
            raise ConfigError(f"kinds={list(kinds)!r} is invalid: expected 'ae', 'vae' or both")
        preset = get_preset(self.preset)
        latent_dim = preset.base.latent_dim if self.latent_dim is None else self.latent_dim
        beta = preset.base.beta if self.beta is None or betas else float(self.beta)
        for b in betas or (beta,):
            preset.config(True, latent_dim=latent_dim, beta=b or beta)  # ModelConfig validates
        for name in ("limit_train", "limit_test"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"{name}={value!r} is invalid: expected an integer >= 1 (or None for all images)")
        if not (_is_int(self.processes) and 1 <= self.processes <= MAX_PROCESSES):
            raise ConfigError(f"processes={self.processes!r} is invalid: expected an integer from 1 to {MAX_PROCESSES}")
        for name, value in (("dataset", dataset), ("kinds", tuple(k for k in KINDS if k in kinds)),
                            ("latent_dim", latent_dim), ("beta", beta), ("betas", betas)):
            object.__setattr__(self, name, value)
        self.train_config()  # TrainConfig validates epochs, batch_size, lr, seed and precision
        if self.batch_size % self.processes:
            raise ConfigError(f"batch_size={self.batch_size} is the batch of all {self.processes} processes "
                              f"together: give a multiple of {self.processes}")

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "JobSpec":
        """A spec with the preset's suggested data set and hyper-parameters, then overrides."""
        p = get_preset(preset)
        defaults = dict(dataset=p.default_dataset, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr)
        return cls(preset=preset, **{**defaults, **overrides})

    @classmethod
    def from_dict(cls, fields: dict) -> "JobSpec":
        """The inverse of `asdict` after a JSON round trip (lists back to tuples)."""
        fields = dict(fields)
        for name in ("kinds", "betas"):
            if name in fields:
                fields[name] = tuple(fields[name])
        return cls(**fields)

    @property
    def is_sweep(self) -> bool:
        return bool(self.betas)

    def members(self) -> tuple[str, ...]:
        """The models this job trains, as its checkpoints and curves name them."""
        from .sweep import member_name

        return tuple(member_name(b) for b in self.betas) if self.betas else self.kinds

    def key(self) -> str:
        """Stable across processes: a hash of every field (after the defaults are filled in)."""
        fields = {k: v for k, v in asdict(self).items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def train_config(self, num_threads: int = 0, device: str = "auto") -> TrainConfig:
        # a checkpoint after every epoch: a crash loses at most the epoch under way
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                           num_threads=num_threads, precision=self.precision, checkpoint_every=1, device=device)

    def pair_name(self, dataset_name: str | None = None) -> str:
        """`<preset>-<data set>-<short key>`: readable in the model picker, unique per spec (a
        sweep's family has this name too). The data set part is the one actually loaded (a
        failed download falls back)."""
        data = dataset_name or (self.dataset if self.dataset in BUILTIN_NAMES else Path(self.dataset).stem)
        slug = re.sub(r"[^a-z0-9_.]+", "-", data.lower()).strip("-.")[:40] or "data"
        return f"{self.preset}-{slug}-{self.key()[:6]}"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _betas(values) -> tuple[float, ...]:
    """() or at least two distinct finite numbers >= 0, sorted (one key however they are ordered)."""
    try:
        betas = tuple(sorted(float(b) for b in values))
    except (TypeError, ValueError):
        raise ConfigError(f"betas={values!r} is invalid: expected numbers >= 0") from None
    if betas and (len(betas) < 2 or len(set(betas)) != len(betas)
                  or any(not (math.isfinite(b) and b >= 0) for b in betas)):
        raise ConfigError(f"betas={list(values)!r} is invalid: a sweep needs at least two distinct numbers >= 0 "
                          "(0 is the AE)")
    return betas


@dataclass(frozen=True)
class HostedLimits:
    """What a public server lets one visitor ask for. The registry checks every spec against
    these whatever the page's widgets offered, since a modified client can send any value.

    `data_roots`: the only folders a spec's data set may come from besides the built-in names
    (the uploads folder); any other server path is refused without saying whether it exists."""

    max_epochs: int = 20
    max_train_images: int = 20_000
    max_batch_size: int = 1024
    max_latent_dim: int = 256  # the largest preset's default (tutorial-cifar-resnet18)
    max_beta: float = 50.0
    max_jobs_per_owner: int = 2  # queued + running jobs one session may have at once
    max_sweep_values: int = 4  # a sweep trains one model per value: 4 cost what 2 pairs cost
    data_roots: tuple = ()

    def check(self, spec: JobSpec) -> None:
        if spec.dataset not in BUILTIN_NAMES and not any(_is_under(spec.dataset, root) for root in self.data_roots):
            raise ConfigError("that data set is not offered on this server: choose one of the listed data sets "
                              "or upload your own")
        if spec.processes != 1:
            raise ConfigError("training with several processes (torchrun) is not offered on this shared server")
        if len(spec.betas) > self.max_sweep_values:
            raise ConfigError(f"a sweep of {len(spec.betas)} values of β is over this server's limit of "
                              f"{self.max_sweep_values}")
        caps = [("epochs", spec.epochs, self.max_epochs), ("batch_size", spec.batch_size, self.max_batch_size),
                ("latent_dim", spec.latent_dim, self.max_latent_dim),
                ("beta", max((spec.beta, *spec.betas)), self.max_beta)]
        for name, value, cap in caps:
            if value > cap:
                raise ConfigError(f"{name}={value:g} is over this server's limit of {cap:g}")
        if spec.limit_train is None or spec.limit_train > self.max_train_images:
            raise ConfigError(f"limit_train={spec.limit_train} is over this server's limit of "
                              f"{self.max_train_images:,} training images")


def _is_under(path: str, root) -> bool:
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True


def guess_image_shape(source: str) -> tuple[int, int, int] | None:
    """(C, H, W) of a data source without loading it, or None when it cannot tell cheaply:
    built-in names from a table, a .npz from the header of x_train, a folder from one image."""
    key = str(source).strip().lower()
    if key in KNOWN_IMAGE_SHAPES:
        return KNOWN_IMAGE_SHAPES[key]
    path = Path(str(source).strip()).expanduser()
    try:
        if path.suffix == ".npz" and path.is_file():
            with zipfile.ZipFile(path) as z, z.open("x_train.npy") as f:
                fmt = np.lib.format
                version = fmt.read_magic(f)
                read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, _, _ = read_header(f)
            if len(shape) == 3:
                return (1, shape[1], shape[2])
            if len(shape) == 4 and shape[-1] in (1, 3):
                return (shape[3], shape[1], shape[2])
        elif path.is_dir():
            from PIL import Image

            first = next(f for f in sorted((path / "train").glob("*/*")) if f.is_file())
            with Image.open(first) as im:
                return (1 if im.mode in ("L", "1") else 3, im.height, im.width)
    except (OSError, KeyError, ValueError, StopIteration, zipfile.BadZipFile):
        return None
    return None


def compatible_presets(image_shape) -> list[str]:
    """Presets that can be built for images of this shape, those made for it first."""
    if image_shape is None:
        return list(PRESETS)
    fits = []
    for name, preset in PRESETS.items():
        try:
            preset.config(True, image_shape=image_shape)
        except ConfigError:
            continue
        fits.append(name)
    return sorted(fits, key=lambda n: tuple(PRESETS[n].base.image_shape) != tuple(image_shape))


__all__ = ["HostedLimits", "JobSpec", "KINDS", "compatible_presets", "guess_image_shape"]
