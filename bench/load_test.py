"""Many visitors at once: one server, 20 browser sessions, a training job running.

    .venv/bin/python bench/load_test.py                          # 20 sessions, train threads 1
    .venv/bin/python bench/load_test.py --train-threads 1 2      # the same run for each thread count
    .venv/bin/python bench/load_test.py --url http://host:8501 --pid 1234   # an already running server

For each train-thread count it starts `streamlit run app.py` (hosted mode, fresh state folder,
the shipped checkpoints) and drives headless Chromium (Debian's, /usr/bin/chromium, run at
nice 15 so the browsers take CPU from the server as little as a class's own laptops would):

1. one session opens home, Latent map, Grid decoder and Reconstructions (cold caches), then
   again (warm); the server's peak RSS after it;
2. --sessions - 1 more sessions arrive (a browser context each: their own websocket and session
   state; each loads the app on home), then all of them go through Latent map, Grid decoder,
   Reconstructions and back home by the sidebar, as a student would, at once (--stagger-s
   apart), --rounds times; peak RSS after it: what more visitors cost when models, data and
   projections are shared;
3. one more session starts a training job on the Train page (the shipped MNIST digits, batch 8,
   the whole job far longer than the test) and keeps that page open; training speed alone;
4. the sessions of 2 browse again while the job trains: page latencies, training speed, RSS.

A page's render latency: from the click (or navigation) until the server has finished the
page's script run (Streamlit's running indicator gone; the 0.5 s of quiet that confirms it is
not counted). Training speed: optimizer steps per second, read from the Train page's progress
text once a second. Peak RSS: VmHWM of the server process (/proc/<pid>/status), which counts
the training thread too. CPU: user + system seconds of the server process and of this script's
browsers (/proc/<pid>/stat) over each phase, and the server's CPU seconds per page view, the
figure that does not depend on how loaded the machine is. The script stops the job and the server at the end; every loop is
bounded in count and time, and only 127.0.0.1 is contacted.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
PAGES = [("home", "", "Latent Explorer"), ("Latent map", "Latent_map", "Latent map"),
         ("Grid decoder", "Grid_decoder", "Grid decoder"), ("Reconstructions", "Reconstructions", "Reconstructions")]
ROUND = PAGES[1:] + PAGES[:1]  # from home: through the sidebar, back home
RUNNING = '[data-testid="stStatusWidget"]'
PROGRESS = re.compile(r"Epoch (\d+)/(\d+) · step ([\d,]+)/([\d,]+)")
QUIET_S = 0.5
PAGE_TIMEOUT_S = 300


# --- the server -------------------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(state: Path, port: int, train_threads: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENT_EXPLORER_") and k != "SPACE_ID"}
    env.update(LATENT_EXPLORER_STATE=str(state), LATENT_EXPLORER_HOSTED="1", LATENT_EXPLORER_MAX_EPOCHS="200",
               LATENT_EXPLORER_TRAIN_THREADS=str(train_threads))
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.25)
    proc.kill()
    raise SystemExit("the server was not healthy within 120 s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, seconds (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> list[int]:
    """Every process under root (the browsers Playwright started under this script)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class CpuMeter:
    """CPU seconds used by the server and by this script's browsers between start() and stop()."""

    def __init__(self, server_pid: int | None):
        self.server_pid = server_pid
        self.browsers: dict[int, float] = {}  # pid -> CPU seconds last seen (processes come and go)
        self.server0 = self.browser_total = 0.0

    def _browsers_now(self) -> float:
        for pid in descendants(os.getpid()):
            try:
                self.browsers[pid] = cpu_seconds(pid)
            except (OSError, IndexError, ValueError):
                pass
        return sum(self.browsers.values())

    def start(self) -> None:
        self.server0 = cpu_seconds(self.server_pid) if self.server_pid else 0.0
        self.browser0 = self._browsers_now()
        self.t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        server = (cpu_seconds(self.server_pid) - self.server0) if self.server_pid else float("nan")
        return {"wall": wall, "server": server, "browsers": self._browsers_now() - self.browser0}


