"""Thread or process runner for training jobs: training speed, and page speed beside it.

    .venv/bin/python bench/job_runner.py                     # both runners, 10 sessions, 3 rounds
    .venv/bin/python bench/job_runner.py --runners process --sessions 10 --rounds 5

For each runner (LATENT_EXPLORER_JOB_RUNNER) it starts `streamlit run app.py` (hosted mode, a fresh
state folder, the shipped checkpoints) and, over Streamlit's own protocol (bench/streamlit_client.py,
no browser):

1. warms the Grid decoder page (one session), then times it with N sessions at once, no job;
2. starts a training job the way a visitor does (bench/load_protocol.Trainer: Train page, batch 8,
   20 epochs, its live fragment polled every second) and reads training steps/s, the page open;
3. times the Grid decoder page again with N sessions at once while the job trains, and the
   training steps/s meanwhile.

It prints p50/p95 of the page's run time and the steps/s per runner, then the ratios
thread/process. Training steps come from the page's own progress line, so both runners are read
the same way. Other work on the machine moves the absolute figures; the ratios are what count.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load_protocol import Trainer, free_port, pct  # noqa: E402
from bench.streamlit_client import StreamlitSession, wait_for_health  # noqa: E402

PAGE = ("Grid decoder", "Grid_decoder")


def start_server(state: Path, port: int, log: Path, runner: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENT_EXPLORER_") and k != "SPACE_ID"}
    env.update(LATENT_EXPLORER_STATE=str(state), LATENT_EXPLORER_HOSTED="1", LATENT_EXPLORER_TRAIN_THREADS="1",
               LATENT_EXPLORER_JOB_RUNNER=runner)
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    wait_for_health(f"http://127.0.0.1:{port}", 120, proc)
    return proc


async def page_times(url: str, sessions: int, rounds: int) -> list[float]:
    """Run times of the page, `sessions` sessions at once, each `rounds` times in a row."""
    times: list[float] = []

    async def one(index: int) -> None:
        async with StreamlitSession(url) as s:
            await asyncio.sleep(index * 0.05)
            for _ in range(rounds):
                run = await s.run_page(*PAGE)
                if run.exceptions:
                    raise RuntimeError(f"{PAGE[0]}: {run.exceptions[0]}")
                times.append(run.seconds)

    await asyncio.gather(*(one(i) for i in range(sessions)))
    return times


async def steps_per_s(trainer: Trainer, seconds: float) -> float:
    s0, t0 = trainer.step, time.monotonic()
    await asyncio.sleep(seconds)
    return (trainer.step - s0) / (time.monotonic() - t0)


async def measure(url: str, args) -> dict:
    async with StreamlitSession(url) as s:  # the caches (models, maps) filled, as by a first visitor
        await s.run_page(*PAGE)
    idle = await page_times(url, args.sessions, args.rounds)
    trainer = Trainer(url)
    await trainer.start()
    deadline = time.monotonic() + 180
    while trainer.step == 0 and time.monotonic() < deadline:
        await asyncio.sleep(1)
    if trainer.step == 0:
        raise SystemExit("the job shows no progress 180 s after Start training")
    alone = await steps_per_s(trainer, args.alone_s)
    s0, t0 = trainer.step, time.monotonic()
    busy = await page_times(url, args.sessions, args.rounds)
    loaded = (trainer.step - s0) / (time.monotonic() - t0)
    trainer.task.cancel()  # its poll must leave the websocket before the Stop button's page run reads it
    with contextlib.suppress(asyncio.CancelledError):
        await trainer.task
    trainer.task = None
    await trainer.stop()
    return dict(idle=idle, busy=busy, alone=alone, loaded=loaded)


def report(results: dict, sessions: int) -> str:
    lines = ["", f"{PAGE[0]} page run time (s) with {sessions} protocol-level sessions, and training steps/s:", "",
             "| runner | page p50 / p95, no job | page p50 / p95, job training | steps/s alone (Train open) "
             "| steps/s under the page load |", "| --- | ---: | ---: | ---: | ---: |"]
    for runner, r in results.items():
        lines.append(f"| {runner} | {pct(r['idle'], .5):.2f} / {pct(r['idle'], .95):.2f} | "
                     f"{pct(r['busy'], .5):.2f} / {pct(r['busy'], .95):.2f} | {r['alone']:.1f} | {r['loaded']:.1f} |")
    if {"thread", "process"} <= set(results):
        t, p = results["thread"], results["process"]
        lines += ["", "Ratios thread / process (page: > 1 means the process runner serves pages faster; "
                  "steps: < 1 means it trains faster):",
                  f"- page p50 while training: {pct(t['busy'], .5) / pct(p['busy'], .5):.2f}",
                  f"- page p95 while training: {pct(t['busy'], .95) / pct(p['busy'], .95):.2f}",
                  f"- steps/s alone: {t['alone'] / max(p['alone'], 1e-9):.2f}",
                  f"- steps/s under the page load: {t['loaded'] / max(p['loaded'], 1e-9):.2f}"]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runners", nargs="+", default=["thread", "process"], choices=["thread", "process"])
    p.add_argument("--sessions", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3, help="page runs per session, one after another")
    p.add_argument("--alone-s", type=float, default=15.0, help="seconds to read training steps/s alone")
    args = p.parse_args()
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}", flush=True)
    results = {}
    for runner in args.runners:
        with tempfile.TemporaryDirectory(prefix="job-runner-") as tmp:
            port = free_port()
            server = start_server(Path(tmp) / "state", port, Path(tmp) / "server.log", runner)
            try:
                results[runner] = asyncio.run(measure(f"http://127.0.0.1:{port}", args))
                print(f"{runner}: done; load average {os.getloadavg()[0]:.1f}", flush=True)
                print(report({runner: results[runner]}, args.sessions), flush=True)
            finally:
                server.terminate()
                try:
                    server.wait(20)
                except subprocess.TimeoutExpired:
                    server.kill()
    print(report(results, args.sessions))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
