"""Slow maps (UMAP, t-SNE) fitted off the page run: one small queue per server, shared by every visitor.

A page that needs a map nobody has fitted yet submits it and returns at once; the fit runs in the
queue's one worker thread (one fit at a time, one per map key however many visitors ask), which
encodes the sample and hands the fits to a child process (`vae.map_fit`: one core, its memory
returned when it exits). The page shows `fit_progress`, a fragment that reruns every second, and
reruns itself in full when the map is on disk. The worker never calls `st.*` (background threads
must not: streamlit/streamlit#5588); the page reads the `MapFit` record it updates.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import streamlit as st

from vae.errors import LatentExplorerError
from vae.map_fit import MapFitError, fit_in_child, fit_job, write_job

log = logging.getLogger(__name__)
KEEP_DONE_S = 600  # a finished fit's record is kept this long (a page between its disk check and submit)


@dataclass
class MapFit:
    """What a page shows about one fit; written by the worker thread only (plain attribute writes)."""

    key: str
    what: str  # "t-SNE map of 2,000 images"
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    ended: float | None = None
    stage: str = "waiting for the fits ahead of it"
    fraction: float = 0.0
    error: str | None = None  # a sentence a visitor may read
    detail: str = ""  # the child's last output, for the server's log and a local page

    @property
    def finished(self) -> bool:
        return self.ended is not None


class MapFitQueue:
    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="map-fit")
        self._lock = threading.Lock()
        self._fits: dict[str, MapFit] = {}

    def submit(self, key: str, what: str, work: Callable[[MapFit], None]) -> MapFit:
        """The fit of `key`: the one queued, running or just finished, else a new one (a failed fit
        is kept, and shown, until `retry`)."""
        with self._lock:
            now = time.monotonic()
            self._fits = {k: f for k, f in self._fits.items() if not f.finished or f.error or now - f.ended < KEEP_DONE_S}
            if key not in self._fits:
                self._fits[key] = fit = MapFit(key, what)
                self._pool.submit(self._run, fit, work)
            return self._fits[key]

    def get(self, key: str) -> MapFit | None:
        with self._lock:
            return self._fits.get(key)

    def pending(self) -> list[MapFit]:
        """Fits queued or running, oldest first."""
        with self._lock:
            return sorted((f for f in self._fits.values() if not f.finished), key=lambda f: f.submitted)

    def ahead(self, fit: MapFit) -> int:
        """Fits that will run before this one (queued earlier or running)."""
        return sum(1 for f in self.pending() if f.submitted < fit.submitted)

    def retry(self, key: str) -> None:
        with self._lock:
            if key in self._fits and self._fits[key].finished:
                del self._fits[key]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _run(fit: MapFit, work: Callable[[MapFit], None]) -> None:
        fit.started = time.monotonic()
        try:
            work(fit)
        except MapFitError as err:
            fit.error, fit.detail = f"{fit.what}: {err}", err.detail
            log.warning("%s: %s\n%s", fit.key, err, err.detail)
        except LatentExplorerError as err:
            fit.error = f"{fit.what}: {err}"
        except Exception as err:  # the worker must outlive any one fit
            fit.error, fit.detail = f"{fit.what}: the fit failed on the server", f"{type(err).__name__}: {err}"
            log.exception("map fit %s", fit.key)
        finally:
            fit.ended = time.monotonic()
            release_memory()


def release_memory() -> None:
    """Hand the encoding's freed memory back to the system: glibc keeps freed pages for reuse, so a
    server's RSS only grows (issue 19.6) unless asked to trim. Elsewhere (musl, macOS) a no-op."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@st.cache_resource(show_spinner=False, on_release=MapFitQueue.shutdown)
def queue() -> MapFitQueue:
    """The server's one queue of slow fits, shared by every session."""
    return MapFitQueue()


def fit_into_cache(fit: MapFit, models: dict, split, method: str, n: int, seed: int, model_ids: dict,
                   data_key: str, cache_dir: Path) -> None:
    """The worker's job: encode the sample here (seconds), fit each model's projection in a child."""
    fit.stage, fit.fraction = "encoding the test images with each model", 0.03
    parts, codes = fit_job(models, split, method, n, seed, model_ids=model_ids, data_key=data_key)
    name = "UMAP" if method == "umap" else "t-SNE"

    def on_stage(i: int, total: int, kind: str) -> None:
        if i < total:
            fit.stage = f"fitting {name} to the {kind.upper()}'s codes ({i + 1} of {total})"
        fit.fraction = 0.05 + 0.95 * i / total

    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".fit-") as tmp:
        job = Path(tmp) / "job.npz"
        write_job(job, cache_dir, method, seed, parts, codes)
        del codes  # the child has them
        fit_in_child(job, on_stage)


@st.fragment(run_every=1.0)
def fit_progress(key: str) -> None:
    """The fit's progress, redrawn every second; the whole page reruns once it is done."""
    fits = queue()
    fit = fits.get(key)
    if fit is None or fit.finished:
        st.rerun()
    now = time.monotonic()
    if fit.started is None:
        n = fits.ahead(fit)
        text = f"Queued: {n} map{'s' if n != 1 else ''} ahead of this one on this server ({now - fit.submitted:.0f} s)"
    else:
        text = f"{fit.stage[:1].upper()}{fit.stage[1:]} · {now - fit.started:.0f} s"
    st.progress(min(fit.fraction, 0.99), text=text)
