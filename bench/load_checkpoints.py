"""How long loading every shipped checkpoint takes (target: all of them under a second).

    .venv/bin/python bench/load_checkpoints.py

Prints each file's load time (file read + model rebuild), the total, and the ratio against a
reference in the same process: reading the same bytes with no model rebuild.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere, no install
import vae.networks  # noqa: F401  (imports torchvision once, outside the timings)
from vae import load_checkpoint  # noqa: E402

CKPT = Path(__file__).resolve().parent.parent / "checkpoints"


def main() -> None:
    files = sorted(p for p in CKPT.glob("*.safetensors") if not p.name.startswith("classifier-"))
    load_checkpoint(files[0])  # warm-up: first-call allocations
    total = raw = 0.0
    for path in files:
        t0 = time.perf_counter()
        path.read_bytes()
        t1 = time.perf_counter()
        load_checkpoint(path)
        t2 = time.perf_counter()
        raw, total = raw + (t1 - t0), total + (t2 - t1)
        print(f"{path.name:38s} {path.stat().st_size / 1e6:5.1f} MB  {1000 * (t2 - t1):7.1f} ms")
    print(f"all {len(files)} checkpoints: {total:.3f} s (target < 1 s); "
          f"{total / raw:.1f}x the time to read their bytes ({raw:.3f} s)")


if __name__ == "__main__":
    main()
