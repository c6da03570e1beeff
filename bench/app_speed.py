"""How fast the map pages answer, with the shipped checkpoints, in one process.

For each shipped pair (mnist-2d if present, mnist-mlp):
1. The Latent map page's first render (PCA, or the 2-D latent itself for mnist-2d), run by
   streamlit's AppTest with imports already warm: (a) a cold server (no model, data or
   projection in memory, empty disk cache); (b) a restarted server (memory empty, projections
   on disk); (c) a second render (everything in memory). Target: (a) under 2 s.
2. A grid click's server time, the work a click triggers: pixel -> map coordinates ->
   inverse projection -> decode (both models) -> nearest real images -> the two map images
   re-drawn with the marker and PNG-encoded, as streamlit-image-coordinates sends them.
   Median over clicks at random pixels. Target: under 100 ms. Also the whole Grid decoder
   page rerun after a click (AppTest), which adds the page's other widgets.
Each figure is also given as a ratio to a reference timed in the same process: the bare
models encoding the map's images (for 1) and a bare one-code decode by the VAE (for 2).

    .venv/bin/python bench/app_speed.py [--pairs mnist-2d mnist-mlp] [--clicks 30]
"""
from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without installing

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from ui import maps  # noqa: E402
from vae.catalog import data_for  # noqa: E402
from vae.checkpoint import load_checkpoint  # noqa: E402
from vae.data import ImageSplit  # noqa: E402
from vae.latent import decode_points, encode_split  # noqa: E402
from vae.neighbours import nearest_indices  # noqa: E402

MAP_PAGE, GRID_PAGE = "app_pages/2_Latent_map.py", "app_pages/3_Grid_decoder.py"
MAP_TARGET_S, CLICK_TARGET_S = 2.0, 0.100


def run_page(page: str, pair: str, **state) -> float:
    at = AppTest.from_file(str(ROOT / page), default_timeout=300)
    at.session_state["pair_name"] = pair
    for key, value in state.items():
        at.session_state[key] = value
    t0 = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - t0
    if at.exception or at.error:
        raise SystemExit(f"{page} failed: {[e.value for e in [*at.exception, *at.error]]}")
    return seconds


def fresh_server(state_dir: Path) -> None:
    """Empty every in-memory cache and point the app at a new state folder."""
    os.environ["LATENT_EXPLORER_STATE"] = str(state_dir)
    st.cache_resource.clear()
    st.cache_data.clear()


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_map_page(pair: str, n: int, tmp: Path, repeats: int) -> dict:
    fresh_server(tmp / f"{pair}-warmup")
    run_page(MAP_PAGE, pair)  # imports (PCA needs no numba); this run's caches are thrown away
    cold, restarted, warm = [], [], []
    for r in range(repeats):  # medians: this machine's load drifts
        fresh_server(tmp / f"{pair}-state-{r}")
        cold.append(run_page(MAP_PAGE, pair))
        st.cache_resource.clear()
        st.cache_data.clear()
        restarted.append(run_page(MAP_PAGE, pair))
        warm.append(run_page(MAP_PAGE, pair))
    # reference: the bare models encoding the same sample, nothing else
    models, split = load_pair(pair)
    idx = maps.sample_indices(len(split), n)
    sample = ImageSplit(split.images[idx], split.labels[idx])
    encode = median_time(lambda: [encode_split(m, sample) for m in models.values()], repeats)
    return {"cold": statistics.median(cold), "restarted": statistics.median(restarted),
            "warm": statistics.median(warm), "encode": encode}