def memory(pid: int | None) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, MB."""
    if pid is None:
        return {}
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


# --- the browsers -------------------------------------------------------------------------------------
def niced_chromium(folder: Path) -> Path:
    wrapper = folder / "chromium-nice"
    wrapper.write_text(f'#!/bin/sh\nexec nice -n 15 {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


async def wait_idle(page, t0: float) -> float:
    """Seconds from t0 until the last moment a script run was seen in progress (or now, if none)."""
    last_busy = time.monotonic()
    seen = False
    while time.monotonic() - t0 < PAGE_TIMEOUT_S:
        if await page.locator(RUNNING).count():
            last_busy, seen = time.monotonic(), True
        elif time.monotonic() - last_busy >= QUIET_S:
            return (last_busy if seen else time.monotonic() - QUIET_S) - t0
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{page.url} still running after {PAGE_TIMEOUT_S} s")


@dataclass
class Latencies:
    by_page: dict = field(default_factory=dict)  # page name -> [seconds]
    errors: list = field(default_factory=list)

    def add(self, name: str, seconds: float) -> None:
        self.by_page.setdefault(name, []).append(seconds)

    def table(self, title: str) -> str:
        rows = [f"  {title}", f"  {'page':<16} {'n':>4} {'p50 s':>7} {'p95 s':>7} {'max s':>7}"]
        for name, _, _ in PAGES:
            xs = sorted(self.by_page.get(name, []))
            if xs:
                p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
                rows.append(f"  {name:<16} {len(xs):>4} {statistics.median(xs):>7.2f} {p95:>7.2f} {xs[-1]:>7.2f}")
        if self.errors:
            rows.append(f"  errors: {len(self.errors)}; first: {self.errors[0][:300]}")
        return "\n".join(rows)


async def visit(page, base: str, name: str, path: str, title: str, first: bool) -> float:
    t0 = time.monotonic()
    if first:
        await page.goto(f"{base}/{path}")
    else:  # the sidebar link: the same session, as a student moves between pages
        nav = page.locator('[data-testid="stSidebarNav"] a')
        link = nav.first if not path else page.locator(f'[data-testid="stSidebarNav"] a[href$="/{path}"]')
        await link.click()
    await page.locator("h1", has_text=title).wait_for(timeout=PAGE_TIMEOUT_S * 1000)
    seconds = await wait_idle(page, t0)
    if await page.locator('[data-testid="stException"]').count():
        raise RuntimeError(f"{name}: " + (await page.locator('[data-testid="stException"]').first.inner_text())[:300])
    return seconds


async def browse(browser_context, base: str, rounds: int, lat: Latencies, deadline: float,
                 pages=PAGES) -> None:
    page = browser_context.pages[0] if browser_context.pages else await browser_context.new_page()
    first = page.url in ("", "about:blank")
    for _ in range(rounds):
        for name, path, title in pages:
            if time.monotonic() > deadline:
                return
            try:
                lat.add(name, await visit(page, base, name, path, title, first))
            except Exception as err:  # noqa: BLE001  (reported, the run goes on)
                lat.errors.append(f"{name}: {type(err).__name__}: {str(err).splitlines()[0]}")
                try:  # start this session afresh on the next page
                    await page.goto("about:blank")
                except Exception:  # noqa: BLE001
                    return
                first = True
                continue
            first = False


# --- the training job ------------------------------------------------------------------------------
@dataclass
class TrainingWatch:
    samples: list = field(default_factory=list)  # (monotonic time, global step)
    done: bool = False

    def rate(self, t0: float, t1: float) -> float | None:
        xs = [(t, s) for t, s in self.samples if t0 <= t <= t1]
        if len(xs) < 2 or xs[-1][0] - xs[0][0] < 2:
            return None
        return (xs[-1][1] - xs[0][1]) / (xs[-1][0] - xs[0][0])


async def start_job(page, base: str) -> None:
    await page.goto(f"{base}/Train")
    await page.locator("h1", has_text="Train an AE/VAE pair").wait_for(timeout=PAGE_TIMEOUT_S * 1000)
    await wait_idle(page, time.monotonic())
    await page.locator('[data-testid="stSelectbox"]').filter(has_text="Data set").click()
    await page.get_by_role("option", name="MNIST digits shipped with the app").click()
    await wait_idle(page, time.monotonic())
    for label, value in (("Epochs", "200"), ("Batch size", "8"), ("Training images (at most)", "4000")):
        await page.get_by_label(label).fill(value)
        await page.get_by_label(label).press("Tab")
    await page.get_by_role("button", name="Start training").click()
    await page.locator('[data-testid="stProgress"]').filter(has_text="Epoch").first.wait_for(timeout=300_000)


async def watch_job(page, watch: TrainingWatch, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            text = await page.locator('[data-testid="stProgress"]').first.inner_text(timeout=2000)
        except Exception:  # noqa: BLE001  (between reruns the bar can be missing for a moment)
            text = ""
        m = PROGRESS.search(text)
        if m:
            epoch, _, step, per_epoch = (int(g.replace(",", "")) for g in m.groups())
            watch.samples.append((time.monotonic(), (epoch - 1) * per_epoch + step))
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except TimeoutError:
            pass


async def stop_job(page) -> None:
    stop = page.get_by_test_id("stButton").get_by_role("button", name="Stop")
    if await stop.count():
        await stop.click()


# --- one run ----------------------------------------------------------------------------------------
async def run(base: str, pid: int | None, sessions: int, rounds: int, train_s: float, budget_s: float,
              browser_path: Path, stagger_s: float) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(browser_path), args=CHROMIUM_ARGS)

        async def new_context():
            c = await browser.new_context(viewport={"width": 1280, "height": 900})
            c.set_default_timeout(PAGE_TIMEOUT_S * 1000)
            c.set_default_navigation_timeout(PAGE_TIMEOUT_S * 1000)
            return c

        async def browse_all(lat: Latencies, t0: float, pages=ROUND, n_rounds=None) -> None:
            async def one(i: int, c) -> None:
                await asyncio.sleep(i * stagger_s)  # a class does not click within the same millisecond
                await browse(c, base, n_rounds or rounds, lat, t0 + budget_s, pages)
            await asyncio.gather(*(one(i, c) for i, c in enumerate(contexts)))

        print(f"  server at start: {fmt_mem(memory(pid))}")

        one = Latencies()
        ctx = await new_context()
        await browse(ctx, base, 1, one, time.monotonic() + budget_s)
        print(one.table("1 session, cold (first visit of each page on a fresh server)"))
        warm, meter = Latencies(), CpuMeter(pid)
        meter.start()
        await browse(ctx, base, 1, warm, time.monotonic() + budget_s)
        print(warm.table("1 session, warm"))
        print(fmt_cpu(meter.stop(), warm))
        mem_one = memory(pid)
        print(f"  server after 1 session: {fmt_mem(mem_one)}")

        contexts = [await new_context() for _ in range(sessions - 1)]
        arrival = Latencies()
        t0 = time.monotonic()
        await browse_all(arrival, t0, pages=PAGES[:1], n_rounds=1)
        print(arrival.table(f"{sessions - 1} more sessions arrive (a new browser tab each: loads the app, "
                            f"opens home) ({time.monotonic() - t0:.0f} s)"))
        contexts.insert(0, ctx)
        many = Latencies()
        t0 = time.monotonic()
        meter.start()
        await browse_all(many, t0)
        print(many.table(f"{sessions} sessions at once, {rounds} round(s) each through the sidebar, no training "
                         f"({time.monotonic() - t0:.0f} s)"))
        print(fmt_cpu(meter.stop(), many))
        mem_many = memory(pid)
        print(f"  server after {sessions} sessions: {fmt_mem(mem_many)}")
        if mem_one and mem_many:
            grow = mem_many["VmHWM"] - mem_one["VmHWM"]
            print(f"  peak RSS growth for {sessions - 1} more sessions: {grow:+.0f} MB "
                  f"({grow / max(1, sessions - 1):+.1f} MB per session)")

        trainer_ctx = await new_context()
        trainer = await trainer_ctx.new_page()
        await start_job(trainer, base)
        watch, stop = TrainingWatch(), asyncio.Event()
        watcher = asyncio.create_task(watch_job(trainer, watch, stop))
        t_alone = time.monotonic()
        meter.start()
        await asyncio.sleep(train_s)
        alone = watch.rate(t_alone, time.monotonic())
        solo = meter.stop()
        print(f"  training alone, the Train page open: server CPU {solo['server'] / solo['wall']:.0%} of one core")

        loaded = Latencies()
        t_load = time.monotonic()
        meter.start()
        await browse_all(loaded, t_load)
        t_end = time.monotonic()
        under_load = watch.rate(t_load, t_end)
        print(loaded.table(f"{sessions} sessions at once, {rounds} round(s) each through the sidebar, while a job trains "
                           f"({t_end - t_load:.0f} s)"))
        print(fmt_cpu(meter.stop(), loaded) + " (server CPU includes the training thread)")
        stop.set()
        await watcher
        print(f"  training alone: {fmt_rate(alone)}; during the {sessions} sessions: {fmt_rate(under_load)}"
              + (f" ({under_load / alone:.0%} of alone)" if alone and under_load else ""))
        print(f"  server at the end (training + {sessions} sessions): {fmt_mem(memory(pid))}")
        await stop_job(trainer)
        for c in [*contexts, trainer_ctx]:
            await c.close()
        await browser.close()


def fmt_cpu(c: dict, lat: Latencies) -> str:
    views = sum(len(v) for v in lat.by_page.values())
    return (f"  CPU over {c['wall']:.0f} s: server {c['server']:.1f} s ({c['server'] / c['wall']:.0%} of one core, "
            f"{c['server'] / max(1, views):.2f} s per page view), this script's browsers {c['browsers']:.1f} s; "
            f"load average {os.getloadavg()[0]:.1f}")


def fmt_mem(m: dict) -> str:
    return f"RSS {m['VmRSS']:.0f} MB, peak {m['VmHWM']:.0f} MB" if m else "(no pid: memory not read)"


def fmt_rate(r: float | None) -> str:
    return f"{r:.1f} steps/s" if r is not None else "n/a (too few progress samples)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=1, help="times each session visits the 4 pages per phase")
    ap.add_argument("--train-threads", type=int, nargs="+", default=[1],
                    help="LATENT_EXPLORER_TRAIN_THREADS of the server; one run (a fresh server) per value")
    ap.add_argument("--train-alone-s", type=float, default=20.0, help="seconds to time training with no load")
    ap.add_argument("--stagger-s", type=float, default=0.25, help="session i starts its browsing i times this late")
    ap.add_argument("--budget-s", type=float, default=600.0, help="at most this long per browsing phase")
    ap.add_argument("--url", help="an already running server (no server is started; --pid to read its memory)")
    ap.add_argument("--pid", type=int, help="the server's process id, with --url")
    args = ap.parse_args()
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} not found: apt-get install chromium")
        return 1
    work = Path(tempfile.mkdtemp(prefix="load-test-"))
    browser_path = niced_chromium(work)
    print(f"load test: {args.sessions} sessions, {args.rounds} round(s), pages: {', '.join(n for n, _, _ in PAGES)}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    if args.url:
        asyncio.run(run(args.url.rstrip("/"), args.pid, args.sessions, args.rounds, args.train_alone_s,
                        args.budget_s, browser_path, args.stagger_s))
        return 0
    for threads in args.train_threads:
        port = free_port()
        log = work / f"server-{threads}.log"
        proc = start_server(work / f"state-{threads}", port, threads, log)
        print(f"\n== server with LATENT_EXPLORER_TRAIN_THREADS={threads} (pid {proc.pid}, log {log})")
        try:
            asyncio.run(run(f"http://127.0.0.1:{port}", proc.pid, args.sessions, args.rounds, args.train_alone_s,
                            args.budget_s, browser_path, args.stagger_s))
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        print(f"  load average now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
