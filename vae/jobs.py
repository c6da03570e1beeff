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
import os
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

from .checkpoint import load_checkpoint
from .data import BUILTIN_NAMES, EMBEDDED, ImageDataset, load_dataset
from .errors import CheckpointError, ConfigError, DatasetError
from .job_records import JobRecords
from .latent import encode_split
from .presets import PRESETS, get_preset
from .projections import make_projection, procrustes_align
from .train import Callback, Progress, Trainer, TrainConfig, make_pair

# a job is queued, running, done, stopped, failed or interrupted (its process died); these two are live
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
        # a checkpoint after every epoch: a crash loses at most the epoch under way
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                           num_threads=num_threads, precision=self.precision, checkpoint_every=1)

    def pair_name(self, dataset_name: str | None = None) -> str:
        """`<preset>-<data set>-<short key>`: readable in the model picker, unique per spec.
        The data set part is the one actually loaded (a failed download falls back)."""
        data = dataset_name or (self.dataset if self.dataset in BUILTIN_NAMES else Path(self.dataset).stem)
        slug = re.sub(r"[^a-z0-9_.]+", "-", data.lower()).strip("-.")[:40] or "data"
        return f"{self.preset}-{slug}-{self.key()[:6]}"


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
    data_roots: tuple = ()

    def check(self, spec: JobSpec) -> None:
        if spec.dataset not in BUILTIN_NAMES and not any(_is_under(spec.dataset, root) for root in self.data_roots):
            raise ConfigError("that data set is not offered on this server: choose one of the listed data sets "
                              "or upload your own")
        caps = [("epochs", spec.epochs, self.max_epochs), ("batch_size", spec.batch_size, self.max_batch_size),
                ("latent_dim", spec.latent_dim, self.max_latent_dim), ("beta", spec.beta, self.max_beta)]
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
    owner: str = ""  # the session that started it ("" when unknown, e.g. found on disk after a restart)
    resumed_from: int = 0  # epochs that the checkpoints it continued from held (0: trained from scratch)

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
                 on_finish: Callable[["TrainingJob"], None] | None = None,
                 on_change: Callable[["TrainingJob"], None] | None = None, owner: str = ""):
        self.id = uuid.uuid4().hex[:12]
        self.spec = spec
        self.owner = owner
        self._on_change = on_change  # the registry's record on disk: at start, each epoch end and the end
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
        self._resumed_from = 0
        self.submitted_at, self.started_at, self.finished_at = time.time(), None, None

    @classmethod
    def from_record(cls, record: dict, out_dir: Path) -> "TrainingJob":
        """A job found on disk (a record of an earlier server process); it has no thread."""
        job = cls(JobSpec(**{**record["spec"], "kinds": tuple(record["spec"]["kinds"])}), out_dir)
        job.id = record.get("id", job.id)
        state = record.get("state", "interrupted")
        job._state = "interrupted" if state in ACTIVE_STATES else state
        job._name, job._error = record.get("name", ""), record.get("error", "")
        job._epochs_done = int(record.get("epochs_done", 0))
        job._checkpoints = dict(record.get("checkpoints", {}))
        job._classes = tuple(record.get("classes", ()))
        job.submitted_at = record.get("submitted_at", job.submitted_at)
        job.started_at, job.finished_at = record.get("started_at"), record.get("finished_at")
        return job

    def record(self) -> dict:
        """What the registry writes to disk (plain JSON values)."""
        with self._lock:
            return {"id": self.id, "spec": asdict(self.spec), "state": self._state, "name": self._name,
                    "epochs_done": self._epochs_done, "checkpoints": dict(self._checkpoints),
                    "classes": list(self._classes), "error": self._error, "submitted_at": self.submitted_at,
                    "started_at": self.started_at, "finished_at": self.finished_at, "pid": os.getpid()}

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self)

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
                submitted_at=self.submitted_at, started_at=self.started_at, finished_at=self.finished_at,
                owner=self.owner, resumed_from=self._resumed_from)

    # --- control -----------------------------------------------------------------------
    def start(self) -> None:
        """Run in a daemon thread (the registry calls this when a slot is free)."""
        with self._lock:
            if self._state != "queued" or self.thread is not None:
                return
            self._state, self.started_at = "running", time.time()
            self.thread = threading.Thread(target=self._run, name=f"train-{self.id}", daemon=True)
        self._changed()
        self.thread.start()

    def stop(self) -> None:
        """Ask the job to end: the trainer stops within one step and saves the checkpoints of
        the epochs completed so far; a queued job never starts."""
        self.stop_event.set()
        with self._lock:
            was_queued = self._state == "queued"
            if was_queued:
                self._state, self.finished_at = "stopped", time.time()
        if was_queued:
            self._changed()
            if self._on_finish is not None:
                self._on_finish(self)

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
        resume = self._saved_checkpoints(out)
        recorder = _Recorder(self, data.test.subset(SNAPSHOT_IMAGES, seed=spec.seed))
        trainer = Trainer(models, data, spec.train_config(self._train_threads), callbacks=[recorder],
                          stop_event=self.stop_event, out=out, resume=resume)
        with self._lock:
            self._epochs_done = self._resumed_from = trainer.start_epoch
        recorder.snapshot(trainer.start_epoch, models, {k: dict(v) for k, v in trainer.test.items()})
        if trainer.start_epoch >= spec.epochs:  # every epoch is saved already (a stop during the last save)
            self._finish("done", checkpoints={k: str(p) for k, p in out.items()})
            return
        result = trainer.fit()
        self._finish("stopped" if result.stopped else "done",
                     checkpoints={k: str(p) for k, p in result.checkpoints.items()})

    def _saved_checkpoints(self, out: dict[str, Path]) -> dict | None:
        """The checkpoints an earlier run of this spec left (stopped, or killed with the server):
        training continues from them rather than starting over and overwriting them."""
        if not all(p.is_file() for p in out.values()):
            return None
        try:
            saved = {k: load_checkpoint(p) for k, p in out.items()}
        except (CheckpointError, OSError) as err:
            self._note(f"The saved checkpoints of these settings could not be read ({type(err).__name__}), "
                       "so training starts over from epoch 0.")
            return None
        positions = {(ck.epoch, ck.batches_done) for ck in saved.values()}
        same = all(ck.train.get(f) == getattr(self.spec, f) for ck in saved.values() for f in ("seed", "batch_size", "lr"))
        if len(positions) != 1 or not same:
            self._note("The saved checkpoints of these settings do not match each other, so training starts over "
                       "from epoch 0.")
            return None
        epoch, batches = positions.pop()
        if epoch or batches:
            self._note(f"Resumed from the saved checkpoint: {epoch} of {self.spec.epochs} epochs done"
                       + (f" and {batches} batches of the next" if batches else "") + ".")
        return saved

    def _finish(self, state: str, error: str = "", checkpoints: dict | None = None) -> None:
        with self._lock:
            self._state, self._error, self.finished_at = state, error, time.time()
            self._checkpoints.update(checkpoints or {})
        self._changed()

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

    def _record_checkpoint(self, paths: dict) -> None:
        with self._lock:
            self._checkpoints.update({k: str(p) for k, p in paths.items()})
        self._changed()  # the record on disk now names a checkpoint a restart can resume from

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

    def on_checkpoint(self, epoch: int, paths: dict) -> None:
        self.job._record_checkpoint(paths)

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
    many visitors ask); a stopped, failed or interrupted spec runs again and continues from its
    saved checkpoint (every epoch is saved). Jobs beyond `max_running` wait in a FIFO queue of at
    most `max_queued`. Checkpoints go to out_dir/<pair name>-ae.safetensors and -vae.safetensors,
    where the model picker finds them.

    The truth is on disk (vae.job_records, under out_dir/.jobs): a record per configuration,
    rewritten atomically at each change, and a lock file that the process with the active job
    holds, so two app processes on one state folder never train the same configuration twice,
    and a restarted server lists the jobs its predecessor was running as "interrupted".

    `limits` (a public server): every spec is checked against HostedLimits, a session may have
    only `max_jobs_per_owner` active jobs, and may stop only the jobs it started.
    """

    def __init__(self, out_dir: str | Path, max_running: int = 1, train_threads: int = 0, *,
                 max_queued: int = 8, max_epochs: int | None = None, max_train_images: int | None = None,
                 limits: HostedLimits | None = None,
                 load_data: Callable[[JobSpec], ImageDataset] | None = None):
        if not (isinstance(max_running, int) and max_running >= 1):
            raise ConfigError(f"max_running={max_running!r} is invalid: expected an integer >= 1")
        if not (isinstance(max_queued, int) and max_queued >= 0):
            raise ConfigError(f"max_queued={max_queued!r} is invalid: expected an integer >= 0")
        if not (isinstance(train_threads, int) and 0 <= train_threads <= 256):
            raise ConfigError(f"train_threads={train_threads!r} is invalid: expected an integer from 0 to 256 "
                              "(0: torch's default)")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.max_running, self.max_queued, self.train_threads = max_running, max_queued, train_threads
        self.max_epochs, self.max_train_images = max_epochs, max_train_images
        self.limits = limits
        self._load_data = load_data or self._load_cached
        self._data_cache: dict[str, ImageDataset] = {}  # built-in data sets, loaded once per registry
        self._lock = threading.RLock()
        self._jobs: dict[str, TrainingJob] = {}
        self._by_key: dict[str, TrainingJob] = {}
        self._aliases: dict[str, str] = {}  # id of a job run again -> id of the job that continues it
        self._config_locks: dict[str, object] = {}  # key -> ConfigLock held while its job is active
        self._queue: deque[TrainingJob] = deque()
        self._running: set[str] = set()
        self._idle_threads = torch.get_num_threads()
        self.records = JobRecords(self.out_dir / ".jobs")
        self._load_records()

    @property
    def hosted(self) -> bool:
        return self.limits is not None

    def _load_records(self) -> None:
        """Jobs of earlier server processes: the finished ones as they ended, the ones that were
        running when their process died as "interrupted" (resumable from their last epoch); then
        the temporary files their crash left behind are deleted."""
        busy_names, known_names = set(), set()
        for record in self.records.read_all():
            try:
                job = TrainingJob.from_record(record, self.out_dir)
            except (ConfigError, KeyError, TypeError):
                continue  # a record of an older format, or a preset that no longer exists
            known_names.add(job.view().name)
            if self.records.busy(record["key"]):
                busy_names.add(job.view().name)  # another live process is training it now
                continue
            self._wire(job)
            self._jobs[job.id] = job
            self._by_key[record["key"]] = job
            if record.get("state") in ACTIVE_STATES:
                self._persist(job)  # the record now says interrupted
        self.records.clean_stale_tmp(self.out_dir, busy_names, known_names)

    def _wire(self, job: TrainingJob) -> None:
        job._train_threads, job._load_data = self.train_threads, self._load_data
        job._on_finish, job._on_change = self._job_finished, self._persist

    def _persist(self, job: TrainingJob) -> None:
        self.records.write(job.spec.key(), job.record())

    def submit(self, spec: JobSpec, owner: str = "") -> tuple[TrainingJob, bool]:
        """(job, created): the existing job of this spec while it is queued, running or done;
        otherwise a new job, which continues from the checkpoint a stopped or interrupted run of
        the same spec saved. `owner`: the session asking (hosted limits count per owner)."""
        self._check_limits(spec)
        key = spec.key()
        with self._lock:
            existing = self._by_key.get(key)
            if existing is not None and existing.state in ("queued", "running", "done"):
                return existing, False
            if self.hosted and owner:
                mine = [j for j in self._jobs.values() if j.owner == owner and j.state in ACTIVE_STATES]
                if len(mine) >= self.limits.max_jobs_per_owner:
                    raise ConfigError(f"you already have {len(mine)} training job(s) queued or running on this "
                                      "shared server: wait for one to finish, or stop one")
            waiting = [j for j in self._queue if j.state == "queued"]
            if len(self._running) >= self.max_running and len(waiting) >= self.max_queued:
                raise ConfigError(f"the training queue is full ({len(self._running)} running, {len(waiting)} "
                                  f"waiting): try again when a job has finished, or stop one")
            lock = self.records.lock(key)
            if not lock.acquire():
                raise ConfigError("these settings are being trained by another server process on this state folder: "
                                  "their pair appears in the model picker when it is done")
            job = TrainingJob(spec, self.out_dir, owner=owner)
            self._wire(job)
            self._config_locks[key] = lock
            if existing is not None:  # the earlier run's row and id now lead to this one
                self._jobs.pop(existing.id, None)
                self._aliases[existing.id] = job.id
                for old, new in self._aliases.items():
                    if new == existing.id:
                        self._aliases[old] = job.id
            self._jobs[job.id] = job
            self._by_key[key] = job
            self._queue.append(job)
            self._persist(job)
            self._start_waiting()
        return job, True

    def resume(self, job_id: str, owner: str = "") -> TrainingJob:
        """Run an interrupted or stopped job's spec again, from its saved checkpoint."""
        job = self.get(job_id)
        if job is None:
            raise ConfigError("no such training job on this server")
        return self.submit(job.spec, owner=owner)[0]

    def _check_limits(self, spec: JobSpec) -> None:
        if self.limits is not None:
            self.limits.check(spec)
        if self.max_epochs is not None and spec.epochs > self.max_epochs:
            raise ConfigError(f"epochs={spec.epochs} is over this server's limit of {self.max_epochs}")
        if self.max_train_images is not None and (spec.limit_train is None or spec.limit_train > self.max_train_images):
            raise ConfigError(f"limit_train={spec.limit_train} is over this server's limit of "
                              f"{self.max_train_images:,} training images")

    def get(self, job_id: str) -> TrainingJob | None:
        with self._lock:
            return self._jobs.get(self._aliases.get(job_id, job_id))

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

    def may_stop(self, job_id: str, owner: str = "") -> bool:
        """Locally anyone may stop any job (a teacher keeps full control); on a hosted server
        only the session that started it."""
        job = self.get(job_id)
        return job is not None and (not self.hosted or (bool(owner) and job.owner == owner))

    def stop(self, job_id: str, owner: str = "") -> bool:
        """Stop a job; False when there is no such job. Raises ConfigError when this session may
        not stop it (hosted: another visitor's job)."""
        job = self.get(job_id)
        if job is None:
            return False
        if not self.may_stop(job_id, owner):
            raise ConfigError("only the visitor who started a training job can stop it on this shared server")
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
            lock = self._config_locks.pop(job.spec.key(), None)
            if lock is not None and self._by_key.get(job.spec.key()) is job:
                lock.release()
            elif lock is not None:
                self._config_locks[job.spec.key()] = lock
            if not self._running and self.train_threads:
                torch.set_num_threads(self._idle_threads)  # new threads inherit this (module doc)
            self._start_waiting()


__all__ = [
    "ACTIVE_STATES", "CurvePoint", "HostedLimits", "JobRegistry", "JobSpec", "JobView", "LatentSnapshot",
    "TrainingJob", "compatible_presets", "guess_image_shape",
]
