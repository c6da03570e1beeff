"""Issue 19, at the protocol level: a modified client against a real hosted `streamlit run app.py`.

No browser: the client speaks Streamlit's own websocket protocol (bench/streamlit_client.py, the
load bench's client) and sends widget values the page never offered: a server path as the data
set, a batch and a latent size past the hosted caps, and another visitor's Stop button and job id.
What must hold: the forged Start is refused with a message and starts nothing, none of it reaches
a training job, no server path is echoed, and the other visitor's job trains on.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, serving

sys.path.insert(0, str(ROOT / "bench"))
from streamlit_client import StreamlitSession  # noqa: E402  (the bench's client, not a package)
from streamlit.proto.WidgetStates_pb2 import WidgetState  # noqa: E402
from vae.data import BUILTIN_NAMES  # noqa: E402
from vae.worker import STOP_FILE  # noqa: E402

HOSTED_CAPS = {"batch_size": 1024, "latent_dim": 256, "epochs": 20}  # ui/settings.py, hosted


def records(state: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (state / "trained" / ".jobs").glob("*.json")]


def widget(page, label: str) -> str:
    assert label in page.widgets, (label, sorted(page.widgets))
    return page.widgets[label][0]


async def until(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)
    return value


async def forge(url: str, state: Path, secret: Path) -> None:
    async with StreamlitSession(url) as visitor, StreamlitSession(url) as intruder:
        # a visitor starts a small job of their own
        page = await visitor.run_page("Train", "Train")
        started = await visitor.run_page("Train", "Train", [
            WidgetState(id=widget(page, "Epochs"), int_value=20),
            WidgetState(id=widget(page, "Batch size"), int_value=16),
            WidgetState(id=widget(page, "Start training"), trigger_value=True)])
        assert not started.exceptions, started.exceptions
        [theirs] = await until(lambda: records(state), 60, "the visitor's job was not recorded")
        page = await until_stop_button(visitor)
        their_stop = widget(page, "Stop")
        theirs = next(r for r in records(state) if r["id"] == theirs["id"])  # named by now

        # the intruder: a server path as the data set, numbers past the caps, and Start
        mine = await intruder.run_page("Train", "Train")
        forged = await intruder.run_page("Train", "Train", [
            WidgetState(id=widget(mine, "Data set"), string_value=str(secret)),
            WidgetState(id=widget(mine, "Batch size"), int_value=65_536),
            WidgetState(id=widget(mine, "Latent size"), int_value=4_096),
            WidgetState(id=widget(mine, "Epochs"), int_value=10_000),
            WidgetState(id=widget(mine, "Start training"), trigger_value=True)])
        assert not forged.exceptions, forged.exceptions
        assert "does not offer (Data set)" in forged.text(), forged.text()  # refused, with a message
        assert str(secret.parent) not in forged.text() and secret.name not in forged.text()
        assert [r["id"] for r in records(state)] == [theirs["id"]]  # and nothing started
        # the numbers alone, with the data set as offered: Streamlit resets each to its input's
        # default, so the job that starts is within every cap (checked at the end)
        numbers = await intruder.run_page("Train", "Train", [
            WidgetState(id=widget(forged, "Batch size"), int_value=65_536),
            WidgetState(id=widget(forged, "Latent size"), int_value=4_096),
            WidgetState(id=widget(forged, "Epochs"), int_value=10_000),
            WidgetState(id=widget(forged, "Start training"), trigger_value=True)])
        assert not numbers.exceptions and "does not offer" not in numbers.text(), numbers.text()
        await until(lambda: len(records(state)) == 2, 30, "the intruder's job (numbers reset) was not recorded")
        # ...then the visitor's Stop button and job id, which the intruder's page never offered
        watched = await intruder.run_page("Train", "Train", [
            WidgetState(id=their_stop, trigger_value=True),
            WidgetState(id=widget(forged, "Show job"), string_value=theirs["id"])]
            if "Show job" in forged.widgets else [WidgetState(id=their_stop, trigger_value=True)])
        assert not watched.exceptions, watched.exceptions
        assert theirs["id"] not in watched.text(), watched.text()
        assert not theirs["name"] or theirs["name"] not in watched.text(), watched.text()
        assert watched.widgets.get("Stop", ("",))[0] != their_stop  # its own job's Stop, if any, is another
        await asyncio.sleep(3)  # a stop would have reached the job by now (its watcher polls twice a second)

    by_id = {r["id"]: r for r in records(state)}
    assert by_id[theirs["id"]]["state"] in ("queued", "running", "done"), by_id[theirs["id"]]
    assert not (state / "trained" / ".jobs" / "runs" / theirs["id"] / STOP_FILE).exists()
    assert len(by_id) == 2
    for r in by_id.values():  # whatever the intruder started runs on offered values only
        spec = r["spec"]
        assert spec["dataset"] in BUILTIN_NAMES, spec
        assert spec["batch_size"] <= HOSTED_CAPS["batch_size"] and spec["epochs"] <= HOSTED_CAPS["epochs"], spec
        assert (spec["latent_dim"] or 0) <= HOSTED_CAPS["latent_dim"], spec


async def until_stop_button(session: StreamlitSession):
    """The visitor's Train page once their job shows its Stop button (queued or running)."""
    deadline = time.monotonic() + 60
    while True:
        page = await session.run_page("Train", "Train")
        if "Stop" in page.widgets:
            return page
        assert time.monotonic() < deadline, sorted(page.widgets)
        await asyncio.sleep(0.5)


def test_a_modified_client_reaches_no_job_with_values_the_page_never_offered(tmp_path):
    secret = tmp_path / "server-only" / "private.npz"  # a valid data set: it would train if let through
    secret.parent.mkdir()
    rng = np.random.default_rng(0)
    np.savez(secret, x_train=rng.integers(0, 255, (64, 28, 28), np.uint8), y_train=np.arange(64) % 2,
             x_test=rng.integers(0, 255, (16, 28, 28), np.uint8), y_test=np.arange(16) % 2)
    server = serving(tmp_path, LATENT_EXPLORER_HOSTED="1")
    url = next(server)
    try:
        # a fresh thread, so its own event loop: earlier tests in the same process (AppTest) may
        # leave one running in this thread, where asyncio.run refuses to start
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, forge(url, tmp_path / "state", secret)).result()
    finally:
        next(server, None)
