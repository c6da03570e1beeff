"""Training jobs for the app (or any long-lived caller): a registry, one job per configuration.

A `JobSpec` (vae/job_spec.py) says what to train; `JobRegistry.submit(spec)` answers with the one
`TrainingJob` of that spec (a second visitor, or a second app process on the same state folder,
who asks for the same thing watches the same run), runs at most `max_running` jobs at once per
process and queues the rest. Readers call `job.view()`, a consistent, immutable copy; nothing
here imports streamlit, and no thread here touches the UI (pages poll).

Each job has a supervising thread. What it supervises is the *runner*
(`LATENT_EXPLORER_JOB_RUNNER`, or `JobRegistry(runner=...)`):
- "process" (the default): a child process, `python -m vae.worker RUN_DIR` (or torchrun with
  `spec.processes` processes), so page runs never share the GIL with the training loop
  (bench/job_runner.py measures it). Stop is SIGTERM (or a stop file for torchrun); the child
  saves a checkpoint and exits within a step. A child that dies without saying how it ended
  leaves the job "interrupted", resumable from its last per-epoch checkpoint.
- "thread": vae.worker.run_job in a second thread of this process. A job whose registry was
  given a `load_data` function (tests) runs so too: that function lives in this process.
Either way the run tells its progress, loss curves, latent snapshots, checkpoints and end through
an event log in its folder (vae/job_events.py); the job's view is what that log says, so a job
started by another app process reads the same as one of ours.

Thread count (the thread runner only): `torch.set_num_threads` is not per job. Threads created
later (every Streamlit script run is a new thread) inherit the last value set anywhere, so the
registry restores the count it found when its last running job ends. A child process has its own.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable

import numpy as np
import torch

from .data import BUILTIN_NAMES, ImageDataset, load_dataset
from .errors import ConfigError
from .job_events import EventReader, EventWriter
from .job_records import JobRecords
from .job_spec import KINDS, HostedLimits, JobSpec, compatible_presets, guess_image_shape
from .train import Progress, Trainer  # noqa: F401  (Trainer: tests patch vae.jobs.Trainer.fit)
from .worker import STOP_FILE, load_spec_data, run_job, write_job_file

# a job is queued, running, done, stopped, failed or interrupted (its process died); these two are live
ACTIVE_STATES = ("queued", "running")
RUNNERS = ("thread", "process")
POLL_S = 0.1  # how often a supervising thread reads its run's log and checks on its worker
REFRESH_S = 1.0  # how often a registry re-reads the records of other processes (at most)
ROOT = Path(__file__).resolve().parent.parent  # on the child's PYTHONPATH: `-m vae.worker` is this package


def default_runner() -> str:
    """`LATENT_EXPLORER_JOB_RUNNER` (thread or process), process when unset."""
    value = os.environ.get("LATENT_EXPLORER_JOB_RUNNER", "process").strip().lower() or "process"
    if value not in RUNNERS:
        raise ConfigError(f"LATENT_EXPLORER_JOB_RUNNER={value!r} is invalid: expected one of {RUNNERS}")
    return value


def torchrun_devices() -> int:
    """How many processes the app offers a job: the GPUs when there are several, else 1. (The
    library also takes N CPU processes, gloo, when asked: tests run 2; on a CPU they rarely pay.)"""
    return torch.cuda.device_count() if torch.cuda.device_count() > 1 else 1


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
    points: MappingProxyType  # member -> float32 [N, 2], read-only
    labels: np.ndarray  # int64 [N], read-only
    method: str  # "identity" (the latent axes themselves) or "pca"
    test: MappingProxyType  # member -> test metrics at this epoch (empty at epoch 0)


@dataclass(frozen=True)
class JobView:
    """A consistent copy of a job for readers in other threads; nothing in it changes later."""

    id: str
    spec: JobSpec
    state: str
    name: str  # the pair's (or sweep's) name, known once the data set is loaded
    progress: Progress | None
    epochs_done: int  # epochs completed (what a stopped job's checkpoint holds)
    curves: MappingProxyType  # member -> tuple[CurvePoint, ...]
    snapshots: tuple[LatentSnapshot, ...]
    classes: tuple[str, ...]
    notes: tuple[str, ...]  # e.g. "download failed, used the embedded MNIST digits"
    error: str  # "Type: message" when state == "failed"; why, when "interrupted"
    checkpoints: MappingProxyType  # member -> path (str), when a checkpoint was written
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    owner: str = ""  # the session that started it ("" when unknown)
    resumed_from: int = 0  # epochs that the checkpoints it continued from held (0: trained from scratch)
    local: bool = True  # run by this process (False: found on disk, another app process's or a dead one's)

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
    """One run of a `JobSpec`, supervised by its own thread; every public read goes through
    `view()`, which first reads what the run's event log added since."""

    def __init__(self, spec: JobSpec, out_dir: str | Path, *, runs_dir: str | Path | None = None,
                 runner: str = "thread", train_threads: int = 0,
                 load_data: Callable[[JobSpec], ImageDataset] | None = None,
                 on_finish: Callable[["TrainingJob"], None] | None = None,
                 on_change: Callable[["TrainingJob"], None] | None = None, owner: str = "", job_id: str = ""):
        self.id = job_id or uuid.uuid4().hex[:12]
        self.spec, self.owner, self.runner = spec, owner, runner
        self.local = True  # False for a job found on disk: no thread here, its state comes from disk
        self._out_dir = Path(out_dir)
        self.run_dir = Path(runs_dir or self._out_dir / ".jobs" / "runs") / self.id
        self._on_change = on_change  # the registry's record on disk: at start, each checkpoint and the end
        self._on_finish = on_finish
        self._train_threads, self._load_data = train_threads, load_data
        self.lock_fd: int | None = None  # the configuration's lock, handed to a child process
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self._worker = None
        self._ended = threading.Event()  # set once the job's end is recorded and its slot freed
        self._lock, self._sync_lock = threading.Lock(), threading.Lock()
        self._reader = EventReader(self.run_dir)
        self._state, self._name, self._error = "queued", "", ""
        self._ended_by_log = False
        self._progress: Progress | None = None
        self._epochs_done = 0
        self._curves: dict[str, list[CurvePoint]] = {k: [] for k in spec.members()}
        self._snapshots: list[LatentSnapshot] = []
        self._classes: tuple[str, ...] = ()
        self._notes: list[str] = []
        self._checkpoints: dict[str, str] = {}
        self._resumed_from = 0
        self._saved_epochs = 0  # what the last checkpoint holds: all that survives a crash
        self.submitted_at, self.started_at, self.finished_at = time.time(), None, None

    @classmethod
    def from_record(cls, record: dict, out_dir: Path, runs_dir: Path) -> "TrainingJob":
        """A job found on disk (another process's, or an earlier server's); it has no thread."""
        job = cls(JobSpec.from_dict(record["spec"]), out_dir, runs_dir=runs_dir, job_id=record.get("id", ""),
                  owner=record.get("owner", ""))
        job.local = False
        state = record.get("state", "interrupted")
        job._state = "interrupted" if state in ACTIVE_STATES else state
        job._name, job._error = record.get("name", ""), record.get("error", "")
        job._epochs_done = int(record.get("epochs_done", 0))
        job._checkpoints = dict(record.get("checkpoints", {}))
        job._classes = tuple(record.get("classes", ()))
        job.submitted_at = record.get("submitted_at", job.submitted_at)
        job.started_at, job.finished_at = record.get("started_at"), record.get("finished_at")
        return job

    def observe(self, record: dict, busy: bool) -> None:
        """Another process's job: its record, and whether a live process holds its lock. A
        record that says queued or running with nobody holding the lock is a dead process's job."""
        with self._lock:
            if self._ended_by_log:
                return  # the run's own log says how it ended: the truth, whatever the record lags behind
            state = record.get("state", "interrupted")
            self._state = state if busy or state not in ACTIVE_STATES else "interrupted"
            self._epochs_done = max(self._epochs_done, int(record.get("epochs_done", 0)))
            self._checkpoints.update(record.get("checkpoints", {}))
            self._name = self._name or record.get("name", "")
            self.started_at = self.started_at or record.get("started_at")

    def record(self) -> dict:
        """What the registry writes to disk (plain JSON values)."""
        with self._lock:
            return {"id": self.id, "spec": asdict(self.spec), "state": self._state, "name": self._name,
                    "epochs_done": self._epochs_done, "checkpoints": dict(self._checkpoints),
                    "classes": list(self._classes), "error": self._error, "submitted_at": self.submitted_at,
                    "started_at": self.started_at, "finished_at": self.finished_at, "pid": os.getpid(),
                    "owner": self.owner, "runner": self.runner}

    def _changed(self) -> None:
        if self._on_change is not None and self.local:
            self._on_change(self)

    # --- reading -----------------------------------------------------------------------
    @property
    def state(self) -> str:
        self.sync()
        return self._state

    def view(self) -> JobView:
        self.sync()
        with self._lock:
            return JobView(
                id=self.id, spec=self.spec, state=self._state, name=self._name, progress=self._progress,
                epochs_done=self._epochs_done,
                curves=MappingProxyType({k: tuple(v) for k, v in self._curves.items()}),
                snapshots=tuple(self._snapshots), classes=self._classes, notes=tuple(self._notes),
                error=self._error, checkpoints=MappingProxyType(dict(self._checkpoints)),
                submitted_at=self.submitted_at, started_at=self.started_at, finished_at=self.finished_at,
                owner=self.owner, resumed_from=self._resumed_from, local=self.local)

    def sync(self) -> None:
        """Take in what the run's event log says since the last call."""
        with self._sync_lock:
            persist = False
            for event in self._reader.read_new():
                persist |= self._apply(event)
        if persist:
            self._changed()

    def _apply(self, e: dict) -> bool:
        """One event into the job's state; True when the record on disk should follow."""
        kind = e["t"]
        if kind == "snapshot":
            arrays = self._reader.snapshot_arrays(e)
            if arrays is not None:
                points, labels = arrays
                snap = LatentSnapshot(epoch=int(e["epoch"]),
                                      points=MappingProxyType({k: _frozen(p) for k, p in points.items()}),
                                      labels=_frozen(labels), method=e["method"],
                                      test=MappingProxyType({k: dict(v) for k, v in e["test"].items()}))
                with self._lock:
                    self._snapshots.append(snap)
            return False
        with self._lock:
            if kind == "started":
                self._name, self._classes = e["name"], tuple(e["classes"])
                self._notes += [n for n in e["notes"] if n not in self._notes]
                self._state = "running" if self._state == "queued" else self._state
            elif kind == "resumed":
                self._notes += [n for n in e["notes"] if n not in self._notes]
                self._epochs_done = self._resumed_from = int(e["epochs_done"])
            elif kind == "note" and e["text"] not in self._notes:
                self._notes.append(e["text"])
            elif kind == "progress":
                self._take_progress(Progress(**e["p"]), e.get("curve", False))
            elif kind == "checkpoint":
                self._checkpoints.update(e["paths"])
                self._saved_epochs = int(e["epoch"])
                self._epochs_done = max(self._epochs_done, self._saved_epochs)
            elif kind == "finished":
                self._state, self._error, self._ended_by_log = e["state"], e["error"], True
                self.finished_at = e.get("at", time.time())
            return kind in ("started", "checkpoint", "finished")

    def _take_progress(self, progress: Progress, curve: bool) -> None:
        self._progress = progress
        if progress.phase == "epoch_end":
            self._epochs_done = progress.epoch
        if curve:
            x = progress.step / max(1, progress.steps_per_epoch)
            for kind, loss in progress.losses.items():
                self._curves.setdefault(kind, []).append(
                    CurvePoint(progress.step, x, loss["recon"], loss["kl"], loss["total"]))

    # --- control -----------------------------------------------------------------------
    def start(self) -> None:
        """Run under a supervising daemon thread (the registry calls this when a slot is free)."""
        with self._lock:
            if self._state != "queued" or self.thread is not None or not self.local:
                return
            self._state, self.started_at = "running", time.time()
            self.thread = threading.Thread(target=self._supervise, name=f"train-{self.id}", daemon=True)
        self._changed()
        self.thread.start()

    def stop(self) -> None:
        """Ask the job to end: the trainer stops within one step and saves the checkpoints of
        the epochs completed so far; a queued job never starts. Another process's job is asked
        through a stop file in its run's folder."""
        if not self.local:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / STOP_FILE).touch()
            return
        self.stop_event.set()
        if self._worker is not None:
            self._worker.request_stop()
        with self._lock:
            was_queued = self._state == "queued"
            if was_queued:
                self._state, self.finished_at = "stopped", time.time()
        if was_queued:
            self._changed()
            if self._on_finish is not None:
                self._on_finish(self)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the job to end; True when it has ended (or never started). Its supervising
        thread may still be reaping the child for a moment (`shutdown` waits for that too)."""
        if self.thread is not None:
            return self._ended.wait(timeout)
        return self.state not in ACTIVE_STATES

    def release_worker(self) -> None:
        """Once the job has ended (its last word logged, or its worker gone), a child process that
        is still tearing down is ended, so that shutdown need not wait for it."""
        if self._ended.is_set() and self._worker is not None:
            self._worker.kill()

    # --- the supervising thread ----------------------------------------------------------
    def _supervise(self) -> None:
        worker = None
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            worker = _ProcessWorker(self) if self.runner == "process" else _ThreadWorker(self)
            self._worker = worker
            if self.stop_event.is_set():  # a stop that came while the worker was being started
                worker.request_stop()
            # the log's "finished" ends the job: a child's interpreter takes a while longer to exit
            while worker.poll() is None and not self._ended_by_log:
                self.sync()
                time.sleep(POLL_S)
            self.sync()
            if self._state == "running":  # the worker ended without a word on how: what is saved is what counts
                with self._lock:
                    self._epochs_done = max(self._saved_epochs, self._resumed_from)
                self._finish("stopped" if self.stop_event.is_set() else "interrupted", worker.exit_reason())
        except Exception as err:  # e.g. the child could not be started: reported, never raised into the app
            self._finish("failed", f"{type(err).__name__}: {err}")
        finally:
            if self._on_finish is not None:
                self._on_finish(self)
            self._ended.set()
            if worker is not None:
                worker.reap()

    def _finish(self, state: str, error: str = "") -> None:
        with self._lock:
            self._state, self._error, self.finished_at = state, error, time.time()
        self._changed()


class _ThreadWorker:
    """vae.worker.run_job in a thread of this process."""

    def __init__(self, job: TrainingJob):
        self.job = job
        self.thread = threading.Thread(target=self._run, name=f"trainer-{job.id}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        job, events = self.job, EventWriter(self.job.run_dir)
        try:
            run_job(job.spec, job._out_dir, events, stop_event=job.stop_event, threads=job._train_threads,
                    load_data=job._load_data)
        finally:
            events.close()

    def poll(self) -> int | None:
        return None if self.thread.is_alive() else 0

    def request_stop(self) -> None:
        pass  # the trainer reads the job's stop event itself

    def exit_reason(self) -> str:
        return "the training thread ended without a result"

    def reap(self) -> None:
        self.thread.join()

    def kill(self) -> None:
        pass  # a thread cannot be cut short; its trainer has already stopped when this is asked


class _ProcessWorker:
    """`python -m vae.worker RUN_DIR` (or torchrun) as a child process. The configuration's lock is
    handed down (pass_fds): an flock lives as long as any process holds its file open, so should
    this app process die, the lock stays taken until the child, which notices, has saved and left."""

    def __init__(self, job: TrainingJob):
        self.job = job
        write_job_file(job.run_dir, job.spec, job._out_dir, job._train_threads)
        module = ["-m", "vae.worker", str(job.run_dir)]
        n = job.spec.processes
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"] if n > 1 else []
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        with open(job.run_dir / "worker.log", "ab") as log:
            self.proc = subprocess.Popen([sys.executable, *launcher, *module], env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         pass_fds=(job.lock_fd,) if job.lock_fd is not None else ())

    def poll(self) -> int | None:
        return self.proc.poll()

    def request_stop(self) -> None:
        (self.job.run_dir / STOP_FILE).touch()  # torchrun's processes watch for it (and agree on the step)
        if self.job.spec.processes == 1 and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # faster than the file: the next step stops

    def reap(self, timeout: float = 30.0) -> None:
        """Wait for the child's exit after its last word; one that hangs there is killed."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """End a child that lingers after its last word: its checkpoints are saved and its end is
        logged, so only its interpreter's teardown is cut short (slow when the machine is busy:
        the child runs niced)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def exit_reason(self) -> str:
        code = self.proc.returncode
        how = (f"killed by signal {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exit code {code}")
        tail = _last_line(self.job.run_dir / "worker.log")
        return f"the training process ended unexpectedly ({how})" + (f": {tail}" if tail else "")


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


