"""Does st.file_uploader work when the app is embedded in an iframe of another site, as a Hugging
Face Space is (huggingface.co/spaces/... frames *.hf.space)? A manual check, not a test:

    .venv/bin/python tests/e2e/iframe_upload.py            # http://, as a local server
    .venv/bin/python tests/e2e/iframe_upload.py --https    # https:// with a self-signed cert, as a Space

For each configuration it starts the app on 127.0.0.1, serves a page on localhost (another *site*:
cookies set inside the frame are third-party) that frames the app's Train page, uploads a tiny .npz
through the frame in headless Chromium, and prints the upload request's HTTP status, the XSRF
cookie the browser kept, and what the page showed.

Configurations: XSRF on (this repository's .streamlit/config.toml) at top level and framed; XSRF on
with the cookie sent as `SameSite=None; Secure` (streamlit 1.51 has no option for it: tornado's
`xsrf_cookie_kwargs` setting is patched in for the experiment); XSRF off, framed.

Observed (streamlit 1.51, Chromium 150 headless, fresh profile; the same over http and https):
XSRF on at top level: the upload PUT answers 204 and the page checks the file. XSRF on, framed by
another site: the browser keeps no `_streamlit_xsrf` cookie, the PUT answers 403 and the uploader
shows "AxiosError: Request failed with status code 403", also with the cookie sent as
`SameSite=None; Secure` (this browser blocks third-party cookies). XSRF off, framed: 204, works.
"""
from __future__ import annotations

import http.server
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import CHROMIUM, CHROMIUM_ARGS, ROOT, free_port, stop_server, wait_healthy

PATCH = """
import sys
import streamlit.web.server.server as server
_settings = server.get_tornado_settings
server.get_tornado_settings = lambda: {**_settings(), "xsrf_cookie_kwargs": {"samesite": "None", "secure": True}}
from streamlit.web.cli import main
sys.argv = ["streamlit", "run", "app.py", *sys.argv[1:]]
main()
"""


def start(port: int, log: Path, state: Path, xsrf: bool, samesite_none: bool, tls: tuple | None):
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENT_EXPLORER_") and k != "SPACE_ID"}
    env.update(LATENT_EXPLORER_STATE=str(state))
    flags = ["--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
             "--server.enableXsrfProtection", str(xsrf).lower()]
    if tls:
        flags += ["--server.sslCertFile", str(tls[0]), "--server.sslKeyFile", str(tls[1])]
    cmd = [sys.executable, "-c", PATCH, *flags] if samesite_none else [sys.executable, "-m", "streamlit", "run",
                                                                        "app.py", *flags]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def serve_parent(port: int, app_url: str, tls: tuple | None) -> http.server.ThreadingHTTPServer:
    html = (f'<!doctype html><title>embedding page</title><h1>Another site</h1>'
            f'<iframe src="{app_url}/Train" width="1300" height="2200" '
            f'allow="clipboard-write" style="border:0"></iframe>').encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if tls:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*map(str, tls))
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def try_upload(browser, url: str, framed: bool, npz: Path) -> dict:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, ignore_https_errors=True)
    page = context.new_page()
    statuses = []
    page.on("response", lambda r: statuses.append(r.status) if "/_stcore/upload_file" in r.url
            and r.request.method == "PUT" else None)
    page.goto(url)
    root = page.frame_locator("iframe").first if framed else page
    root.locator("h1", has_text="Train an AE/VAE pair").wait_for(timeout=120_000)
    time.sleep(2)
    root.locator('[data-testid="stSelectbox"]').filter(has_text="Data set").click()
    root.get_by_role("option", name="Upload (.npz or .zip)").click()
    root.locator('[data-testid="stFileUploaderDropzoneInput"]').wait_for(timeout=30_000)
    root.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(npz))
    deadline, shown = time.monotonic() + 30, ""
    while time.monotonic() < deadline:
        ok = root.get_by_text("training and").filter(has_text="test images of")
        err = root.locator('[data-testid="stFileUploaderFileErrorMessage"]')
        if ok.count():
            shown = "checked: " + ok.first.inner_text()
            break
        if err.count():
            shown = "uploader error: " + err.first.inner_text()
            break
        time.sleep(0.25)
    cookies = [f"{c['name']} (domain {c['domain']}, sameSite {c['sameSite']}, secure {c['secure']})"
               for c in context.cookies() if "xsrf" in c["name"]]
    context.close()
    return {"upload PUT status": statuses or "no request", "xsrf cookie kept": cookies or "none",
            "page shows": shown or "nothing within 30 s"}


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 (the browser is told to accept it)."""
    import subprocess

    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def main() -> int:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        print(f"{CHROMIUM} not found: apt-get install chromium")
        return 1
    work = Path(tempfile.mkdtemp(prefix="iframe-upload-"))
    tls = self_signed(work) if "--https" in sys.argv else None
    scheme = "https" if tls else "http"
    npz = work / "tiny.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, x_train=rng.integers(0, 256, (32, 28, 28), dtype=np.uint8), y_train=rng.integers(0, 2, 32),
             x_test=rng.integers(0, 256, (8, 28, 28), dtype=np.uint8), y_test=rng.integers(0, 2, 8))
    configs = [("XSRF on, top level", True, False, False), ("XSRF on, framed by another site", True, False, True),
               ("XSRF on + cookie SameSite=None; Secure, framed", True, True, True),
               ("XSRF off, framed by another site", False, False, True)]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + ["--ignore-certificate-errors"])
        for name, xsrf, samesite_none, framed in configs:
            port, parent_port = free_port(), free_port()
            log = work / f"server-{port}.log"
            proc = start(port, log, work / f"state-{port}", xsrf, samesite_none, tls)
            app_url = f"{scheme}://127.0.0.1:{port}"
            parent = serve_parent(parent_port, app_url, tls)
            try:
                wait_healthy(app_url, proc, log)
                url = f"{scheme}://localhost:{parent_port}/" if framed else f"{app_url}/Train"
                result = try_upload(browser, url, framed, npz)
            finally:
                parent.shutdown()
                stop_server(proc)
            print(f"{name}:")
            for key, value in result.items():
                print(f"    {key}: {value}")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
