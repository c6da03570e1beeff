"""One training job's run: load its data, build its models (a pair or a beta sweep), continue from
the checkpoints an earlier run of the same spec left, train, and tell the world through the run's
event log (vae/job_events.py).

`run_job` is called in a thread by the app's thread runner, and in a child process by

    python -m vae.worker RUN_DIR                                       # the process runner
    torchrun --standalone --nproc_per_node=N -m vae.worker RUN_DIR     # a job with N processes

where RUN_DIR/job.json says what to train. The child stops cleanly (a checkpoint of the batches
done, then exit) on SIGTERM or SIGINT, when a file named `stop` appears in RUN_DIR (how another
app process, or a torchrun job's supervisor, asks it), and when the app process that started it
dies (an orphan must not go on writing checkpoints that a restarted server will resume).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .checkpoint import load_checkpoint
from .data import ImageDataset, load_dataset
from .distributed import SINGLE, Distributed
from .errors import CheckpointError, ConfigError, DatasetError
from .job_events import EventWriter, NullWriter
from .job_spec import JobSpec
from .latent import encode_split
from .projections import make_projection, procrustes_align
from .train import Callback, Progress, Trainer, make_pair

SNAPSHOT_IMAGES = 500  # test images drawn on every epoch's latent map
PROGRESS_INTERVAL_S = 0.25  # at most one progress line this often (plus one per phase change)
CURVE_INTERVAL_S = 0.5  # at most one loss-curve point per model this often (plus one per epoch end)
WATCH_INTERVAL_S = 0.2  # how often a child looks for a stop file and for its app process
STOP_FILE = "stop"
JOB_FILE = "job.json"
# A child trains at a lower CPU priority than the app: where the cores are few (a 2-vCPU Space),
# visitors' page runs come first and training takes what they leave (bench/job_runner.py)
NICENESS = 10


def checkpoint_paths(spec: JobSpec, out_dir: Path, name: str) -> dict[str, Path]:
    """member -> `<out_dir>/<name>-<member>.safetensors` (a pair: -ae, -vae; a sweep: -beta-<value>)."""
    return {m: Path(out_dir) / f"{name}-{m}.safetensors" for m in spec.members()}


def load_spec_data(spec: JobSpec) -> ImageDataset:
    data = load_dataset(spec.dataset, fallback=True)
    return data.limit(train=spec.limit_train, test=spec.limit_test, seed=spec.seed)


ORPHANED = "the app process that started this job ended; the batches trained so far are saved"


def run_job(spec: JobSpec, out_dir: Path, events, *, stop_event: threading.Event, threads: int = 0,
            load_data: Callable[[JobSpec], ImageDataset] | None = None, group: Distributed = SINGLE,
            device: str = "auto", orphaned: threading.Event | None = None) -> str:
    """Train `spec`; every outcome is an event, the last one `finished`. Returns its state.
    `orphaned` set: the stop came from the death of the app process, so the job is "interrupted"
    (as if it had died with it, but with its batches saved), for a restarted server to resume."""
    try:
        state = _train(spec, Path(out_dir), events, stop_event, threads, load_data or load_spec_data, group, device)
        lost = state == "stopped" and orphaned is not None and orphaned.is_set()
        events.emit("finished", state="interrupted" if lost else state, error=ORPHANED if lost else "")
    except Exception as err:  # a job's failure is reported, never raised into the app
        state = "failed"
        events.emit("finished", state=state, error=f"{type(err).__name__}: {err}")
    return state


def _train(spec, out_dir, events, stop_event, threads, load_data, group, device) -> str:
    data = load_data(spec)
    name = spec.pair_name(data.name)
    events.emit("started", name=name, classes=list(data.classes), notes=list(data.notes))
    if stop_event.is_set():
        return "stopped"
    models = build_models(spec, data)
    out = checkpoint_paths(spec, out_dir, name)
    resume, notes = saved_checkpoints(spec, out)
    recorder = Recorder(events, data.test.subset(SNAPSHOT_IMAGES, seed=spec.seed))
    config = spec.train_config(threads, device=device)
    trainer = Trainer(models, data, config, callbacks=[recorder] if group.is_main else [], stop_event=stop_event,
                      out=out, resume=resume, distributed=group)
    events.emit("resumed", epochs_done=trainer.start_epoch, notes=notes)
    if group.is_main:
        recorder.snapshot(trainer.start_epoch, models, {k: dict(v) for k, v in trainer.test.items()})
    if trainer.start_epoch >= spec.epochs:  # every epoch is saved already (a stop during the last save)
        events.emit("checkpoint", epoch=trainer.start_epoch, paths={k: str(p) for k, p in out.items()})
        return "done"
    result = trainer.fit()
    return "stopped" if result.stopped else "done"


def build_models(spec: JobSpec, data: ImageDataset) -> dict:
    """A pair (make_pair) or a sweep's family (vae.sweep.sweep_models: what `--beta 0,0.1,1` builds)."""
    from .sweep import sweep_models

    try:
        if spec.is_sweep:
            return sweep_models(spec.preset, data.image_shape, spec.betas, latent_dim=spec.latent_dim, seed=spec.seed)
        return make_pair(spec.preset, data.image_shape, spec.kinds, spec.latent_dim, spec.beta, seed=spec.seed)
    except ConfigError as err:
        if data.notes:  # a failed download fell back to digits this preset cannot read
            raise DatasetError(f"{spec.dataset} could not be loaded, and the fallback {data.name} images "
                               f"{data.image_shape} do not fit preset {spec.preset!r} ({err}). Choose an MNIST "
                               f"preset, or a local copy of {spec.dataset}.") from err
        raise ConfigError(f"preset {spec.preset!r} cannot be built for the {data.name} images "
                          f"{data.image_shape}: {err}") from err


