"""Training jobs that run in background threads, for the app (or any long-lived caller).

A `JobSpec` says what to train; `JobRegistry.submit(spec)` answers with the one `TrainingJob`
of that spec (a second visitor who asks for the same thing watches the same run), runs at most
`max_running` jobs at once and queues the rest. A job loads its data, trains the pair with
`vae.train.Trainer`, and records what a live view needs: the latest `Progress`, loss curves,
and a 2-D map of a fixed sample of test images after every epoch. Readers call `job.view()`,
a consistent, immutable copy; nothing here imports streamlit, and the worker threads never
touch the UI (pages poll).

Thread count: `torch.set_num_threads` is not per job. With torch's OpenMP backend each thread
keeps the count it had, but threads created later (every Streamlit script run is a new thread)
inherit the last value set anywhere. So while a job runs with `train_threads`, the rest of the
server computes with that many threads too; the registry restores the count it found when its
last running job ends.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
import zipfile
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable

import numpy as np
import torch

from .data import BUILTIN_NAMES, EMBEDDED, ImageDataset, load_dataset
from .errors import ConfigError, DatasetError
from .latent import encode_split
from .presets import PRESETS, get_preset
from .projections import make_projection, procrustes_align
from .train import Callback, Progress, Trainer, TrainConfig, make_pair

STATES = ("queued", "running", "done", "stopped", "failed")
ACTIVE_STATES = ("queued", "running")
KINDS = ("ae", "vae")
SNAPSHOT_IMAGES = 500  # test images drawn on every epoch's latent map
CURVE_INTERVAL_S = 0.5  # at most one loss-curve point per model this often (plus one per epoch end)
KNOWN_IMAGE_SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), EMBEDDED: (1, 28, 28),
                      "cifar10": (3, 32, 32)}


# --- what to train ---------------------------------------------------------------------------
@dataclass(frozen=True)
class JobSpec:
    """One training run. None for latent_dim/beta means the preset's value (filled in, so a
    spec that spells the default out has the same key as one that leaves it)."""

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

    def __post_init__(self) -> None:
        dataset = str(self.dataset).strip()
        if not dataset:
            raise ConfigError("dataset is empty: give a name (" + ", ".join(BUILTIN_NAMES) + ") or a path")
        if dataset.lower() in BUILTIN_NAMES:
            dataset = dataset.lower()
        else:  # one key per file, however the path is spelled
            dataset = str(Path(dataset).expanduser().resolve())
        kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(self.kinds)
        if not kinds or any(k not in KINDS for k in kinds):
            raise ConfigError(f"kinds={list(kinds)!r} is invalid: expected 'ae', 'vae' or both")
        preset = get_preset(self.preset)
        latent_dim = preset.base.latent_dim if self.latent_dim is None else self.latent_dim
        beta = preset.base.beta if self.beta is None else float(self.beta)
        preset.config(True, latent_dim=latent_dim, beta=beta)  # ModelConfig validates
        for name in ("limit_train", "limit_test"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"{name}={value!r} is invalid: expected an integer >= 1 (or None for all images)")
        for name, value in (("dataset", dataset), ("kinds", tuple(k for k in KINDS if k in kinds)),
                            ("latent_dim", latent_dim), ("beta", beta)):
            object.__setattr__(self, name, value)
        self.train_config()  # TrainConfig validates epochs, batch_size, lr, seed and precision

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "JobSpec":
        """A spec with the preset's suggested data set and hyper-parameters, then overrides."""
        p = get_preset(preset)
        defaults = dict(dataset=p.default_dataset, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr)
        return cls(preset=preset, **{**defaults, **overrides})

    def key(self) -> str:
        """Stable across processes: a hash of every field (after the defaults are filled in)."""
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def train_config(self, num_threads: int = 0) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                           num_threads=num_threads, precision=self.precision)

    def pair_name(self, dataset_name: str | None = None) -> str:
        """`<preset>-<data set>-<short key>`: readable in the model picker, unique per spec.
        The data set part is the one actually loaded (a failed download falls back)."""
        data = dataset_name or (self.dataset if self.dataset in BUILTIN_NAMES else Path(self.dataset).stem)
        slug = re.sub(r"[^a-z0-9_.]+", "-", data.lower()).strip("-.")[:40] or "data"
        return f"{self.preset}-{slug}-{self.key()[:6]}"


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


