"""An upload from inside another site's frame, as on a Hugging Face Space (huggingface.co/spaces/…
frames the app's own *.hf.space address): it works in the Space's configuration (the Dockerfile's
environment: hosted mode, XSRF protection off) and XSRF refuses it in the local one
(.streamlit/config.toml: XSRF protection on).

The embedding page is served on `localhost`, the app on `127.0.0.1`: two sites, so the app's XSRF
cookie is a third-party cookie inside the frame, which the browser does not keep or send (it is
SameSite=Lax, and Chromium blocks third-party cookies). Without it the upload's PUT carries no
valid XSRF token. At top level the same local server takes uploads (test_browser.py)."""
from __future__ import annotations

import http.server
import threading
import urllib.parse

import numpy as np
import pytest
from playwright.sync_api import expect

from conftest import free_port, serving, space_environment

pytestmark = pytest.mark.browser

UPLOAD_PUT = "/_stcore/upload_file/"
CHECKED = "32 training and 8 test images of 28×28 grey-scale, 2 classes"


@pytest.fixture(scope="module")
def space_url(app_url, tmp_path_factory):
    """A second server with the Space's configuration (app_url, the local one, skips without Chromium)."""
    yield from serving(tmp_path_factory.mktemp("space-server"), **space_environment())


@pytest.fixture(scope="module")
def embedding_site():
    """http://localhost:PORT/?app=URL: another site's page that frames URL's Train page."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            app = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).get("app")
            if not app:  # the browser's /favicon.ico
                self.send_error(404)
                return
            html = (f'<!doctype html><title>another site</title><h1>Another site</h1><iframe src="{app[0]}/Train" '
                    'width="1300" height="2000" style="border:0"></iframe>').encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *args):
            pass

    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://localhost:{port}"
    httpd.shutdown()


@pytest.fixture
def tiny_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 256, (32, 28, 28), dtype=np.uint8), y_train=np.arange(32) % 2,
             x_test=rng.integers(0, 256, (8, 28, 28), dtype=np.uint8), y_test=np.arange(8) % 2)
    return path


def upload_through_the_frame(page, site: str, app: str, npz) -> tuple:
    """Open the Train page framed by `site`, upload `npz` there; (the upload's response, the frame)."""
    page.goto(f"{site}/?app={urllib.parse.quote(app)}")
    frame = page.frame_locator("iframe").first
    frame.locator("h1", has_text="Train an AE/VAE pair").wait_for(timeout=120_000)
    frame.locator('[data-testid="stSelectbox"]').filter(has_text="Data set").click()
    frame.get_by_role("option", name="Upload (.npz or .zip)").click()
    dropzone = frame.locator('[data-testid="stFileUploaderDropzoneInput"]')
    with page.expect_response(lambda r: UPLOAD_PUT in r.url and r.request.method == "PUT",
                              timeout=60_000) as upload:
        dropzone.set_input_files(str(npz))
    return upload.value, frame


def test_a_framed_upload_works_in_the_spaces_configuration(page, space_url, embedding_site, tiny_npz):
    response, frame = upload_through_the_frame(page, embedding_site, space_url, tiny_npz)
    assert response.status == 204, response.text()
    frame.get_by_text(CHECKED).wait_for(timeout=60_000)  # the page checked the file and offers it
    expect(frame.get_by_role("button", name="Start training")).to_be_enabled(timeout=30_000)


def test_a_framed_upload_is_refused_by_xsrf_in_the_local_configuration(page, app_url, embedding_site, tiny_npz):
    response, frame = upload_through_the_frame(page, embedding_site, app_url, tiny_npz)
    assert response.status == 403 and "XSRF" in response.text(), (response.status, response.text())
    failed = frame.locator('[data-testid="stFileChip"][aria-invalid="true"]').filter(has_text=tiny_npz.name)
    failed.get_by_role("alert").filter(has_text="status code 403").wait_for(timeout=30_000)  # the uploader says so
    assert frame.get_by_text(CHECKED).count() == 0
    assert frame.get_by_role("button", name="Start training").is_disabled()
