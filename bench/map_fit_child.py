"""The map-fit child's cost (vae/map_fit.py): wall time and peak memory of one child process that
fits a new slow map, as the Space starts one for every map nobody has asked for before.

    python bench/map_fit_child.py [--method umap] [--sample 2000] [--latent 16] [--repeats 2]

One job file (a fresh mnist-mlp pair's codes of the embedded test digits), fitted by two children in
turn, `--repeats` times each (interleaved): the child as shipped (`python -m vae.map_fit JOB`, which imports no
torch) and the reference, the same child with torch imported first (what it cost while `import
vae` imported torch). Printed: median wall time and peak RSS of each, and their ratios.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILDREN = {
    "as shipped": ["-m", "vae.map_fit"],
    "torch imported first": ["-c", "import runpy, torch; runpy.run_module('vae.map_fit', run_name='__main__')"],
}


def write_job(folder: Path, method: str, sample: int, latent: int) -> None:
    import torch

    from vae.data import load_dataset
    from vae.map_fit import fit_job, write_job as write
    from vae.train import make_pair

    data = load_dataset("embedded-mnist")
    torch.manual_seed(0)
    models = make_pair("mnist-mlp", data.image_shape, latent_dim=latent)
    parts, codes = fit_job(models, data.test, method, sample, 0, model_ids={"ae": "a", "vae": "b"}, data_key="d")
    write(folder / "job.npz", folder / "cache", method, 0, parts, codes)


def run_child(args: list[str], job: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one child; its cache is emptied first, so it fits."""
    shutil.rmtree(job.parent / "cache", ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args, str(job)], cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"the child {' '.join(args)} failed (exit status {code})")
    return seconds, usage.ru_maxrss / 1024  # KB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="umap", choices=["umap", "tsne"])
    parser.add_argument("--sample", type=int, default=2000, help="codes per model (the hosted cap is 2,000)")
    parser.add_argument("--latent", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write-job", type=Path, help=argparse.SUPPRESS)  # the job writer's own run
    args = parser.parse_args()
    if args.write_job:
        write_job(args.write_job, args.method, args.sample, args.latent)
        return
    with tempfile.TemporaryDirectory() as tmp:
        # written by another process: a child's peak RSS starts at its parent's size at fork,
        # so this one stays small (no torch, no models)
        subprocess.run([sys.executable, __file__, "--write-job", tmp, "--method", args.method, "--sample",
                        str(args.sample), "--latent", str(args.latent)], check=True)
        job = Path(tmp) / "job.npz"
        times = {name: [] for name in CHILDREN}
        peaks = {name: [] for name in CHILDREN}
        for _ in range(args.repeats):  # interleaved, so a busy moment of the machine hits both
            for name, child in CHILDREN.items():
                seconds, peak = run_child(child, job)
                times[name].append(seconds)
                peaks[name].append(peak)
    print(f"one map-fit child, {args.method}, 2 models x {args.sample:,} codes of {args.latent}-D, "
          f"median of {args.repeats}")
    for name in CHILDREN:
        runs = ", ".join(f"{p:.0f}" for p in peaks[name])
        print(f"  {name:22s} {statistics.median(times[name]):6.2f} s   peak RSS {statistics.median(peaks[name]):6.0f} MB "
              f"(runs: {runs})")
    ship, ref = "as shipped", "torch imported first"
    print(f"  ratio shipped / reference: time {statistics.median(times[ship]) / statistics.median(times[ref]):.2f}, "
          f"peak RSS {statistics.median(peaks[ship]) / statistics.median(peaks[ref]):.2f}")


if __name__ == "__main__":
    main()