# --- what a job records ----------------------------------------------------------------------
@dataclass(frozen=True)
class CurvePoint:
    step: int
    epoch: float  # epochs done, fractional (step / steps per epoch): the curves' x axis
    recon: float  # running means over the current epoch, per image (nats)
    kl: float
    total: float


@dataclass(frozen=True)
class LatentSnapshot:
    """The same test images on each model's 2-D map after `epoch` epochs (0: untrained)."""

    epoch: int
    points: MappingProxyType  # kind -> float32 [N, 2], read-only
    labels: np.ndarray  # int64 [N], read-only
    method: str  # "identity" (the latent axes themselves) or "pca"
    test: MappingProxyType  # kind -> test metrics at this epoch (empty at epoch 0)


@dataclass(frozen=True)
class JobView:
    """A consistent copy of a job for readers in other threads; nothing in it changes later."""

    id: str
    spec: JobSpec
    state: str
    name: str  # the pair's name (known once the data set is loaded)
    progress: Progress | None
    epochs_done: int  # epochs completed (what a stopped job's checkpoint holds)
    curves: MappingProxyType  # kind -> tuple[CurvePoint, ...]
    snapshots: tuple[LatentSnapshot, ...]
    classes: tuple[str, ...]
    notes: tuple[str, ...]  # e.g. "download failed, used the embedded MNIST digits"
    error: str  # "Type: message" when state == "failed"
    checkpoints: MappingProxyType  # kind -> path (str), when a checkpoint was written
    submitted_at: float
    started_at: float | None
    finished_at: float | None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def fraction(self) -> float:
        if self.state == "done":
            return 1.0
        return self.progress.fraction if self.progress else 0.0


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


