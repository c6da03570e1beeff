"""The app in a real browser (headless Chromium): every page renders without an exception, a click
on the grid decoder's map decodes that location, an upload is checked and offered for training,
and a training job started from the Train page shows its progress and stops when asked."""
from __future__ import annotations

import re
import time

import numpy as np
import pytest

pytestmark = pytest.mark.browser

PAGES = [("", "Latent Explorer"), ("Lesson", "Lesson"), ("Train", "Train an AE/VAE pair"),
         ("Latent_map", "Latent map"), ("Grid_decoder", "Grid decoder"), ("Reconstructions", "Reconstructions"),
         ("Draw", "Draw a digit"), ("Beta_dial", "β dial")]
RUNNING = '[data-testid="stStatusWidget"]'  # shown while a script run (or a fragment rerun) is in progress
EXCEPTION = '[data-testid="stException"]'
ERROR = '[data-testid="stAlertContentError"]'


def wait_until_idle(page, quiet_s: float = 0.75, timeout_s: float = 120.0) -> float:
    """Until no script run has been in progress for quiet_s; the seconds it took."""
    t0 = last_busy = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if page.locator(RUNNING).count():
            last_busy = time.monotonic()
        elif time.monotonic() - last_busy >= quiet_s:
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"the page was still running after {timeout_s:.0f} s")


def open_page(page, app_url: str, path: str, title: str) -> None:
    page.goto(f"{app_url}/{path}")
    page.locator("h1", has_text=title).wait_for(timeout=120_000)
    wait_until_idle(page)


def assert_no_failure(page) -> None:
    exceptions = page.locator(EXCEPTION).all_inner_texts()
    assert not exceptions, exceptions[0][:2000]
    errors = page.locator(ERROR).all_inner_texts()
    assert not errors, errors


@pytest.mark.parametrize("path,title", PAGES, ids=[p or "home" for p, _ in PAGES])
def test_every_page_renders_its_heading_without_an_exception(page, app_url, path, title):
    open_page(page, app_url, path, title)
    assert_no_failure(page)
    picker = page.locator('[data-testid="stSidebar"]').get_by_text("Model pair (AE and VAE)")
    picker.first.wait_for(timeout=10_000)  # the sidebar can land a moment after the page looks idle
    assert picker.count() == 1


def test_a_click_on_the_grid_decoders_map_decodes_that_location(page, app_url):
    open_page(page, app_url, "Grid_decoder", "Grid decoder")
    # streamlit-image-coordinates draws each map as an <img> inside its own component iframe
    image = page.frame_locator('iframe[title*="streamlit_image_coordinates"]').first.locator("img")
    box = image.bounding_box()
    assert box and box["width"] > 100, box
    captions = page.locator('[data-testid="stImageCaption"]')
    assert captions.filter(has_text="clicked").count() == 0
    image.click(position={"x": box["width"] * 0.55, "y": box["height"] * 0.45})  # inside the plot box
    captions.filter(has_text="decoded").filter(has_text="clicked").first.wait_for(timeout=60_000)
    wait_until_idle(page)
    assert_no_failure(page)
    assert page.get_by_text("You clicked the").count() == 1
    assert page.get_by_role("heading", name="The clicked location, decoded").count() == 1


def choose(page, label: str, option: str) -> None:
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).click()
    page.get_by_role("option", name=option).click()
    wait_until_idle(page)


def test_an_uploaded_npz_is_checked_and_offered_for_training(page, app_url, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "my digits.npz"
    np.savez(path, x_train=rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), y_train=rng.integers(0, 4, 64),
             x_test=rng.integers(0, 256, (16, 28, 28), dtype=np.uint8), y_test=rng.integers(0, 4, 16))
    open_page(page, app_url, "Train", "Train an AE/VAE pair")
    choose(page, "Data set", "Upload (.npz or .zip)")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
    page.get_by_text("64 training and 16 test images of 28×28 grey-scale, 4 classes").wait_for(timeout=60_000)
    wait_until_idle(page)
    assert_no_failure(page)
    assert page.get_by_role("button", name="Start training").is_enabled()

    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        files=[{"name": "broken.zip", "mimeType": "application/zip", "buffer": b"PK\x03\x04 not really a zip"}])
    page.locator(ERROR).filter(has_text="broken.zip: not a readable").wait_for(timeout=60_000)
    wait_until_idle(page)
    assert page.locator(EXCEPTION).count() == 0
    assert page.get_by_role("button", name="Start training").is_disabled()


