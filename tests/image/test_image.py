"""The Space's image, built from the Dockerfile and served: every page answers from it.

Slow (the first build installs torch, minutes; a rebuild reuses buildah's cached layers), so it is
marked `image` and the quick `python -m pytest` leaves it out; `.ci/run` runs it after the README's
test command: `python -m pytest -m image tests/image`.

What it proves, as the Space would run it:
- `.ci/image` builds the Dockerfile (the base and the torch index are build arguments; CI uses a
  Debian bookworm base and PyPI's torch), or LATENT_EXPLORER_IMAGE names an image built earlier;
- the image's CMD starts as UID 1000 with the image's environment (the Dockerfile's ENV), only
  its port moved to a free one on 127.0.0.1 (`buildah run --isolation=chroot` shares the host's
  network), and /_stcore/health answers;
- every page runs over Streamlit's websocket protocol (bench/streamlit_client.py) with no error;
- `ui.prebuild`'s UMAP maps are in the image's state folder, and the first UMAP map a visitor
  opens comes from that disk cache, not fitted (which takes 30-90 s).

It is skipped only when buildah or debootstrap is missing and cannot be installed (or when not
run as root, which buildah's chroot isolation needs here); any other failure fails it.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from bench.streamlit_client import PAGES, StreamlitSession, wait_for_health

pytestmark = [pytest.mark.image, pytest.mark.timeout(3600)]
ROOT = Path(__file__).resolve().parents[2]
TAG = os.environ.get("LATENT_EXPLORER_IMAGE", "localhost/latent-explorer:ci")
UMAP = "UMAP (non-linear, slow first time)"  # ui.maps.METHOD_NAMES["umap"], as the selectbox shows it


def _have_tools() -> str | None:
    """None when buildah and debootstrap are there (installed now if need be), else why not."""
    if os.geteuid() != 0:
        return "buildah's chroot isolation needs root here"
    missing = [t for t in ("buildah", "debootstrap") if shutil.which(t) is None]
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, capture_output=True, timeout=1200)
        missing = [t for t in missing if shutil.which(t) is None]
    return f"{' and '.join(missing)} not installed and apt-get could not install it" if missing else None


@pytest.fixture(scope="module")
def image() -> dict:
    why = _have_tools()
    if why:
        pytest.skip(why)
    exists = subprocess.run(["buildah", "inspect", "--type", "image", TAG], capture_output=True).returncode == 0
    if not (exists and "LATENT_EXPLORER_IMAGE" in os.environ):
        start = time.monotonic()
        build = subprocess.run([str(ROOT / ".ci" / "image"), TAG], cwd=ROOT, capture_output=True, text=True)
        assert build.returncode == 0, f".ci/image failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
        print(f"image built in {time.monotonic() - start:.0f} s")
        # the Dockerfile lets the build go on without the maps (echo "ui.prebuild failed..."): not here
        assert not re.search(r"^ui\.prebuild failed", build.stdout, re.M), build.stdout[-4000:]
    info = json.loads(subprocess.run(["buildah", "inspect", "--type", "image", TAG], capture_output=True,
                                     text=True, check=True).stdout)
    return info["OCIv1"]["config"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(image, tmp_path_factory):
    """The image's CMD running as UID 1000 in a working container: (base URL, container, env)."""
    name = f"latent-explorer-test-{os.getpid()}"
    subprocess.run(["buildah", "rm", name], capture_output=True)
    subprocess.run(["buildah", "from", "--name", name, TAG], check=True, capture_output=True)
    env = dict(item.split("=", 1) for item in image["Env"])
    port = _free_port()
    cmd = list(image["Cmd"]) + [f"--server.port={port}", "--server.address=127.0.0.1", "--server.headless=true"]
    log = tmp_path_factory.mktemp("image") / "server.log"
    run = ["buildah", "run", "--isolation=chroot", "--user", "1000:1000", "--workingdir", image["WorkingDir"]]
    for key, value in env.items():
        run += ["--env", f"{key}={value}"]
    with open(log, "wb") as out:
        server = subprocess.Popen(run + [name, "--"] + cmd, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            seconds = wait_for_health(url, 180, server)
        except Exception:
            raise AssertionError(f"the image's server did not become healthy:\n{log.read_text()[-4000:]}")
        print(f"image server healthy after {seconds:.1f} s")
        yield url, name, env, log
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait(10)
        subprocess.run(["buildah", "rm", name], capture_output=True)


def _in_container(name: str, *cmd: str) -> str:
    out = subprocess.run(["buildah", "run", "--isolation=chroot", "--user", "1000:1000", name, "--", *cmd],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_image_runs_as_uid_1000_with_the_space_environment(image, served):
    _, name, env, _ = served
    assert image["User"] == "user" and env["LATENT_EXPLORER_HOSTED"] == "1"
    assert _in_container(name, "id", "-u").strip() == "1000"
    # the state folder it writes (maps, trained pairs, uploads) belongs to that user
    assert _in_container(name, "stat", "-c", "%u", env["LATENT_EXPLORER_STATE"]).strip() == "1000"


def test_the_image_holds_no_pip_cache(served):
    _, name, env, _ = served
    sizes = _in_container(name, "sh", "-c", f"du -sk {env['HOME']}/.cache/pip /var/cache/pip /root/.cache/pip "
                                            "2>/dev/null || true")
    kb = sum(int(line.split()[0]) for line in sizes.splitlines() if line.strip())
    assert kb < 1024, f"pip's cache went into the image:\n{sizes}"


def test_the_prebuilt_umap_maps_are_in_the_image(served):
    _, name, env, _ = served
    listing = _in_container(name, "find", f"{env['LATENT_EXPLORER_STATE']}/cache/projections", "-type", "f")
    umap_files = [line for line in listing.splitlines() if "umap" in line]
    assert umap_files, f"no UMAP projection in the image's cache:\n{listing}"


def test_every_page_is_served_and_the_first_umap_map_comes_from_the_disk_cache(served):
    url, _, _, log = served

    async def visit():
        runs = {}
        async with StreamlitSession(url) as s:
            for name, path in PAGES:
                runs[name] = await s.run_page(name, path, timeout_s=300)
            latent = runs["Latent map"]
            start = time.perf_counter()
            umap = await s.select(latent, "Map projection", UMAP, "Latent_map", timeout_s=300)
            return runs, umap, time.perf_counter() - start

    runs, umap, umap_s = asyncio.run(visit())
    for name, run in runs.items():
        assert not run.exceptions, f"{name}: {run.exceptions}\n{log.read_text()[-3000:]}"
        assert run.elements > 3, f"{name} showed almost nothing: {run.text()[:500]}"
    assert "Latent Explorer" in runs["Home"].text()
    assert "Train an AE/VAE pair" in runs["Train"].text()
    assert not umap.exceptions, umap.exceptions
    assert "loaded from the disk cache" in umap.text(), umap.text()[-1500:]
    print("page runs from the image: " + ", ".join(f"{n} {r.seconds:.2f} s" for n, r in runs.items())
          + f"; first UMAP map {umap_s:.2f} s")