def bench_click(pair: str, n: int, clicks: int, tmp: Path) -> dict:
    models, split = load_pair(pair)
    method = "identity" if pair.startswith("mnist-2d") else "pca"
    lmap = maps.build_latent_map(models, split, [str(i) for i in range(10)], method, n,
                                 model_ids={k: f"{pair}-{k}" for k in models}, data_key="bench")
    canvas = maps.MapCanvas(lmap.xlim, lmap.ylim)
    spec = maps.GridSpec(15, lmap.xlim, lmap.ylim)
    base = {}
    for kind, model in models.items():  # cached per map and grid on the page: not part of a click
        tiles = maps.decode_map_points(lmap, kind, model, spec.points())
        base[kind] = maps.render_map_image(canvas, lmap.points[kind], lmap.labels, tiles=tiles,
                                           prior_center=lmap.prior_center() if kind == "vae" else None)
    rng = np.random.default_rng(0)
    pixels = np.stack([rng.integers(canvas.left, canvas.left + canvas.size, clicks),
                       rng.integers(canvas.top, canvas.top + canvas.size, clicks)], axis=1)

    def one_click(px: int, py: int) -> None:
        value = {"x": int(px), "y": int(py), "width": canvas.width, "height": canvas.height}
        point = maps.click_to_data(value, canvas)
        for kind, model in models.items():
            decoded = decode_points(model, lmap.to_latent(kind, [point]))[0]
            maps.enlarge(decoded, 224)
            maps.split_images(split, lmap.indices[nearest_indices(lmap.points[kind], point, k=5)])
            marked = maps.draw_click_marker(base[kind], canvas, point)
            buf = io.BytesIO()  # what streamlit-image-coordinates does with a map painted with tiles
            Image.fromarray(marked).save(buf, format="JPEG", quality=90)
            base64.b64encode(buf.getvalue())

    one_click(*pixels[0])  # warm-up
    times = []
    for px, py in pixels:
        t0 = time.perf_counter()
        one_click(px, py)
        times.append(time.perf_counter() - t0)
    vae = models.get("vae") or next(iter(models.values()))
    z = np.zeros((1, vae.config.latent_dim), np.float32)
    decode_one = median_time(lambda: decode_points(vae, z), 50)
    # the whole page rerun after a click, models and map already in memory
    fresh_server(tmp / f"{pair}-grid")
    run_page(GRID_PAGE, pair)
    click = {"x": int(pixels[0][0]), "y": int(pixels[0][1]), "width": canvas.width, "height": canvas.height}
    page = statistics.median(run_page(GRID_PAGE, pair, grid_map_ae={**click, "unix_time": i}) for i in range(1, 6))
    return {"click": statistics.median(times), "p90": float(np.quantile(times, 0.9)), "decode_one": decode_one,
            "page": page}


_PAIRS: dict = {}


def load_pair(pair: str):
    if pair not in _PAIRS:
        ckpts = {k: load_checkpoint(ROOT / "checkpoints" / f"{pair}-{k}.safetensors") for k in ("ae", "vae")}
        data = data_for(ckpts["vae"].dataset, ckpts["vae"].config.image_shape)
        _PAIRS[pair] = ({k: c.model for k, c in ckpts.items()}, data.test)
    return _PAIRS[pair]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", nargs="+", default=["mnist-2d", "mnist-mlp"])
    p.add_argument("--n", type=int, default=maps.DEFAULT_SAMPLE, help="test images on the map (the pages' default)")
    p.add_argument("--clicks", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3, help="page renders per measurement (median)")
    args = p.parse_args(argv)
    os.environ["LATENT_EXPLORER_CHECKPOINTS"] = str(ROOT / "checkpoints")
    pairs = [q for q in args.pairs if (ROOT / "checkpoints" / f"{q}-vae.safetensors").is_file()]
    for q in sorted(set(args.pairs) - set(pairs)):
        print(f"{q}: no shipped checkpoints, skipped")
    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; map of {args.n:,} test images\n")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for pair in pairs:
            m = bench_map_page(pair, args.n, Path(tmp), args.repeats)
            c = bench_click(pair, args.n, args.clicks, Path(tmp))
            ok &= m["cold"] < MAP_TARGET_S and c["click"] < CLICK_TARGET_S
            method = "latent axes" if pair.startswith("mnist-2d") else "PCA"
            print(f"{pair} ({method})")
            print(f"  latent map page, first render, cold server     {m['cold']:7.3f} s  "  # median of repeats
                  f"(target < {MAP_TARGET_S:g} s: {'ok' if m['cold'] < MAP_TARGET_S else 'MISSED'}; "
                  f"{m['cold'] / m['encode']:.1f}x the bare encode of its images, {m['encode']:.3f} s)")
            print(f"  latent map page, restarted server (disk cache) {m['restarted']:7.3f} s  "
                  f"({m['restarted'] / m['encode']:.1f}x the bare encode)")
            print(f"  latent map page, second render                 {m['warm']:7.3f} s")
            print(f"  grid click, server work (median of {args.clicks})       {c['click'] * 1000:7.1f} ms "
                  f"(p90 {c['p90'] * 1000:.1f} ms; target < {CLICK_TARGET_S * 1000:g} ms: "
                  f"{'ok' if c['click'] < CLICK_TARGET_S else 'MISSED'}; "
                  f"{c['click'] / c['decode_one']:.1f}x a bare one-code decode, {c['decode_one'] * 1000:.2f} ms)")
            print(f"  grid decoder page rerun after a click           {c['page'] * 1000:7.1f} ms "
                  f"({c['page'] / c['decode_one']:.0f}x a bare one-code decode)\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
