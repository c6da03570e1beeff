"""Hosted worst case for the slow maps (issue 19.6), two ways.

    python bench/hosted_maps.py server [--requests 5] [--max-slow-map N]   # the whole server
    python bench/hosted_maps.py fits --sizes 500 1000 2000 --latent 16       # one process, fits alone

`server` starts `streamlit run app.py` as the Space runs it (LATENT_EXPLORER_HOSTED=1, a fresh state
folder: nothing prebuilt, the shipped checkpoints, LATENT_EXPLORER_DATA as given) on 127.0.0.1 and
drives it over Streamlit's own websocket protocol (bench/streamlit_client.py). A warm-up visitor
opens the Latent map (PCA); then each of --requests new visitors asks for the heaviest map a client
can ask for, 5,000 test images, by t-SNE or UMAP, each a map nobody has asked for before (a pair
and method of its own). Every page run of that visitor is timed (rerun sent to script finished)
until the page shows the map; meanwhile a light visitor reruns the Home page every second, the
"is the server stalled?" figure (its idle run time, measured before, is the reference). The RSS of
the streamlit process (psutil) is read at start, after the warm-up, at its peak with any child
processes, and after the five requests, settled (10 s later).

`fits` times the fits alone in this process (the first version of this bench).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HEAVY = [("mnist-mlp", "tsne"), ("mnist-mlp", "umap"), ("tutorial-mnist-mlp", "tsne"),
         ("tutorial-mnist-mlp", "umap"), ("mnist-mlp-1k", "tsne")]
READY = ("loaded from the disk cache", "computed in")  # the Latent map's caption once the map is drawn


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- server ------------------------------------------------------------------------------------
def start_server(port: int, state: Path, log: Path, cap: int | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENT_EXPLORER_") and k != "SPACE_ID"}
    env |= {"LATENT_EXPLORER_HOSTED": "1", "LATENT_EXPLORER_STATE": str(state),
            "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    if os.environ.get("LATENT_EXPLORER_DATA"):
        env["LATENT_EXPLORER_DATA"] = os.environ["LATENT_EXPLORER_DATA"]
    if cap is not None:
        env["LATENT_EXPLORER_MAX_SLOW_MAP"] = str(cap)
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true"]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


class Memory:
    """The server's RSS, sampled every 0.2 s: its own and with its child processes (a fit's)."""

    def __init__(self, pid: int):
        import psutil

        self.proc, self.peak_own, self.peak_all, self.peak_child_uss = psutil.Process(pid), 0.0, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def own(self) -> float:
        return self.proc.memory_info().rss / 2 ** 20

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(0.2):
            try:
                own = self.own()
                children = self.proc.children(recursive=True)
                kids = sum(c.memory_info().rss for c in children) / 2 ** 20
                # USS: a child's own pages; its RSS also counts torch's libraries, shared with the server
                uss = max((c.memory_full_info().uss for c in children), default=0) / 2 ** 20
            except psutil.Error:
                continue
            self.peak_own, self.peak_all = max(self.peak_own, own), max(self.peak_all, own + kids)
            self.peak_child_uss = max(self.peak_child_uss, uss)

    def stop(self) -> None:
        self._stop.set()


async def heavy_request(url: str, pair: str, method: str, labels: dict, timeout_s: float) -> tuple[list[float], str]:
    """A new visitor asks for a 5,000-image map by `method`: (every page run's seconds until the
    map shows, what the page said about the size)."""
    from streamlit.proto.Common_pb2 import StringArray
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    from bench.streamlit_client import StreamlitSession

    async with StreamlitSession(url) as s:
        page = await s.run_page("Latent map", "Latent_map")
        if pair != "mnist-mlp":
            page = await s.select(page, "Model pair (AE and VAE)", labels[pair], "Latent_map")
        slider = WidgetState(id=page.widgets["Test images on the map"][0], string_array_value=StringArray(data=["5,000"]))
        await s.run_page("Latent map", "Latent_map", [slider])  # PCA at 5,000: quick, and the size is kept
        runs, start = [], time.perf_counter()
        page = await s.select(page, "Map projection", labels[method], "Latent_map", timeout_s=timeout_s)
        runs.append(page.seconds)
        while not any(r in page.text() for r in READY):
            if time.perf_counter() - start > timeout_s:
                raise TimeoutError(f"{pair} {method}: no map after {timeout_s:.0f} s: {page.text()[-300:]}")
            await asyncio.sleep(1.0)  # the browser's fragment polls; a full rerun shows the map when ready
            page = await s.run_page("Latent map", "Latent_map", timeout_s=timeout_s)
            runs.append(page.seconds)
        note = next((t for t in page.texts if t.startswith("Showing ")), "")
        return runs, f"{time.perf_counter() - start:.1f} s to the map" + (f" ({note[:40]}…)" if note else "")


async def light_visitor(url: str, stop: asyncio.Event, times: list[float]) -> None:
    from bench.streamlit_client import StreamlitSession

    async with StreamlitSession(url) as s:
        while not stop.is_set():
            times.append((await s.run_page("Home", "")).seconds)
            await asyncio.sleep(1.0)


async def drive(url: str, memory: Memory, args) -> None:
    from bench.streamlit_client import StreamlitSession
    from vae import catalog

    import streamlit.logger

    streamlit.logger.set_log_level("error")  # ui.maps outside a server: no "no runtime" warnings
    from ui.maps import METHOD_NAMES

    labels = {p.name: p.label for p in catalog.find_pairs([ROOT / "checkpoints"])[0]} | METHOD_NAMES
    async with StreamlitSession(url) as s:  # warm-up: imports, models, data, a PCA map
        await s.run_page("Latent map", "Latent_map", timeout_s=300)
        idle = [(await s.run_page("Home", "")).seconds for _ in range(5)]
    await asyncio.sleep(2)
    warm = memory.own()
    print(f"after the warm-up visit: server RSS {warm:.0f} MB; Home page run idle: median "
          f"{statistics.median(idle) * 1000:.0f} ms", flush=True)
    stop, light = asyncio.Event(), []
    watcher = asyncio.create_task(light_visitor(url, stop, light))
    worst = 0.0
    for pair, method in HEAVY[:args.requests]:
        runs, note = await heavy_request(url, pair, method, labels, args.timeout)
        worst = max(worst, max(runs))
        print(f"  {pair} {method} 5,000 asked: {len(runs)} page runs, longest {max(runs):.2f} s; {note}; "
              f"server RSS {memory.own():.0f} MB", flush=True)
    stop.set()
    await watcher
    await asyncio.sleep(10)
    gc.collect()
    after = memory.own()
    print(f"worst page run of a heavy request: {worst:.2f} s ({worst / statistics.median(idle):.0f}x an idle Home run)")
    print(f"light visitor's Home page during the fits: median {statistics.median(light) * 1000:.0f} ms, max "
          f"{max(light) * 1000:.0f} ms over {len(light)} runs ({statistics.median(light) / statistics.median(idle):.1f}x "
          "idle, median)")
    print(f"server RSS: after the warm-up {warm:.0f} MB, peak {memory.peak_own:.0f} MB (with fit processes "
          f"{memory.peak_all:.0f} MB; a fit process's own memory (USS) at most {memory.peak_child_uss:.0f} MB), "
          f"after {args.requests} heavy requests {after:.0f} MB ({after - warm:+.0f} MB)")


def server(args) -> int:
    from bench.streamlit_client import wait_for_health

    port = args.port
    state = Path(tempfile.mkdtemp(prefix="hosted-maps-"))
    log = state / "server.log"
    proc = start_server(port, state, log, args.max_slow_map)
    try:
        wait_for_health(f"http://127.0.0.1:{port}", 120, proc)
        memory = Memory(proc.pid)
        print(f"server pid {proc.pid}, cap LATENT_EXPLORER_MAX_SLOW_MAP={args.max_slow_map or 'default'}: "
              f"RSS at start {memory.own():.0f} MB", flush=True)
        asyncio.run(drive(f"http://127.0.0.1:{port}", memory, args))
        memory.stop()
    finally:
        proc.terminate()
        proc.wait(30)
    return 0


# --- fits alone --------------------------------------------------------------------------------
def fits(args) -> int:
    from vae.projections import make_projection

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
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--requests", type=int, default=5, choices=range(1, len(HEAVY) + 1))
    s.add_argument("--max-slow-map", type=int, default=None, help="LATENT_EXPLORER_MAX_SLOW_MAP (default: the app's)")
    s.add_argument("--port", type=int, default=8631)
    s.add_argument("--timeout", type=float, default=900)
    f = sub.add_parser("fits")
    f.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000])
    f.add_argument("--methods", nargs="+", default=["tsne", "umap"])
    f.add_argument("--latent", type=int, default=16)
    args = p.parse_args()
    return server(args) if args.mode == "server" else fits(args)


if __name__ == "__main__":
    raise SystemExit(main())