class TrainingJob:
    """One run of a `JobSpec` in its own thread; every public read goes through `view()`."""

    def __init__(self, spec: JobSpec, out_dir: str | Path, *, train_threads: int = 0,
                 load_data: Callable[[JobSpec], ImageDataset] | None = None,
                 on_finish: Callable[["TrainingJob"], None] | None = None):
        self.id = uuid.uuid4().hex[:12]
        self.spec = spec
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self._out_dir = Path(out_dir)
        self._train_threads = train_threads
        self._load_data = load_data or _load_spec_data
        self._on_finish = on_finish
        self._lock = threading.Lock()
        self._state, self._name, self._error = "queued", "", ""
        self._progress: Progress | None = None
        self._epochs_done = 0
        self._curves: dict[str, list[CurvePoint]] = {k: [] for k in spec.kinds}
        self._last_curve_t, self._last_curve_losses = 0.0, None
        self._snapshots: list[LatentSnapshot] = []
        self._classes: tuple[str, ...] = ()
        self._notes: list[str] = []
        self._checkpoints: dict[str, str] = {}
        self.submitted_at, self.started_at, self.finished_at = time.time(), None, None

    # --- reading -----------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self._state

    def view(self) -> JobView:
        with self._lock:
            return JobView(
                id=self.id, spec=self.spec, state=self._state, name=self._name, progress=self._progress,
                epochs_done=self._epochs_done,
                curves=MappingProxyType({k: tuple(v) for k, v in self._curves.items()}),
                snapshots=tuple(self._snapshots), classes=self._classes, notes=tuple(self._notes),
                error=self._error, checkpoints=MappingProxyType(dict(self._checkpoints)),
                submitted_at=self.submitted_at, started_at=self.started_at, finished_at=self.finished_at)

    # --- control -----------------------------------------------------------------------
    def start(self) -> None:
        """Run in a daemon thread (the registry calls this when a slot is free)."""
        with self._lock:
            if self._state != "queued" or self.thread is not None:
                return
            self._state, self.started_at = "running", time.time()
            self.thread = threading.Thread(target=self._run, name=f"train-{self.id}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Ask the job to end: the trainer stops within one step and saves the checkpoints of
        the epochs completed so far; a queued job never starts."""
        self.stop_event.set()
        with self._lock:
            if self._state == "queued":
                self._state, self.finished_at = "stopped", time.time()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has ended (or never started)."""
        if self.thread is not None:
            self.thread.join(timeout)
            return not self.thread.is_alive()
        return self._state not in ACTIVE_STATES

    # --- the worker thread ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._train()
        except Exception as err:  # a job's failure is reported, never raised into the app
            self._finish("failed", error=f"{type(err).__name__}: {err}")
        finally:
            if self._on_finish is not None:
                self._on_finish(self)

    def _train(self) -> None:
        spec = self.spec
        data = self._load_data(spec)
        with self._lock:
            self._notes += data.notes
            self._classes = tuple(data.classes)
            self._name = spec.pair_name(data.name)
        if self.stop_event.is_set():
            self._finish("stopped")
            return
        try:
            models = make_pair(spec.preset, data.image_shape, spec.kinds, spec.latent_dim, spec.beta,
                               seed=spec.seed)
        except ConfigError as err:
            if data.notes:  # a failed download fell back to digits this preset cannot read
                raise DatasetError(f"{spec.dataset} could not be loaded, and the fallback {data.name} images "
                                   f"{data.image_shape} do not fit preset {spec.preset!r} ({err}). Choose an MNIST "
                                   f"preset, or a local copy of {spec.dataset}.") from err
            raise ConfigError(f"preset {spec.preset!r} cannot be built for the {data.name} images "
                              f"{data.image_shape}: {err}") from err
        out = {k: self._out_dir / f"{self._name}-{k}.safetensors" for k in spec.kinds}
        recorder = _Recorder(self, data.test.subset(SNAPSHOT_IMAGES, seed=spec.seed))
        trainer = Trainer(models, data, spec.train_config(self._train_threads), callbacks=[recorder],
                          stop_event=self.stop_event, out=out)
        recorder.snapshot(0, models, {})  # the untrained maps: where training starts from
        result = trainer.fit()
        self._finish("stopped" if result.stopped else "done",
                     checkpoints={k: str(p) for k, p in result.checkpoints.items()})

    def _finish(self, state: str, error: str = "", checkpoints: dict | None = None) -> None:
        with self._lock:
            self._state, self._error, self.finished_at = state, error, time.time()
            self._checkpoints.update(checkpoints or {})

    # called by _Recorder from the worker thread
    def _record_progress(self, progress: Progress, curve: bool) -> None:
        now = time.perf_counter()
        with self._lock:
            self._progress = progress
            if progress.phase == "epoch_end":
                self._epochs_done = progress.epoch
            # the trainer refreshes its running means every 10 steps: skip repeats (they draw stairs)
            fresh = progress.losses and progress.losses != self._last_curve_losses
            if fresh and (curve or now - self._last_curve_t >= CURVE_INTERVAL_S):
                self._last_curve_t, self._last_curve_losses = now, progress.losses
                x = progress.step / max(1, progress.steps_per_epoch)
                for kind, loss in progress.losses.items():
                    self._curves[kind].append(CurvePoint(progress.step, x, loss["recon"], loss["kl"], loss["total"]))

    def _record_snapshot(self, snapshot: LatentSnapshot) -> None:
        with self._lock:
            self._snapshots.append(snapshot)

    def _note(self, text: str) -> None:
        with self._lock:
            if text not in self._notes:
                self._notes.append(text)


def _load_spec_data(spec: JobSpec) -> ImageDataset:
    data = load_dataset(spec.dataset, fallback=True)
    return data.limit(train=spec.limit_train, test=spec.limit_test, seed=spec.seed)


class _Recorder(Callback):
    """The trainer's observer inside a job: progress, curve points and latent snapshots."""

    def __init__(self, job: TrainingJob, sample):
        self.job, self.sample = job, sample
        self.previous: dict[str, np.ndarray] = {}

    def on_step_end(self, progress: Progress) -> None:
        self.job._record_progress(progress, curve=False)

    def on_epoch_end(self, progress: Progress, models: dict) -> None:
        self.job._record_progress(progress, curve=True)
        self.snapshot(progress.epoch, models, progress.test)

    def on_train_end(self, progress: Progress) -> None:
        self.job._record_progress(progress, curve=False)

    def snapshot(self, epoch: int, models: dict, test: dict) -> None:
        try:
            points, method = self._maps(models)
        except Exception as err:  # a diverged model (NaN codes) must not end the run
            self.job._note(f"No latent map after epoch {epoch}: {type(err).__name__}: {err}")
            return
        self.job._record_snapshot(LatentSnapshot(
            epoch=epoch, points=MappingProxyType({k: _frozen(p) for k, p in points.items()}),
            labels=_frozen(self.sample.labels.numpy().copy()), method=method,
            test=MappingProxyType({k: dict(v) for k, v in test.items()})))

    def _maps(self, models: dict) -> tuple[dict[str, np.ndarray], str]:
        codes = {k: encode_split(m, self.sample).mean for k, m in models.items()}
        dim = next(iter(codes.values())).shape[1]
        if dim == 1:  # a 1-D latent: the codes on the x axis
            return {k: np.c_[c, np.zeros_like(c)].astype(np.float32) for k, c in codes.items()}, "identity"
        method = "identity" if dim == 2 else "pca"
        maps = {k: make_projection(method, dim).fit_transform(c).astype(np.float32) for k, c in codes.items()}
        if method == "pca":
            maps = self._orient(maps)
        self.previous = maps
        return maps, method

    def _orient(self, maps: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """PCA fixes a plane but not the signs or the rotation of its axes, which flip freely
        from one fit to the next. Turn each map onto the previous epoch's map of the same model
        (and, on the first map, the AE's onto the VAE's) so that scrubbing through epochs and
        looking across models compare like with like. Rotation/reflection only: the distances
        stay in latent units, so a map that grows or shrinks still shows it."""
        reference = "vae" if "vae" in maps else next(iter(maps))
        out = {}
        for kind in sorted(maps, key=lambda k: k != reference):  # the reference first
            target = self.previous.get(kind)
            if target is None and kind != reference:
                target = out[reference]
            out[kind] = maps[kind] if target is None else _rotate_onto(maps[kind], target)
        return {k: out[k] for k in maps}


def _rotate_onto(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    try:
        _, transform = procrustes_align(points, target)
    except ConfigError:  # all points identical: nothing to orient
        return points
    centre = points.mean(axis=0)
    return ((points - centre) @ transform.rotation + centre).astype(np.float32)


# --- the registry ----------------------------------------------------------------------------
class JobRegistry:
    """Every training job of one server: one job per spec, at most `max_running` at once.

    submit() of a spec that is queued, running or done returns that job (one thread, however
    many visitors ask); a failed or stopped spec starts afresh (and overwrites its checkpoint).
    Jobs beyond `max_running` wait in a FIFO queue of at most `max_queued`. Checkpoints go to
    out_dir/<pair name>-ae.safetensors and -vae.safetensors, where the model picker finds them.
    Optional hosted limits (`max_epochs`, `max_train_images`) refuse larger specs.
    """

    def __init__(self, out_dir: str | Path, max_running: int = 1, train_threads: int = 0, *,
                 max_queued: int = 8, max_epochs: int | None = None, max_train_images: int | None = None,
                 load_data: Callable[[JobSpec], ImageDataset] | None = None):
        if not (isinstance(max_running, int) and max_running >= 1):
            raise ConfigError(f"max_running={max_running!r} is invalid: expected an integer >= 1")
        if not (isinstance(max_queued, int) and max_queued >= 0):
            raise ConfigError(f"max_queued={max_queued!r} is invalid: expected an integer >= 0")
        if not (isinstance(train_threads, int) and 0 <= train_threads <= 256):
            raise ConfigError(f"train_threads={train_threads!r} is invalid: expected an integer from 0 to 256 "
                              "(0: torch's default)")
        self.out_dir = Path(out_dir)
        self.max_running, self.max_queued, self.train_threads = max_running, max_queued, train_threads
        self.max_epochs, self.max_train_images = max_epochs, max_train_images
        self._load_data = load_data or self._load_cached
        self._data_cache: dict[str, ImageDataset] = {}  # built-in data sets, loaded once per registry
        self._lock = threading.RLock()
        self._jobs: dict[str, TrainingJob] = {}
        self._by_key: dict[str, TrainingJob] = {}
        self._queue: deque[TrainingJob] = deque()
        self._running: set[str] = set()
        self._idle_threads = torch.get_num_threads()

    def submit(self, spec: JobSpec) -> tuple[TrainingJob, bool]:
        """(job, created): the existing job of this spec unless it failed or was stopped."""
        self._check_limits(spec)
        with self._lock:
            existing = self._by_key.get(spec.key())
            if existing is not None and existing.state in ("queued", "running", "done"):
                return existing, False
            waiting = [j for j in self._queue if j.state == "queued"]
            if len(self._running) >= self.max_running and len(waiting) >= self.max_queued:
                raise ConfigError(f"the training queue is full ({len(self._running)} running, {len(waiting)} "
                                  f"waiting): try again when a job has finished, or stop one")
            job = TrainingJob(spec, self.out_dir, train_threads=self.train_threads, load_data=self._load_data,
                              on_finish=self._job_finished)
            self._jobs[job.id] = job
            self._by_key[spec.key()] = job
            self._queue.append(job)
            self._start_waiting()
        return job, True

    def _check_limits(self, spec: JobSpec) -> None:
        if self.max_epochs is not None and spec.epochs > self.max_epochs:
            raise ConfigError(f"epochs={spec.epochs} is over this server's limit of {self.max_epochs}")
        if self.max_train_images is not None and (spec.limit_train is None or spec.limit_train > self.max_train_images):
            raise ConfigError(f"limit_train={spec.limit_train} is over this server's limit of "
                              f"{self.max_train_images:,} training images")

    def get(self, job_id: str) -> TrainingJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def find(self, spec: JobSpec) -> TrainingJob | None:
        """The latest job of this spec, whatever its state."""
        with self._lock:
            return self._by_key.get(spec.key())

    def list(self) -> list[TrainingJob]:
        """All jobs, newest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.submitted_at, reverse=True)

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to start; None when the job is not waiting."""
        with self._lock:
            waiting = [j.id for j in self._queue if j.state == "queued"]
        return waiting.index(job_id) + 1 if job_id in waiting else None

    def stop(self, job_id: str) -> bool:
        job = self.get(job_id)
        if job is None:
            return False
        job.stop()
        return True

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop every job and wait for their threads (tests, server exit)."""
        for job in self.list():
            job.stop()
        deadline = time.monotonic() + timeout
        for job in self.list():
            job.join(max(0.0, deadline - time.monotonic()))

    def _load_cached(self, spec: JobSpec) -> ImageDataset:
        """Built-in data sets stay in memory (at most 2: CIFAR-10 is 180 MB) for the next job;
        a fallback after a failed download is not kept, so the next job tries again."""
        with self._lock:
            data = self._data_cache.get(spec.dataset)
        if data is None:
            data = load_dataset(spec.dataset, fallback=True)
            if spec.dataset in BUILTIN_NAMES and not data.notes:
                with self._lock:
                    self._data_cache[spec.dataset] = data
                    while len(self._data_cache) > 2:
                        self._data_cache.pop(next(iter(self._data_cache)))
        return data.limit(train=spec.limit_train, test=spec.limit_test, seed=spec.seed)

    def _start_waiting(self) -> None:
        with self._lock:
            while len(self._running) < self.max_running and self._queue:
                job = self._queue.popleft()
                if job.state != "queued":  # stopped while it waited
                    continue
                self._running.add(job.id)
                job.start()

    def _job_finished(self, job: TrainingJob) -> None:
        with self._lock:
            self._running.discard(job.id)
            if not self._running and self.train_threads:
                torch.set_num_threads(self._idle_threads)  # new threads inherit this (module doc)
            self._start_waiting()


__all__ = [
    "ACTIVE_STATES", "CurvePoint", "JobRegistry", "JobSpec", "JobView", "LatentSnapshot", "STATES",
    "TrainingJob", "compatible_presets", "guess_image_shape",
]
