"""Where a page run's server CPU goes: cProfile of warm reruns of one page, in-process.

    .venv/bin/python bench/profile_page.py                        # Grid decoder, 5 warm runs
    .venv/bin/python bench/profile_page.py --page app_pages/2_Latent_map.py --runs 10 --top 40

The app runs under streamlit.testing.v1.AppTest (the shipped checkpoints, hosted mode, a fresh
state folder). Its script thread is profiled from the first warm run on (one cold run fills the
caches first, as earlier visitors would have), and the cumulative and own-time tables of the
profiled runs are printed, per run. AppTest leaves out what the live server adds around a run
(protobuf over the websocket, media files served over HTTP): compare the total with the server CPU
per run that bench/load_protocol.py measures. (AppTest would also recompile the scripts on each
run, which the server does not: this script shares one compiled-script cache across runs.)
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--page", default="app_pages/3_Grid_decoder.py")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="profile-page-")
    os.environ.update(LATENT_EXPLORER_STATE=tmp, LATENT_EXPLORER_HOSTED="1")
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)

    import streamlit.testing.v1.local_script_runner as local
    from streamlit.testing.v1 import AppTest
    from streamlit.testing.v1.local_script_runner import LocalScriptRunner

    # AppTest compiles the scripts afresh on every run (a new ScriptCache each time); the server
    # compiles each once. Share one cache so that the profile shows the server's work, not that.
    import streamlit.testing.v1.app_test as app_test

    shared_cache = local.ScriptCache()
    local.ScriptCache = app_test.ScriptCache = lambda: shared_cache

    profile, on = cProfile.Profile(), [False]
    original = LocalScriptRunner._run_script_thread

    def profiled(self):  # the script runs in this thread: profile it there
        if on[0]:
            profile.enable()
        try:
            original(self)
        finally:
            if on[0]:
                profile.disable()

    LocalScriptRunner._run_script_thread = profiled
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.run()
    at.switch_page(args.page).run()  # cold: models, data, maps into the caches
    assert not at.exception, at.exception
    at.run()  # warm once more (figures cached on first use)
    on[0] = True
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(args.runs):
        at.run()
        assert not at.exception, at.exception
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    on[0] = False
    print(f"{args.page}: {args.runs} warm runs, process CPU {cpu / args.runs * 1000:.0f} ms per run, "
          f"wall {wall / args.runs * 1000:.0f} ms per run (AppTest, in-process)\n")
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        stats.total_tt /= args.runs
        stats.strip_dirs().sort_stats(order).print_stats(args.top)
        print(f"--- sorted by {order} (times are totals over {args.runs} runs) ---")
        print(out.getvalue().split("\n", 4)[-1] if order == "tottime" else out.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
