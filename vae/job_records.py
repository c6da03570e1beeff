"""The training-job registry's truth on disk: one small JSON record per job configuration, and a
lock file that the process training (or queueing) that configuration holds.

Several app processes may share one state folder (a restarted server, two workers behind a proxy):
the record says what happened to a configuration, the lock says whether some live process is on it
now. `fcntl.flock` locks belong to an open file and vanish with the process that held them, so a
`kill -9` leaves no stale lock: a record that reads "running" with a free lock is a job whose
process died, that is, an interrupted job whose last per-epoch checkpoint can be resumed. A job
that trains in a child process (vae/worker.py) hands its lock's open file down to the child, so
the configuration stays taken until both have ended, however the app process ended.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
from pathlib import Path

from .atomic import PRIVATE, write_json

TMP_MAX_AGE_S = 600  # a temporary file nobody's lock explains is stale after this long
RUN_MAX_AGE_S = 60  # a run folder no record names is left alone this long (its record may be on its way)
# .<pair>-<member>.safetensors.<random>.tmp, the member a pair's (ae, vae) or a sweep's (beta-<value>)
_CHECKPOINT_TMP = re.compile(r"^\.(?P<pair>.+)-(?:ae|vae|beta-[0-9.e+-]+)\.safetensors\.")


class ConfigLock:
    """An exclusive, non-blocking lock on one configuration, held until `release()` (or the
    process ends, however it ends)."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    @property
    def fd(self) -> int | None:
        """The open file that holds the lock: a child process given it (pass_fds) holds it too,
        until both have closed it; so a job's worker keeps its configuration taken should the
        app process that started it die first."""
        return self._fd


class JobRecords:
    """`<folder>/<spec key>.json` and `<folder>/<spec key>.lock` for every configuration."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def lock(self, key: str) -> ConfigLock:
        return ConfigLock(self.folder / f"{key}.lock")

    def busy(self, key: str) -> bool:
        """Is some live process (this one included, through another lock object) on this key?"""
        probe = self.lock(key)
        if probe.acquire():
            probe.release()
            return False
        return True

    def write(self, key: str, record: dict) -> None:
        # atomic (a reader or a crash sees the old record or the new one); owner-only, as mkstemp made them
        write_json(self.folder / f"{key}.json", {**record, "key": key, "written_at": time.time()}, PRIVATE, sort_keys=True)

    def read_all(self) -> list[dict]:
        """Every readable record, oldest first; an unreadable one is skipped (it is rewritten by
        the next job of its configuration)."""
        records = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and record.get("key") == path.stem:
                records.append(record)
        return sorted(records, key=lambda r: r.get("submitted_at", 0))

    def clean_stale_tmp(self, checkpoint_folder: Path, busy_names: set[str], known_names: set[str]) -> list[Path]:
        """Delete the temporary files a crash left behind (a save killed half-way): in the
        checkpoint folder those of pairs that have a record and no live process (`busy_names`),
        and any other one older than TMP_MAX_AGE_S; in the records folder those over a minute
        old. Returns what it deleted."""
        removed, now = [], time.time()
        for folder in (self.folder, Path(checkpoint_folder)):
            if not folder.is_dir():
                continue
            for tmp in folder.glob(".*.tmp"):
                match = _CHECKPOINT_TMP.match(tmp.name)
                pair = match["pair"] if match else ""
                try:
                    age = now - tmp.stat().st_mtime
                    if folder == self.folder:
                        stale = age > 60
                    else:
                        stale = pair not in busy_names and (pair in known_names or age > TMP_MAX_AGE_S)
                    if stale:
                        tmp.unlink()
                        removed.append(tmp)
                except OSError:
                    continue
        return removed

    def clean_runs(self, runs_folder: Path, known_ids: set[str]) -> list[Path]:
        """Delete the run folders (event logs, snapshots) of runs no record names any more (a
        configuration run again replaces its earlier run), and in the others the temporary files
        of a snapshot whose writer died mid-save. Returns the run folders it deleted."""
        removed, now = [], time.time()
        if not Path(runs_folder).is_dir():
            return removed
        for run in Path(runs_folder).iterdir():
            try:
                if run.name not in known_ids and now - run.stat().st_mtime > RUN_MAX_AGE_S:
                    shutil.rmtree(run, ignore_errors=True)
                    removed.append(run)
                    continue
                for tmp in run.glob(".*.tmp"):
                    if now - tmp.stat().st_mtime > 60:
                        tmp.unlink()
            except OSError:
                continue
        return removed


__all__ = ["ConfigLock", "JobRecords"]
