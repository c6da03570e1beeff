"""Issue 19.4 on a real server: `kill -9` of `streamlit run app.py` while it trains, then a restart
on the same state folder lists the job as interrupted, and Resume continues from its last epoch.

With the process runner (the default) the job trains in a child of the server: killed with the
server's own SIGKILL it is not, but it notices within a fraction of a second, saves the batches it
trained and reports the job interrupted; the restarted server lists it so."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from conftest import CHROMIUM, free_port, start_server, stop_server, wait_healthy
from test_browser import choose, open_page, wait_until_idle

pytestmark = pytest.mark.browser


def records(state) -> list[dict]:
    return [json.loads(p.read_text()) for p in (state / "trained" / ".jobs").glob("*.json")]


def epochs_on_disk(state) -> int:
    return max((r["epochs_done"] for r in records(state) if r.get("checkpoints")), default=0)


def test_kill_9_of_the_server_while_it_trains_then_resume_after_a_restart(browser, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found")
    state, port = tmp_path / "state", free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(state, port, tmp_path / "first.log")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    page = context.new_page()
    try:
        wait_healthy(url, server, tmp_path / "first.log")
        open_page(page, url, "Train", "Train an AE/VAE pair")
        choose(page, "Data set", "MNIST digits shipped with the app")
        for label, value in (("Epochs", "20"), ("Batch size", "8"), ("Training images (at most)", "1000")):
            field = page.get_by_role("spinbutton", name=label, exact=True)
            field.fill(value)
            field.press("Tab")
        page.get_by_role("button", name="Start training").click()
        deadline = time.monotonic() + 120
        while epochs_on_disk(state) < 2:
            assert time.monotonic() < deadline, "the job never saved 2 epochs"
            time.sleep(0.2)
    finally:
        os.kill(server.pid, signal.SIGKILL)  # no shutdown hook runs: what a crash or an OOM kill does
        server.wait(10)

    server = start_server(state, port, tmp_path / "second.log")
    try:
        wait_healthy(url, server, tmp_path / "second.log")
        open_page(page, url, "Train", "Train an AE/VAE pair")
        deadline = time.monotonic() + 30  # the restarted server marks it once nobody holds the settings
        while [r["state"] for r in records(state)] != ["interrupted"]:
            assert time.monotonic() < deadline, records(state)
            time.sleep(0.2)
        killed_at = epochs_on_disk(state)
        assert killed_at >= 2
        warning = page.get_by_text("Interrupted after").first
        warning.wait_for(timeout=60_000)
        assert f"Interrupted after {killed_at} of 20 epochs" in warning.inner_text()
        page.get_by_role("button", name="Resume").click()
        page.get_by_text(f"Resumed from the saved checkpoint: {killed_at} of 20 epochs done").wait_for(timeout=60_000)
        progress = page.locator('[data-testid="stProgress"]').filter(has_text="Epoch")
        progress.first.wait_for(timeout=60_000)
        assert int(progress.first.inner_text().split("Epoch ")[1].split("/")[0]) > killed_at
        page.get_by_test_id("stButton").get_by_role("button", name="Stop").click()
        wait_until_idle(page)
    finally:
        context.close()
        stop_server(server)
