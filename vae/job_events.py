"""A training run's own account of itself: `events.jsonl` in the run's folder, and its latent-map
snapshots beside it as `.npz` files.

The trainer's side (vae/worker.py, in a child process or a thread) appends one JSON object per
line, each line written whole with one write and flushed; a snapshot's arrays are written to their
own file atomically *before* the line that names them. Any reader, in any process on the machine
or on the shared disk, tails the file from the offset it reached and takes only complete lines,
so it never sees half an event. This is how a supervising thread, a second app process and a
restarted server all learn a run's progress, curves, maps, checkpoints and end.

Events ("t" is the type):
    started      name, classes, notes                 (the data set is loaded)
    resumed      epochs_done, notes                   (models built; from a checkpoint when epochs_done > 0)
    note         text
    progress     p (a vae.train.Progress as a dict), curve (append a loss-curve point)
    snapshot     epoch, method, test, file            (the points and labels are in `file`)
    checkpoint   epoch, paths
    finished     state ("done", "stopped" or "failed"), error, checkpoints
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np

from .atomic import write_bytes

EVENTS = "events.jsonl"


class EventWriter:
    """Appends events to `<run dir>/events.jsonl` (a single writer per run)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.run_dir / EVENTS, "a", encoding="utf-8")

    def emit(self, kind: str, **fields) -> None:
        line = json.dumps({"t": kind, "at": time.time(), **fields}, separators=(",", ":"))
        self._file.write(line + "\n")  # one write per line: a reader sees it whole or not at all
        self._file.flush()

    def snapshot(self, epoch: int, method: str, points: dict, labels: np.ndarray, test: dict) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, labels=labels, **{f"points_{k}": v for k, v in points.items()})
        name = f"snapshot-{epoch:05d}.npz"
        write_bytes(self.run_dir / name, buffer.getvalue())  # whole, before the line that names it
        self.emit("snapshot", epoch=epoch, method=method, test=test, file=name)

    def close(self) -> None:
        self._file.close()


class NullWriter:
    """What the other processes of a torchrun job write: nothing (rank 0 speaks for them)."""

    def emit(self, kind: str, **fields) -> None: ...

    def snapshot(self, *args, **kwargs) -> None: ...

    def close(self) -> None: ...


class EventReader:
    """Reads the complete lines appended since the last call."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._offset = 0

    def read_new(self) -> list[dict]:
        path = self.run_dir / EVENTS
        try:
            with open(path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:  # not written yet, or the run's folder was removed
            return []
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
        self._offset += end
        events = []
        for line in data[:end].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a torn line of a crashed writer: skip it, the next ones still count
            if isinstance(event, dict) and "t" in event:
                events.append(event)
        return events

    def snapshot_arrays(self, event: dict) -> tuple[dict, np.ndarray] | None:
        """(kind -> points, labels) of a snapshot event; None when its file is unreadable."""
        try:
            with np.load(self.run_dir / event["file"]) as z:
                points = {k[len("points_"):]: z[k] for k in z.files if k.startswith("points_")}
                return points, z["labels"]
        except (OSError, KeyError, ValueError):
            return None


__all__ = ["EVENTS", "EventReader", "EventWriter", "NullWriter"]
