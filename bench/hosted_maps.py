"""Hosted worst case for the map pages (issue 19.6): wall time of a fresh t-SNE / UMAP map (two
models' codes, as the Latent map page fits them) per sample size, and the process's RSS before
and after, to choose LATENT_EXPLORER_MAX_SLOW_MAP (ui.maps.hosted_map_size).

    python bench/hosted_maps.py --sizes 500 1000 2000 --latent 16
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vae.projections import make_projection  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000])
    p.add_argument("--methods", nargs="+", default=["tsne", "umap"])
    p.add_argument("--latent", type=int, default=16)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    make_projection("pca", args.latent)  # imports
    print(f"{'method':6} {'images':>6} {'2 fits (s)':>10} {'RSS before':>10} {'RSS after':>10} (MB)")
    for method in args.methods:
        for n in args.sizes:
            codes = [rng.normal(size=(n, args.latent)).astype(np.float32) for _ in range(2)]  # AE and VAE
            gc.collect()
            before = rss_mb()
            t0 = time.perf_counter()
            for c in codes:
                make_projection(method, args.latent).fit_transform(c)
            wall = time.perf_counter() - t0
            gc.collect()
            print(f"{method:6} {n:6d} {wall:10.1f} {before:10.0f} {rss_mb():10.0f}", flush=True)


if __name__ == "__main__":
    main()