# --- the registry ----------------------------------------------------------------------------
class JobRegistry:
    """Every training job on one state folder: one job per spec, at most `max_running` at once
    in this process.

    submit() of a spec that is queued, running or done returns that job (one run, however many
    visitors or app processes ask); a stopped, failed or interrupted spec runs again and
    continues from its saved checkpoint (every epoch is saved). Jobs beyond `max_running` wait in
    a FIFO queue of at most `max_queued`. Checkpoints go to out_dir/<name>-<member>.safetensors,
    where the model picker (and, for a sweep, the β dial) finds them.

    The truth is on disk (vae.job_records, under out_dir/.jobs): a record per configuration,
    rewritten atomically at each change, and a lock file that the process with the active job
    holds (and its child). Every registry re-reads the records now and then: it lists the jobs of
    other app processes with their progress (their run's event log), attaches to them instead of
    starting a second run, and lists as "interrupted" the active jobs whose process died.

    `limits` (a public server): every spec is checked against HostedLimits, a session may have
    only `max_jobs_per_owner` active jobs, and may stop only the jobs it started.
    """

    def __init__(self, out_dir: str | Path, max_running: int = 1, train_threads: int = 0, *,
                 max_queued: int = 8, max_epochs: int | None = None, max_train_images: int | None = None,
                 limits: HostedLimits | None = None, runner: str | None = None,
                 load_data: Callable[[JobSpec], ImageDataset] | None = None):
        if not (isinstance(max_running, int) and max_running >= 1):
            raise ConfigError(f"max_running={max_running!r} is invalid: expected an integer >= 1")
        if not (isinstance(max_queued, int) and max_queued >= 0):
            raise ConfigError(f"max_queued={max_queued!r} is invalid: expected an integer >= 0")
        if not (isinstance(train_threads, int) and 0 <= train_threads <= 256):
            raise ConfigError(f"train_threads={train_threads!r} is invalid: expected an integer from 0 to 256 "
                              "(0: torch's default)")
        self.runner = default_runner() if runner is None else runner
        if self.runner not in RUNNERS:
            raise ConfigError(f"runner={runner!r} is invalid: expected one of {RUNNERS}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.max_running, self.max_queued, self.train_threads = max_running, max_queued, train_threads
        self.max_epochs, self.max_train_images = max_epochs, max_train_images
        self.limits = limits
        self._load_data = load_data  # a function of this process: its jobs run in threads
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
        self.runs_dir = self.records.folder / "runs"
        self._refreshed_at = 0.0
        self._load_records()

    @property
    def hosted(self) -> bool:
        return self.limits is not None

    # --- the truth on disk -------------------------------------------------------------------
    def _load_records(self) -> None:
        """Jobs of earlier server processes (the finished ones as they ended, the ones whose process
        died as "interrupted", resumable from their last epoch) and of live ones; then the temporary
        files and run folders that nothing explains any more are deleted."""
        self._refresh(force=True)
        with self._lock:
            jobs = list(self._by_key.items())
        busy = {j.view().name for key, j in jobs if self.records.busy(key)}
        self.records.clean_stale_tmp(self.out_dir, busy, {j.view().name for _, j in jobs})
        self.records.clean_runs(self.runs_dir, {j.id for _, j in jobs})

    def _refresh(self, force: bool = False) -> None:
        """Re-read the records written by other processes (at most every REFRESH_S)."""
        now = time.monotonic()
        if not force and now - self._refreshed_at < REFRESH_S:
            return
        self._refreshed_at = now
        for record in self.records.read_all():
            try:
                self._take_record(record)
            except (ConfigError, KeyError, TypeError, ValueError):
                continue  # a record of an older format, or a preset that no longer exists

    def _take_record(self, record: dict) -> None:
        key = record["key"]
        with self._lock:
            job = self._by_key.get(key)
            if job is not None and job.local and (job.id == record.get("id") or job.state in ACTIVE_STATES):
                return  # ours: this process writes that record
            busy = self.records.busy(key)
            if job is None or job.id != record.get("id"):
                found = TrainingJob.from_record(record, self.out_dir, self.runs_dir)
                found._on_change = self._persist
                if job is not None:  # another process ran the configuration again: its run replaces ours
                    self._jobs.pop(job.id, None)
                    self._alias(job.id, found.id)
                self._jobs[found.id] = self._by_key[key] = job = found
            job.observe(record, busy)
        if not busy and record.get("state") in ACTIVE_STATES:
            self._write_if_free(key, job)  # the record now says interrupted (and why the log ended)

    def _write_if_free(self, key: str, job: TrainingJob) -> None:
        """Rewrite another process's record only while holding its lock: a process that has just
        taken the configuration again must not have its new record overwritten."""
        lock = self.records.lock(key)
        if lock.acquire():
            try:
                self.records.write(key, job.record())
            finally:
                lock.release()

    def _alias(self, old: str, new: str) -> None:
        self._aliases[old] = new
        for earlier, target in list(self._aliases.items()):
            if target == old:
                self._aliases[earlier] = new

    def _wire(self, job: TrainingJob) -> None:
        job._train_threads, job._load_data = self.train_threads, self._load_data or self._load_cached
        job._on_finish, job._on_change = self._job_finished, self._persist
        # a loader given to the registry is a function of this process: such a job trains in a thread
        job.runner = "thread" if self._load_data is not None else self.runner

    def _persist(self, job: TrainingJob) -> None:
        self.records.write(job.spec.key(), job.record())

    # --- submitting ----------------------------------------------------------------------------
    def submit(self, spec: JobSpec, owner: str = "") -> tuple[TrainingJob, bool]:
        """(job, created): the existing job of this spec while it is queued, running or done, in
        this process or another one on the same state folder; otherwise a new job, which continues
        from the checkpoint a stopped or interrupted run of the same spec saved. `owner`: the
        session asking (hosted limits count per owner)."""
        self._check_limits(spec)
        key = spec.key()
        self._refresh(force=True)
        with self._lock:
            existing = self._by_key.get(key)
            if existing is not None and existing.state in ("queued", "running", "done"):
                return existing, False
            self._check_room(owner)
            lock = self.records.lock(key)
            if not lock.acquire():  # another process has just taken it: watch its job
                return self._attach(key), False
            job = TrainingJob(spec, self.out_dir, runs_dir=self.runs_dir, owner=owner)
            self._wire(job)
            job.lock_fd = lock.fd
            self._config_locks[key] = lock
            if existing is not None:  # the earlier run's row and id now lead to this one
                self._jobs.pop(existing.id, None)
                self._alias(existing.id, job.id)
                shutil.rmtree(existing.run_dir, ignore_errors=True)
            self._jobs[job.id] = self._by_key[key] = job
            self._queue.append(job)
            self._persist(job)
            self._start_waiting()
        return job, True

    def _attach(self, key: str, wait_s: float = 3.0) -> TrainingJob:
        """The job of a configuration whose lock another process holds, once its record says so."""
        deadline = time.monotonic() + wait_s
        while True:
            self._refresh(force=True)
            job = self._by_key.get(key)
            if job is not None and not job.local and job.state in ACTIVE_STATES:
                return job
            if time.monotonic() > deadline:
                raise ConfigError("these settings are being started by another server process on this state "
                                  "folder: try again in a moment to watch that job")
            time.sleep(0.05)

    def _check_room(self, owner: str) -> None:
        if self.hosted and owner:
            mine = [j for j in self._jobs.values() if j.owner == owner and j.local and j.state in ACTIVE_STATES]
            if len(mine) >= self.limits.max_jobs_per_owner:
                raise ConfigError(f"you already have {len(mine)} training job(s) queued or running on this "
                                  "shared server: wait for one to finish, or stop one")
        waiting = [j for j in self._queue if j.state == "queued"]
        if len(self._running) >= self.max_running and len(waiting) >= self.max_queued:
            raise ConfigError(f"the training queue is full ({len(self._running)} running, {len(waiting)} "
                              f"waiting): try again when a job has finished, or stop one")

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
        if spec.processes > 1:
            if self.runner != "process" or self._load_data is not None:
                raise ConfigError("a job with several processes needs the process runner "
                                  "(LATENT_EXPLORER_JOB_RUNNER=process)")
            gpus = torch.cuda.device_count()
            if gpus and spec.processes > gpus:
                raise ConfigError(f"processes={spec.processes} but this machine has {gpus} GPUs: one process per GPU")

    # --- reading -------------------------------------------------------------------------------
    def get(self, job_id: str) -> TrainingJob | None:
        self._refresh()
        with self._lock:
            return self._jobs.get(self._aliases.get(job_id, job_id))

    def find(self, spec: JobSpec) -> TrainingJob | None:
        """The latest job of this spec, whatever its state."""
        self._refresh()
        with self._lock:
            return self._by_key.get(spec.key())

    def list(self) -> list[TrainingJob]:
        """All jobs, newest first (other processes' too)."""
        self._refresh()
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.submitted_at, reverse=True)

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to start; None when the job is not waiting here."""
        with self._lock:
            waiting = [j.id for j in self._queue if j.state == "queued"]
        return waiting.index(job_id) + 1 if job_id in waiting else None

    # --- stopping ------------------------------------------------------------------------------
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
        """Stop this process's jobs and wait for them (tests, server exit); other processes' run on."""
        mine = [j for j in self.list() if j.local]
        for job in mine:
            job.stop()
        deadline = time.monotonic() + timeout
        for job in mine:
            job.join(max(0.0, deadline - time.monotonic()))
        for job in mine:  # and no supervising thread outlives the registry
            job.release_worker()
            if job.thread is not None:
                job.thread.join(max(1.0, deadline - time.monotonic()))

    # --- running -------------------------------------------------------------------------------
    def _load_cached(self, spec: JobSpec) -> ImageDataset:
        """Thread runner: built-in data sets stay in memory (at most 2: CIFAR-10 is 180 MB) for the
        next job; a fallback after a failed download is not kept, so the next job tries again."""
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
    "ACTIVE_STATES", "CurvePoint", "HostedLimits", "JobRegistry", "JobSpec", "JobView", "KINDS", "LatentSnapshot",
    "RUNNERS", "TrainingJob", "compatible_presets", "default_runner", "guess_image_shape", "load_spec_data",
    "torchrun_devices",
]
