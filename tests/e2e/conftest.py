"""Fixtures of the real-browser tests: one `streamlit run app.py` server for the whole session,
on a free port, with its state in a temporary folder and this repository's configuration (the
Space's is `space_environment()`), and one headless Debian Chromium.

Playwright's own browser download needs a network this project's CI does not have, so the
tests drive /usr/bin/chromium (.ci/run installs it) and are skipped, saying why, without it."""
from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("LATENT_EXPLORER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
SERVER_START_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(state_dir: Path, port: int, log: Path, **env) -> subprocess.Popen:
    """`streamlit run app.py` as CI would run it, hosted-mode variables of the caller removed."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LATENT_EXPLORER_") and k != "SPACE_ID"}
    clean.update(LATENT_EXPLORER_STATE=str(state_dir), LATENT_EXPLORER_TRAIN_THREADS="1", **env)
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=clean, stdout=out, stderr=subprocess.STDOUT)


def space_environment() -> dict[str, str]:
    """What the Dockerfile's ENV lines give the Space that decides how the app serves: its
    Streamlit options (STREAMLIT_*) and hosted mode. Paths and the rest stay the test's own."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in shlex.split(line[len("ENV "):]))
    return {k: v for k, v in env.items() if k.startswith("STREAMLIT_") or k == "LATENT_EXPLORER_HOSTED"}


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = SERVER_START_S) -> None:
    import ssl

    unverified = ssl._create_unverified_context() if url.startswith("https") else None  # a self-signed test cert
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2, context=unverified) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"streamlit was not healthy within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    """The app's base URL; shipped checkpoints, fresh state (trained pairs, caches, uploads)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) to run the "
                    "real-browser tests (.ci/run does)")
    yield from serving(tmp_path_factory.mktemp("e2e-server"))


def serving(folder: Path, **env):
    """Start a server with its state in folder, yield its URL once healthy, stop it after."""
    port, log = free_port(), folder / "streamlit.log"
    proc = start_server(folder / "state", port, log, **env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        stop_server(proc)


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) to run the "
                    "real-browser tests (.ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (its own cookies: a new visitor) and page."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    pg = context.new_page()
    yield pg
    context.close()
