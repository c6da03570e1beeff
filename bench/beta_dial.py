"""How long the β dial takes on the server: the first view of a fresh server without the disk cache
(every member measured and drawn), the first view of a fresh server whose disk cache `ui.prebuild`
filled (as the Space's image is), and one step of the slider.

    .venv/bin/python bench/beta_dial.py [--family sweep-mnist-2d] [--repeats 3]

Each first view runs on emptied Streamlit caches (`st.cache_resource`, `st.cache_data`: what a
restarted server has) and a state folder of its own; imports and the OS's file cache stay warm in
this one process, as they are for a server's first visitor after its start-up. A slider step is
the page rerun after the slider moves, against a reference rerun in the same process (the same page
rerun with the slider left where it is). Target (issue 18): every step under 300 ms."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def fresh_server(state: str) -> None:
    """What a restarted server has: its state folder and empty in-memory caches."""
    import streamlit as st

    os.environ["LATENT_EXPLORER_STATE"] = state
    st.cache_resource.clear()
    st.cache_data.clear()


def first_view(name: str):
    """(seconds, AppTest) of a new visitor's first run of the dial on this sweep."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(ROOT / "app_pages" / "6_Beta_dial.py", default_timeout=600)
    at.session_state["beta_family"] = name
    t0 = time.perf_counter()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return time.perf_counter() - t0, at


def slider_steps(at, repeats: int) -> str:
    betas = [float(b) for b in at.select_slider[0].options]
    reference = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        at.run()
        reference.append(time.perf_counter() - t0)
    ref = statistics.median(reference)
    times = []
    for _ in range(repeats):
        for beta in betas[1:] + betas[:1]:
            t0 = time.perf_counter()
            at.select_slider[0].set_value(beta).run()
            times.append(time.perf_counter() - t0)
            assert not at.exception, [e.value for e in at.exception]
    return (f"  slider step: median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
            f"({len(times)} moves), {statistics.median(times) / ref:.2f}x the reference rerun "
            f"({ref * 1000:.0f} ms); all under 300 ms: {max(times) < 0.3}")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--family", default=None, help="a sweep in checkpoints/ (default: each one)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    os.chdir(ROOT)
    from ui.prebuild import prebuild_sweeps
    from vae.sweep import find_families

    names = [args.family] if args.family else [f.name for f in find_families([ROOT / "checkpoints"])]
    cold_state, built_state = (tempfile.mkdtemp(prefix=f"beta-bench-{k}-") for k in ("cold", "prebuilt"))
    fresh_server(cold_state)
    cold = {name: first_view(name)[0] for name in names}
    fresh_server(built_state)
    t0 = time.perf_counter()
    lines = prebuild_sweeps()
    build = time.perf_counter() - t0
    print(f"ui.prebuild (build time, every shipped sweep): {build:.1f} s: " + "; ".join(lines))
    fresh_server(built_state)
    for name in names:
        seconds, at = first_view(name)
        print(f"{name}: first view of a fresh server: no disk cache {cold[name]:.2f} s, prebuilt disk cache "
              f"{seconds:.2f} s ({seconds / cold[name]:.2f}x)")
        print(slider_steps(at, args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
