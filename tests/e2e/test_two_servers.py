"""Issue 14 on real servers: two `streamlit run app.py` processes on one state folder run one job
per configuration. A job started on server A's Train page is listed, live, on server B's; the same
settings submitted on B attach to A's job instead of training them a second time; Stop on B stops
it, and its checkpoint is on disk.

The registry's truth is the state folder (vae/job_records.py): one record and one lock per
configuration under <state>/trained/.jobs/, one run folder per run under .jobs/runs/. A second run
of the settings would show there as a record naming another job id or process, or a second run
folder, and on B's page as no "already running" notice."""
from __future__ import annotations

import re
import time

import pytest

from conftest import CHROMIUM, free_port, start_server, stop_server, wait_healthy
from test_browser import choose, open_page, wait_until_idle
from test_server_restart import records
from vae.checkpoint import load_checkpoint

pytestmark = pytest.mark.browser

EPOCHS = 200  # the local limit: the job never ends by itself while the test looks at it
SMALL_JOB = (("Epochs", str(EPOCHS)), ("Batch size", "8"), ("Training images (at most)", "1000"))


def submit_small_job(page) -> None:
    choose(page, "Data set", "MNIST digits shipped with the app")
    for label, value in SMALL_JOB:
        field = page.get_by_role("spinbutton", name=label, exact=True)
        field.fill(value)
        field.press("Tab")
    page.get_by_role("button", name="Start training").click()


def run_folders(state) -> list[str]:
    runs = state / "trained" / ".jobs" / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []


def progress_of(page) -> tuple[int, int]:
    """(epoch, step in the epoch) of the progress bar the Train page shows (while it trains; not
    while it scores the test split, when the bar says so instead)."""
    bar = page.locator('[data-testid="stProgress"]').filter(has_text="Epoch").first

    def read():
        found = re.search(r"Epoch (\d+)/\d+ · step ([\d,]+)/", bar.inner_text()) if bar.count() else None
        return found and (int(found[1]), int(found[2].replace(",", "")))
    return wait_for(read, 60, "no training progress on the page")


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
    return value


def test_two_servers_on_one_state_folder_share_one_job_per_configuration(browser, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found")
    state = tmp_path / "state"
    port_a = free_port()
    port_b = next(p for p in iter(free_port, None) if p != port_a)
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    server_a, server_b = start_server(state, port_a, log_a), start_server(state, port_b, log_b)
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(2)]
    for context in contexts:
        context.set_default_timeout(60_000)
    page_a, page_b = (c.new_page() for c in contexts)
    try:
        wait_healthy(url_a, server_a, log_a)
        wait_healthy(url_b, server_b, log_b)

        open_page(page_a, url_a, "Train", "Train an AE/VAE pair")
        submit_small_job(page_a)
        [record] = wait_for(lambda: [r for r in records(state) if r["state"] == "running"], 60, "no running job on disk")
        job_id = record["id"]
        assert record["pid"] == server_a.pid  # A's registry runs it
        progress_of(page_a)  # A's page shows its job training

        # B lists A's job with its progress, read live from the run's event log
        open_page(page_b, url_b, "Train", "Train an AE/VAE pair")
        first = progress_of(page_b)
        wait_for(lambda: progress_of(page_b) > first, 60, f"B's progress bar stayed at {first}")

        # the same settings on B: no second run, B's page follows A's job and says so
        submit_small_job(page_b)
        page_b.get_by_text("These settings are already running on this server").wait_for()
        [record] = records(state)
        assert (record["id"], record["pid"], record["state"]) == (job_id, server_a.pid, "running")
        assert run_folders(state) == [job_id]
        assert progress_of(page_b) > first  # and it is A's run that it shows, going on

        # Stop on B reaches the job A's server runs: it ends stopped, its checkpoint saved
        page_b.get_by_test_id("stButton").get_by_role("button", name="Stop").click()
        stopped = page_b.get_by_text("Stopped after").first
        stopped.wait_for(timeout=60_000)
        [record] = wait_for(lambda: [r for r in records(state) if r["state"] == "stopped"], 30,
                            "the job never ended stopped on disk")
        assert record["id"] == job_id and run_folders(state) == [job_id]
        assert f"Stopped after {record['epochs_done']} of {EPOCHS} epochs" in stopped.inner_text()
        assert record["checkpoints"].keys() == {"ae", "vae"}
        for path in record["checkpoints"].values():
            assert load_checkpoint(path).extra["stopped"] is True
        # A's own page, polling its local job, sees the same end
        page_a.get_by_text(f"Stopped after {record['epochs_done']} of {EPOCHS} epochs").first.wait_for(timeout=60_000)
        wait_until_idle(page_b)
    finally:
        for context in contexts:
            context.close()
        stop_server(server_a)
        stop_server(server_b)
