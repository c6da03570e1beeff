"""Capacity for a class without browsers: N Streamlit sessions over the app's own websocket protocol.

    .venv/bin/python bench/load_protocol.py                           # 1, 10, 40 sessions
    .venv/bin/python bench/load_protocol.py --sessions 1 10 40 100 --train
    .venv/bin/python bench/load_protocol.py --url http://127.0.0.1:8501 --pid 1234   # a running server

It starts `streamlit run app.py` (hosted mode, a fresh state folder, the shipped checkpoints) on
127.0.0.1 unless --url is given, and then, with bench/streamlit_client.py (no browser: the load is
the server's alone):

1. cost: one session runs every page twice (cold, then warm) and then --repeats more times;
   the server's CPU seconds (user + system, /proc/<pid>/stat) around each warm run are that page's
   CPU per run, measured with nothing else running;
2. for each N of --sessions: N sessions connect at once, each opens Home, then every session goes
   through Latent map, Grid decoder, Reconstructions, Draw, Train and Home again, all at once,
   --rounds times. Per page: p50/p95/max of the run time (rerun sent to script_finished); per
   phase: the server's CPU seconds per page run and the cores it used (CPU s / wall s).

With --train, a training job runs meanwhile, started the way a visitor does: one more session
opens Train, sets batch size 8 and the most epochs allowed (a job longer than the bench) and
presses "Start training", then keeps the page open, rerunning its live fragment every second as
the browser would. The job's thread (and torch's) is measured apart: the server threads that
burn CPU while no page runs are the job's, and the per-run CPU leaves them out. The job is
stopped at the end (the Stop button) and the server too. Only 127.0.0.1 is contacted.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.streamlit_client import PAGES, PageError, StreamlitSession, wait_for_health  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
ROUND = PAGES[1:] + PAGES[:1]  # from Home through every page and back
PROGRESS = re.compile(r"Epoch (\d+)/\d+ · step ([\d,]+)/([\d,]+)")  # ui.train_widgets' progress line


# --- the server and its CPU ------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(state: Path, port: int, log: Path, train_threads: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENT_EXPLORER_") and k != "SPACE_ID"}
    env.update(LATENT_EXPLORER_STATE=str(state), LATENT_EXPLORER_HOSTED="1",
               LATENT_EXPLORER_TRAIN_THREADS=str(train_threads))
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    wait_for_health(f"http://127.0.0.1:{port}", 120, proc)
    return proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    """Resident memory of the process, MB (/proc/<pid>/status VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of the process."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def busy_threads(pid: int, window_s: float = 3.0, share: float = 0.1) -> set[int]:
    """Threads that use more than `share` of a core while no page runs: a training job's."""
    before = thread_cpu(pid)
    time.sleep(window_s)
    after = thread_cpu(pid)
    return {t for t, s in after.items() if s - before.get(t, 0.0) > share * window_s}


def descendants(pid: int) -> list[int]:
    """The process's children, theirs, and so on (a training job's worker, torchrun's ranks)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids = [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            out += [kid, *descendants(kid)]
    return out


def children_cpu(pid: int) -> dict[int, float]:
    out = {}
    for kid in descendants(pid):
        try:
            out[kid] = cpu_seconds(kid)
        except OSError:  # it ended meanwhile
            pass
    return out


class ServerCPU:
    """CPU seconds of the server over a span: its page work (the given background threads left
    out: a thread-runner job's), and the training's (those threads plus the server's child
    processes: the process runner's worker)."""

    def __init__(self, pid: int, background: set[int] = frozenset()):
        self.pid, self.background = pid, set(background)

    def _now(self) -> tuple[float, float, dict[int, float]]:
        threads = thread_cpu(self.pid)
        bg = sum(s for t, s in threads.items() if t in self.background)
        return cpu_seconds(self.pid), bg, children_cpu(self.pid)

    def __enter__(self):
        self.wall0, (self.total0, self.bg0, self.kids0) = time.monotonic(), self._now()
        return self

    def __exit__(self, *exc):
        total, bg, kids = self._now()
        self.wall = time.monotonic() - self.wall0
        self.pages_s = (total - self.total0) - (bg - self.bg0)
        self.background_s = (bg - self.bg0) + sum(s - self.kids0.get(k, 0.0) for k, s in kids.items())


# --- the runs ----------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


@dataclass
class Phase:
    sessions: int
    times: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    train_cpu_s: float = 0.0
    wall_s: float = 0.0
    train_steps: int | None = None
    rss_mb: float = 0.0  # the server's resident memory at the end of the phase

    def add(self, page: str, seconds: float) -> None:
        self.times.setdefault(page, []).append(seconds)


async def measure_cost(url: str, pid: int, repeats: int, background: set[int]) -> dict[str, dict]:
    """Each page, one session, nothing else running: cold time, warm times, CPU per warm run."""
    cost = {}
    async with StreamlitSession(url) as s:
        for name, path in PAGES:
            cold = await s.run_page(name, path)
            if cold.exceptions:
                raise PageError(f"{name}: {cold.exceptions}")
            warm, cpu = [], []
            for _ in range(repeats):
                with ServerCPU(pid, background) as c:
                    run = await s.run_page(name, path)
                warm.append(run.seconds)
                cpu.append(c.pages_s)
            cost[name] = dict(cold=cold.seconds, warm=statistics.median(warm), cpu=statistics.mean(cpu))
    return cost


async def visitor(url: str, rounds: int, phase: Phase, start_gate: asyncio.Event, stagger_s: float, index: int):
    try:
        async with StreamlitSession(url) as s:
            await asyncio.sleep(index * stagger_s)
            run = await s.run_page("Home", "")
            phase.add("Home (arrival)", run.seconds)
            await start_gate.wait()
            for _ in range(rounds):
                for name, path in ROUND:
                    run = await s.run_page(name, path)
                    phase.add(name, run.seconds)
                    if run.exceptions:
                        phase.errors.append(f"{name}: {run.exceptions[0]}")
    except (PageError, OSError, asyncio.TimeoutError) as err:
        phase.errors.append(f"session {index}: {err!r}")


async def run_phase(url: str, pid: int, n: int, rounds: int, stagger_s: float, background: set[int],
                    steps=None) -> Phase:
    phase = Phase(n)
    gate = asyncio.Event()
    arrivals = [asyncio.create_task(visitor(url, rounds, phase, gate, stagger_s, i)) for i in range(n)]
    # everyone arrives on Home first (timed as "Home (arrival)"), then the class clicks through at once
    while sum(len(v) for k, v in phase.times.items() if k == "Home (arrival)") + len(phase.errors) < n:
        await asyncio.sleep(0.1)
    steps0 = steps() if steps else None
    with ServerCPU(pid, background) as c:
        gate.set()
        await asyncio.gather(*arrivals)
    phase.cpu_s, phase.train_cpu_s, phase.wall_s = c.pages_s, c.background_s, c.wall
    phase.rss_mb = rss_mb(pid)
    if steps:
        phase.train_steps = steps() - steps0
    return phase


# --- a training job, the way a visitor starts it --------------------------------------------------
class Trainer:
    """One session on Train: starts a job with the form and watches it (its live fragment)."""

    def __init__(self, url: str):
        self.url, self.session, self.polls, self.task = url, None, 0, None
        self.step = 0  # optimizer steps so far, from the page's progress line

    async def start(self) -> str:
        self.session = await StreamlitSession(self.url).__aenter__()
        page = await self.session.run_page("Train", "Train")
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        form = [WidgetState(id=page.widgets["Batch size"][0], int_value=8)]
        epochs_id = page.widgets["Epochs"][0]
        form.append(WidgetState(id=epochs_id, int_value=20))
        form.append(WidgetState(id=page.widgets["Start training"][0], trigger_value=True))
        started = await self.session.run_page("Train", "Train", form)
        if started.exceptions:
            raise PageError(f"Train: {started.exceptions}")
        self.task = asyncio.create_task(self._watch())
        return started.text()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for fragment_id in list(self.session.auto_reruns):
                try:
                    run = await self.session.run_fragment(fragment_id, "Train")
                    self.polls += 1
                    found = PROGRESS.search(run.text())
                    if found:
                        epoch, step, per_epoch = (int(g.replace(",", "")) for g in found.groups())
                        self.step = (epoch - 1) * per_epoch + step
                except (PageError, asyncio.TimeoutError):
                    pass

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()  # and wait for it: its fragment rerun must not race the Stop below
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        page = await self.session.run_page("Train", "Train")
        stops = [label for label in page.widgets if label == "Stop"]
        if stops:
            await self.session.press(page, "Stop", "Train")
        await self.session.__aexit__(None, None, None)


# --- the report ---------------------------------------------------------------------------------------
def report(cost: dict, phases: list[Phase], train: bool) -> str:
    lines = ["", "Per page, one session, nothing else running (warm = median of the repeats):", "",
             "| page | cold run (s) | warm run (s) | server CPU per warm run (s) |", "| --- | ---: | ---: | ---: |"]
    for page, c in cost.items():
        lines.append(f"| {page} | {c['cold']:.2f} | {c['warm']:.3f} | {c['cpu']:.3f} |")
    title = "with a training job running" if train else "no training job"
    lines += ["", f"Concurrent sessions ({title}): page run time p50 / p95 / max (s)", ""]
    pages = [name for name, _ in ROUND] + ["Home (arrival)"]
    lines.append("| sessions | " + " | ".join(pages) + " | runs | errors | CPU s per run | cores used | RSS (MB) |"
                 + (" training CPU (cores) | training steps/s |" if train else ""))
    lines.append("| ---: | " + " | ".join("---" for _ in pages) + " | ---: | ---: | ---: | ---: | ---: |"
                 + (" ---: | ---: |" if train else ""))
    for ph in phases:
        cells = []
        for page in pages:
            t = ph.times.get(page, [])
            cells.append(f"{pct(t, .5):.2f} / {pct(t, .95):.2f} / {max(t):.2f}" if t else "-")
        runs = sum(len(v) for k, v in ph.times.items() if k != "Home (arrival)")
        row = (f"| {ph.sessions} | " + " | ".join(cells) + f" | {runs} | {len(ph.errors)} | "
               f"{ph.cpu_s / max(runs, 1):.3f} | {ph.cpu_s / ph.wall_s:.2f} | {ph.rss_mb:.0f} |")
        if train:
            row += f" {ph.train_cpu_s / ph.wall_s:.2f} | {(ph.train_steps or 0) / ph.wall_s:.1f} |"
        lines.append(row)
    for ph in phases:
        for err in ph.errors[:3]:
            lines.append(f"- {ph.sessions} sessions: {err}")
    return "\n".join(lines)


async def main_async(args, url: str, pid: int) -> str:
    background: set[int] = set()
    trainer = None
    # the caches (models, data, maps) are filled once, as by the first visitors, before the cost runs
    cost = await measure_cost(url, pid, args.repeats, background)
    if args.train:
        trainer = Trainer(url)
        said = await trainer.start()
        print("training:", " ".join(said.split())[:200], flush=True)
        deadline = time.monotonic() + 180  # a failed download first (offline), then the first steps
        while trainer.step == 0 and time.monotonic() < deadline:
            await asyncio.sleep(1)
        if trainer.step == 0:
            raise SystemExit("the job shows no progress 180 s after Start training")
        background = await asyncio.to_thread(busy_threads, pid)  # the thread runner's
        workers = descendants(pid)  # the process runner's (the app's default)
        if not background and not workers:
            raise SystemExit("no server thread or child process is busy after Start training: did the job start?")
        s0, t0 = trainer.step, time.monotonic()
        await asyncio.sleep(10)
        print(f"training in: server threads {sorted(background)}, child processes {workers}; alone, the Train page "
              f"open: {(trainer.step - s0) / (time.monotonic() - t0):.1f} steps/s", flush=True)
        cost = await measure_cost(url, pid, args.repeats, background)
    phases = []
    try:
        for n in args.sessions:
            t0 = time.monotonic()
            phase = await run_phase(url, pid, n, args.rounds, args.stagger_s, background,
                                    (lambda: trainer.step) if trainer else None)
            phases.append(phase)
            print(f"{n} sessions: {time.monotonic() - t0:.0f} s, {len(phase.errors)} errors", flush=True)
    finally:
        if trainer:
            await trainer.stop()
    return report(cost, phases, args.train)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 10, 40])
    p.add_argument("--rounds", type=int, default=1, help="times each session goes through all pages")
    p.add_argument("--repeats", type=int, default=5, help="warm runs per page for the CPU cost")
    p.add_argument("--stagger-s", type=float, default=0.05, help="between the sessions' arrivals")
    p.add_argument("--train", action="store_true", help="a training job runs meanwhile (started on Train)")
    p.add_argument("--train-threads", type=int, default=1, help="LATENT_EXPLORER_TRAIN_THREADS of the server")
    p.add_argument("--url", help="an already running server (then --pid is its process id)")
    p.add_argument("--pid", type=int)
    args = p.parse_args()
    if args.url and not args.pid:
        p.error("--url needs --pid (the server's process, for its CPU)")
    server = None
    with tempfile.TemporaryDirectory(prefix="load-protocol-") as tmp:
        if args.url:
            url, pid = args.url.rstrip("/"), args.pid
        else:
            port = free_port()
            server = start_server(Path(tmp) / "state", port, Path(tmp) / "server.log", args.train_threads)
            url, pid = f"http://127.0.0.1:{port}", server.pid
        try:
            print(f"server {url} pid {pid}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}", flush=True)
            print(asyncio.run(main_async(args, url, pid)))
            print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
        finally:
            if server is not None:
                server.terminate()
                try:
                    server.wait(20)
                except subprocess.TimeoutExpired:
                    server.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