def test_a_tiny_training_job_shows_progress_and_stops_when_asked(page, app_url, browser):
    open_page(page, app_url, "Train", "Train an AE/VAE pair")
    choose(page, "Data set", "MNIST digits shipped with the app")
    # 4,000 images (all the shipped training digits) in batches of 8: 500 steps an epoch, 2 to 6 s here.
    # 20 epochs, so the job still runs when a second tab has loaded and presses Stop (it is stopped in seconds)
    for label, value in (("Epochs", "20"), ("Batch size", "8"), ("Training images (at most)", "4000")):
        field = page.get_by_role("spinbutton", name=label, exact=True)
        field.fill(value)
        field.press("Tab")
        assert field.input_value() == value
    latent = page.get_by_role("spinbutton", name="Latent size", exact=True)
    default_latent = latent.input_value()
    latent.click()
    latent.press("Control+a")
    latent.press_sequentially("9999")  # past the form's bound (512): the field says so and the form waits
    latent.press("Tab")
    page.get_by_role("alert").filter(has_text="Please enter a value between 1 and 512").wait_for(timeout=10_000)
    page.get_by_role("button", name="Start training").click()
    wait_until_idle(page)
    page.wait_for_timeout(2_000)  # long enough for a job to be listed, had one started
    assert page.get_by_text("latent 9999").count() == 0  # no job with the refused value
    latent.fill(default_latent)
    latent.press("Tab")
    page.get_by_role("button", name="Start training").click()

    progress = page.locator('[data-testid="stProgress"]').filter(has_text="Epoch")
    progress.first.wait_for(timeout=120_000)  # the first run parses the shipped digits (seconds)
    text = progress.first.inner_text()
    assert re.match(r"Epoch \d+/20 · step [\d,]+/500 · [\d,]+ images/s", text), text
    summary = page.locator('[data-testid="stMarkdownContainer"]').filter(has_text="epochs · batch").first.inner_text()
    assert f"latent {default_latent} ·" in summary and "20 epochs · batch 8" in summary, summary

    # Stop from another tab: it shows the same job (a job belongs to the server, not to a tab).
    other = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        tab = other.new_page()
        tab.set_default_timeout(60_000)
        tab.goto(f"{app_url}/Train")
        stop = tab.get_by_test_id("stButton").get_by_role("button", name="Stop")  # the job's, not the status widget's
        stop.wait_for(timeout=60_000)
        stop.click()
        outcome = tab.get_by_text(re.compile(r"^(Stopped after \d+ of 20 epochs|Stopped before training began|Done in)"))
        outcome.first.wait_for(timeout=60_000)
        ended = outcome.first.inner_text()
        assert ended.startswith("Stopped"), f"the job ended before Stop took effect: {ended}"
        wait_until_idle(tab)
        assert tab.locator(EXCEPTION).count() == 0
        assert tab.get_by_test_id("stButton").get_by_role("button", name="Stop").count() == 0
    finally:
        other.close()
    page.get_by_text(re.compile(r"^Stopped (after|before)")).first.wait_for(timeout=30_000)  # the first tab follows


def test_a_digit_drawn_on_the_canvas_is_encoded_by_both_models(page, app_url):
    open_page(page, app_url, "Draw", "Draw a digit")
    # streamlit-drawable-canvas draws into a <canvas> inside its own component iframe
    canvas = page.frame_locator('iframe[title*="st_canvas"]').first.locator("canvas").last
    box = canvas.bounding_box()
    assert box and box["width"] >= 250, box
    assert page.get_by_text("Nothing drawn yet.").count() == 1
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.15)
    page.mouse.down()
    for step in range(1, 21):  # a vertical stroke: a "1"
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * (0.15 + 0.035 * step))
    page.mouse.up()
    captions = page.locator('[data-testid="stImageCaption"]')
    captions.filter(has_text="What the models see").first.wait_for(timeout=60_000)
    wait_until_idle(page)
    assert_no_failure(page)
    assert captions.filter(has_text="reconstruction").count() == 2
    assert page.get_by_text("The star is exactly where the code lands on this map").count() == 1
