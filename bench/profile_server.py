"""Where a page run's CPU goes in the live server: cProfile inside `streamlit run`, both threads.

    .venv/bin/python bench/profile_server.py                          # Grid decoder, 20 warm runs
    .venv/bin/python bench/profile_server.py --page Train --runs 20 --top 25
    .venv/bin/python bench/profile_server.py --slider "Grid cells per side"   # a grid control moved

`bench/profile_page.py` profiles the script under AppTest, which leaves out what the server does
around a run. This one starts the real server (hosted mode, a fresh state folder, the shipped
checkpoints) with two profilers installed before streamlit starts (`_BOOT` below):

- the **script thread**: each page run gets its own thread in the server; every run's thread is
  profiled and the profiles are added up;
- the **event-loop thread** (the main thread: uvicorn/starlette, the websocket, the forward-message
  queue, protobuf serialisation of what the script sent).

One browserless session (`bench/streamlit_client.py`, which sends the message hashes it has
cached, as the browser does) opens the page cold and warm, then --runs warm runs are measured
without the profiler (server CPU per run, from /proc) and --runs more with it. The profiler roughly
doubles the cost of Python calls: read its tables for shares, the unprofiled figure for the cost.
Both profilers count each thread's own CPU time (`time.thread_time`), not wall time, so other
jobs on a busy machine, and the event loop's waits, do not show in them.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load_protocol import cpu_seconds, free_port  # noqa: E402
from bench.streamlit_client import PAGES, StreamlitSession, wait_for_health  # noqa: E402

# Runs inside the server process, before streamlit starts. SIGUSR1 starts profiling, SIGUSR2 stops
# it and writes loop.prof (the main thread) and script.prof (every script thread's, added up).
_BOOT = r"""
import cProfile, os, signal, sys, threading, time
from streamlit.runtime.scriptrunner import script_runner

out, on, lock, scripts, loop_prof = os.environ["PROFILE_SERVER_OUT"], [False], threading.Lock(), [], [None]
original = script_runner.ScriptRunner._run_script_thread

def profiled(self):
    if not on[0]:
        return original(self)
    prof = cProfile.Profile(time.thread_time)
    prof.enable()
    try:
        return original(self)
    finally:
        prof.disable()
        with lock:
            scripts.append(prof)

def start(*_):
    loop_prof[0] = cProfile.Profile(time.thread_time)
    on[0] = True
    loop_prof[0].enable()

def stop(*_):
    loop_prof[0].disable()
    on[0] = False
    loop_prof[0].dump_stats(os.path.join(out, "loop.prof"))
    with lock:
        if scripts:
            import pstats
            stats = pstats.Stats(scripts[0])
            for p in scripts[1:]:
                stats.add(p)
            stats.dump_stats(os.path.join(out, "script.prof"))
    open(os.path.join(out, "done"), "w").close()

script_runner.ScriptRunner._run_script_thread = profiled
signal.signal(signal.SIGUSR1, start)
signal.signal(signal.SIGUSR2, stop)
from streamlit.web.cli import main
sys.argv = ["streamlit", "run"] + sys.argv[1:]
main()
"""


def start_server(state: Path, port: int, out: Path, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENT_EXPLORER_") and k != "SPACE_ID"}
    env.update(LATENT_EXPLORER_STATE=str(state), LATENT_EXPLORER_HOSTED="1", PROFILE_SERVER_OUT=str(out))
    cmd = [sys.executable, "-c", _BOOT, "app.py", "--server.port", str(port), "--server.address", "127.0.0.1",
           "--server.headless", "true"]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    wait_for_health(f"http://127.0.0.1:{port}", 120, proc)
    return proc


async def drive(url: str, proc: subprocess.Popen, name: str, path: str, runs: int, out: Path,
                slider: str | None) -> str:
    async with StreamlitSession(url) as s:
        await s.run_page("Home", "")
        for _ in range(3):  # cold, then warm (figures cached on first use, message hashes known)
            run = await s.run_page(name, path)
            if run.exceptions:
                raise SystemExit(f"{name}: {run.exceptions}")
        step = _slider_step(s, run, path, slider) if slider else None
        for _ in range(2):  # both values of the slider seen once: the runs below are warm
            await (step() if step else s.run_page(name, path))
        cpu0, wall0 = cpu_seconds(proc.pid), time.perf_counter()
        for _ in range(runs):
            run = await (step() if step else s.run_page(name, path))
        cpu, wall = cpu_seconds(proc.pid) - cpu0, time.perf_counter() - wall0
        proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(0.5)
        for _ in range(runs):
            await (step() if step else s.run_page(name, path))
        proc.send_signal(signal.SIGUSR2)
        while not (out / "done").exists():
            await asyncio.sleep(0.2)
    what = f"moving the slider {slider!r}" + (" (a fragment rerun)" if step.fragment else " (a full rerun)") \
        if step else "page runs"
    return (f"{name}, {what}: {runs} warm runs, server CPU {cpu / runs * 1000:.0f} ms per run (unprofiled), wall "
            f"{wall / runs * 1000:.0f} ms per run; {run.elements} elements and {run.received_bytes / 1e3:.0f} kB "
            "sent per run")


def _slider_step(session: StreamlitSession, page, path: str, label: str):
    """A function that moves the int slider `label` one step up or back down, as the browser does:
    a rerun of the fragment that drew it, or of the page when it is not in one."""
    from streamlit.proto.Common_pb2 import DoubleArray
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    widget_id, fragment = page.widgets[label][0], page.widget_fragments.get(label, "")
    state = {"up": False}

    def step():
        state["up"] = not state["up"]
        values = DoubleArray(data=[16 if state["up"] else 15])
        widgets = [WidgetState(id=widget_id, double_array_value=values)]
        if fragment:
            return session.run_fragment(fragment, path, widget_states=widgets, auto=False)
        return session.run_page(page.page, path, widgets)

    step.fragment = fragment
    return step


def table(path: Path, runs: int, order: str, top: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.total_tt /= runs
    stats.strip_dirs().sort_stats(order).print_stats(top)
    return out.getvalue().split("\n", 4)[-1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--page", default="Grid decoder", choices=[name for name, _ in PAGES])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--save", help="a folder to keep loop.prof and script.prof in")
    p.add_argument("--slider", help="measure moving this int slider (15 <-> 16) instead of page runs, e.g. "
                                    "'Grid cells per side'")
    args = p.parse_args()
    path = dict(PAGES)[args.page]
    with tempfile.TemporaryDirectory(prefix="profile-server-") as tmp:
        out = Path(args.save or tmp)
        out.mkdir(parents=True, exist_ok=True)
        (out / "done").unlink(missing_ok=True)
        port = free_port()
        proc = start_server(Path(tmp) / "state", port, out, Path(tmp) / "server.log")
        try:
            print(f"load average {os.getloadavg()[0]:.1f}; "
                  + asyncio.run(drive(f"http://127.0.0.1:{port}", proc, args.page, path, args.runs, out,
                                    args.slider)))
        finally:
            proc.terminate()
            proc.wait(20)
        for thread, name in (("script", "script.prof"), ("event loop", "loop.prof")):
            for order in ("cumulative", "tottime"):
                print(f"\n--- {thread} thread, by {order} (seconds are totals over {args.runs} profiled runs) ---")
                print(table(out / name, args.runs, order, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