def saved_checkpoints(spec: JobSpec, out: dict[str, Path]) -> tuple[dict | None, list[str]]:
    """The checkpoints an earlier run of this spec left (stopped, or killed with the server), and
    what to tell the visitor: training continues from them rather than starting over and
    overwriting them."""
    if not all(p.is_file() for p in out.values()):
        return None, []
    try:
        saved = {k: load_checkpoint(p) for k, p in out.items()}
    except (CheckpointError, OSError) as err:
        return None, [f"The saved checkpoints of these settings could not be read ({type(err).__name__}), "
                      "so training starts over from epoch 0."]
    positions = {(ck.epoch, ck.batches_done) for ck in saved.values()}
    same = all(ck.train.get(f) == getattr(spec, f) for ck in saved.values() for f in ("seed", "batch_size", "lr"))
    if len(positions) != 1 or not same:
        return None, ["The saved checkpoints of these settings do not match each other, so training starts over "
                      "from epoch 0."]
    epoch, batches = positions.pop()
    if not (epoch or batches):
        return saved, []
    return saved, [f"Resumed from the saved checkpoint: {epoch} of {spec.epochs} epochs done"
                   + (f" and {batches} batches of the next" if batches else "") + "."]


class Recorder(Callback):
    """The trainer's observer inside a job: progress lines, curve points and latent snapshots."""

    def __init__(self, events, sample):
        self.events, self.sample = events, sample
        self.previous: dict[str, np.ndarray] = {}
        self._last_emit = self._last_curve = 0.0
        self._last_losses, self._last_phase = None, None

    def on_step_end(self, progress: Progress) -> None:
        self._progress(progress, epoch_end=False)

    def on_epoch_end(self, progress: Progress, models: dict) -> None:
        self._progress(progress, epoch_end=True)
        self.snapshot(progress.epoch, models, progress.test)

    def on_train_end(self, progress: Progress) -> None:
        self._progress(progress, epoch_end=False, force=True)

    def on_checkpoint(self, epoch: int, paths: dict) -> None:
        self.events.emit("checkpoint", epoch=epoch, paths={k: str(p) for k, p in paths.items()})

    def _progress(self, p: Progress, epoch_end: bool, force: bool = False) -> None:
        now = time.monotonic()
        # the trainer refreshes its running means every 10 steps: skip repeats (they draw stairs)
        fresh = bool(p.losses) and p.losses != self._last_losses
        curve = fresh and (epoch_end or now - self._last_curve >= CURVE_INTERVAL_S)
        if not (curve or force or p.phase != self._last_phase or now - self._last_emit >= PROGRESS_INTERVAL_S):
            return
        if curve:
            self._last_curve, self._last_losses = now, p.losses
        self._last_emit, self._last_phase = now, p.phase
        self.events.emit("progress", p=_progress_dict(p), curve=curve)

    def snapshot(self, epoch: int, models: dict, test: dict) -> None:
        try:
            points, method = self._maps(models)
        except Exception as err:  # a diverged model (NaN codes) must not end the run
            self.events.emit("note", text=f"No latent map after epoch {epoch}: {type(err).__name__}: {err}")
            return
        self.events.snapshot(epoch, method, points, self.sample.labels.numpy().copy(),
                             {k: dict(v) for k, v in test.items()})

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
        (and, on the first map, every other model's onto the reference: the VAE, or a sweep's
        last member) so that scrubbing through epochs and looking across models compare like
        with like. Rotation/reflection only: the distances stay in latent units, so a map that
        grows or shrinks still shows it."""
        reference = "vae" if "vae" in maps else list(maps)[-1]
        out = {}
        for kind in sorted(maps, key=lambda k: k != reference):  # the reference first
            target = self.previous.get(kind)
            if target is None and kind != reference:
                target = out[reference]
            out[kind] = maps[kind] if target is None else _rotate_onto(maps[kind], target)
        return {k: out[k] for k in maps}


def _progress_dict(p: Progress) -> dict:
    return {f: getattr(p, f) for f in p.__dataclass_fields__}


def _rotate_onto(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    try:
        _, transform = procrustes_align(points, target)
    except ConfigError:  # all points identical: nothing to orient
        return points
    centre = points.mean(axis=0)
    return ((points - centre) @ transform.rotation + centre).astype(np.float32)


# --- the child process -----------------------------------------------------------------------
def write_job_file(run_dir: Path, spec: JobSpec, out_dir: Path, threads: int) -> None:
    from dataclasses import asdict

    from .atomic import write_json

    write_json(Path(run_dir) / JOB_FILE, {"spec": asdict(spec), "out_dir": str(out_dir), "threads": threads,
                                          "supervisor_pid": os.getpid()})


def _watch(stop: threading.Event, orphaned: threading.Event, run_dir: Path, supervisor_pid: int) -> None:
    """Sets `stop` when a stop file appears, and `orphaned` too when the supervising app process is
    gone (its parent changes at once, even while a dead supervisor is not yet reaped; under
    torchrun the parent is torchrun, and the app's pid tells)."""
    parent = os.getppid()
    while not stop.is_set():
        if os.getppid() != parent or not _alive(supervisor_pid):
            orphaned.set()
            stop.set()
        elif (run_dir / STOP_FILE).exists():
            stop.set()
        time.sleep(WATCH_INTERVAL_S)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    from .distributed import init_from_env, one_disk_at_a_time, shutdown

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m vae.worker RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(args[0])
    job = json.loads((run_dir / JOB_FILE).read_text())
    os.nice(NICENESS)
    stop, orphaned = threading.Event(), threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())  # the trainer stops at the next step and saves
    threading.Thread(target=_watch, args=(stop, orphaned, run_dir, job["supervisor_pid"]), daemon=True).start()
    group, device = init_from_env("auto")  # one process, or one of torchrun's
    events = EventWriter(run_dir) if group.is_main else NullWriter()
    try:
        spec = JobSpec.from_dict(job["spec"])
        load = (lambda s: one_disk_at_a_time(group, lambda: load_spec_data(s))) if group.enabled else None
        run_job(spec, Path(job["out_dir"]), events, stop_event=stop, threads=job["threads"], load_data=load,
                group=group, device=str(device) if group.enabled else "auto", orphaned=orphaned)
    finally:
        events.close()
        shutdown(group)
    return 0


__all__ = ["Recorder", "build_models", "checkpoint_paths", "load_spec_data", "main", "run_job", "saved_checkpoints"]

if __name__ == "__main__":
    raise SystemExit(main())
