"""A slow map (UMAP, t-SNE) fitted in a child process, into the projection cache.

Why a child: a fit of thousands of codes holds one core for a minute and, inside the app's server,
leaves hundreds of MB behind when it is done (numba's compiled code, UMAP's neighbour graphs, the
allocator's freed but kept pages: issue 19.6 saw a server grow from 67 MB to 1.7 GB over five fits).
A child's memory goes back to the system when it exits, and the server's own core stays free.

The parent encodes the map's sample (a second; `fit_job`) and writes the codes to a job file; the
child (`python -m vae.map_fit JOB.npz`) fits each model's projection and saves it with
`ProjectionCache` exactly where `build_latent_map` looks, so the parent then loads the map from
disk. Only arrays and JSON cross the boundary (np.load with allow_pickle=False), and the child
prints one line per stage (`STAGE <i> <n> <kind>`), which the parent reads as progress. The child
imports no torch (about 1.3 s and 0.6 GB it would spend before fitting anything; a test checks).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .atomic import write_npz
from .errors import LatentExplorerError
from .projections import ProjectionCache, fit_projection

if TYPE_CHECKING:
    from .data import ImageSplit

ROOT = Path(__file__).resolve().parent.parent  # the child imports `vae` from here, wherever the parent runs
STAGE = "STAGE"


class MapFitError(LatentExplorerError):
    """The child process failed or ran out of time; `detail` is its last output (for the operator)."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


def fit_job(models: dict, split: ImageSplit, method: str, n: int, seed: int, *, model_ids: dict,
            data_key: str) -> tuple[dict, dict]:
    """(kind -> cache key parts, kind -> codes [n, d]): each model's fit of the sample that
    `build_latent_map` draws, keyed as it keys them."""
    # imported here: the parent encodes with torch, the child (`run_job`) starts without it
    from .data import ImageSplit
    from .latent import encode_split
    from .maps import projection_key, sample_indices

    idx = sample_indices(len(split), n, seed)
    sample = ImageSplit(split.images[idx], split.labels[idx])
    parts = {kind: projection_key(model_ids[kind], data_key, len(idx), method, seed) for kind in models}
    return parts, {kind: encode_split(m, sample).mean for kind, m in models.items()}


def write_job(path: Path, cache_dir: Path, method: str, seed: int, parts: dict, codes: dict) -> None:
    meta = {"cache": str(cache_dir), "method": method, "seed": int(seed), "parts": parts}
    write_npz(path, {"meta_json": np.array(json.dumps(meta))} |
                     {f"codes_{kind}": np.asarray(c, np.float32) for kind, c in codes.items()})


def run_job(path: str | Path, out=sys.stdout) -> None:
    """The child's work: every model's projection fitted and saved, one STAGE line before each."""
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta_json"]))
        codes = {kind: f[f"codes_{kind}"] for kind in meta["parts"]}
    cache = ProjectionCache(meta["cache"])
    for i, (kind, parts) in enumerate(meta["parts"].items()):
        print(f"{STAGE} {i} {len(codes)} {kind}", file=out, flush=True)
        cache.save(cache.path_for(parts), parts, fit_projection(meta["method"], codes[kind], meta["seed"]))
    print(f"{STAGE} {len(codes)} {len(codes)} done", file=out, flush=True)


def fit_in_child(job: Path, on_stage: Callable[[int, int, str], None] = lambda i, n, kind: None,
                 timeout_s: float = 1800, threads: int = 1) -> None:
    """Run `run_job(job)` in a new Python process with `threads` threads; on_stage(i, n, kind)
    as each of n fits starts. Raises MapFitError if it fails or outlives timeout_s (then killed)."""
    limits = {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                              "NUMBA_NUM_THREADS")}
    env = os.environ | limits | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "vae.map_fit", str(job)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    watchdog = threading.Timer(timeout_s, proc.kill)
    watchdog.start()
    tail: list[str] = []  # the child's last words, for the error
    try:
        for line in proc.stdout:
            words = line.split()
            if len(words) == 4 and words[0] == STAGE:
                on_stage(int(words[1]), int(words[2]), words[3])
            else:
                tail = (tail + [line.rstrip()])[-5:]
        code = proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code != 0:
        why = "was stopped (out of time or memory)" if code == -9 else f"failed (exit status {code})"
        raise MapFitError(f"the map's fit {why}", "\n".join(tail))


if __name__ == "__main__":
    run_job(sys.argv[1])
