"""How long one step of the β dial takes on the server: the page rerun after the slider moves,
every member precomputed (the first run pays for that once per server).

    .venv/bin/python bench/beta_dial.py [--family sweep-mnist-2d] [--repeats 3]

Prints, per move, the rerun's wall time, and the ratio against a reference rerun in the same
process (the same page rerun with the slider left where it is). Target (issue 18): every step
under 300 ms on this machine."""
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


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--family", default=None, help="a sweep in checkpoints/ (default: each one)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    os.environ.setdefault("LATENT_EXPLORER_STATE", tempfile.mkdtemp(prefix="beta-bench-"))
    os.chdir(ROOT)
    from streamlit.testing.v1 import AppTest

    from vae.sweep import find_families

    names = [args.family] if args.family else [f.name for f in find_families([ROOT / "checkpoints"])]
    for name in names:
        at = AppTest.from_file(ROOT / "app_pages" / "6_Beta_dial.py", default_timeout=600)
        at.session_state["beta_family"] = name
        t0 = time.perf_counter()
        at.run()
        first = time.perf_counter() - t0
        slider = at.select_slider[0]
        betas = [float(b) for b in slider.options]
        reference = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            at.run()
            reference.append(time.perf_counter() - t0)
        ref = statistics.median(reference)
        print(f"{name}: first run (measures and draws {len(betas)} members) {first:.1f} s; "
              f"reference rerun {ref * 1000:.0f} ms")
        moves = []
        for _ in range(args.repeats):
            for beta in betas[1:] + betas[:1]:
                t0 = time.perf_counter()
                at.select_slider[0].set_value(beta).run()
                moves.append((beta, time.perf_counter() - t0))
                assert not at.exception, [e.value for e in at.exception]
        times = [t for _, t in moves]
        print(f"  slider step: median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
              f"({len(times)} moves), {statistics.median(times) / ref:.2f}x the reference rerun; "
              f"all under 300 ms: {max(times) < 0.3}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
