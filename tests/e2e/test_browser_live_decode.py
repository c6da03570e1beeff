"""The live decode in headless Chromium: the component's JavaScript decoder gives PyTorch's
outputs for every shipped MLP checkpoint, and on the Grid decoder page a glide decodes in the
browser with nothing sent to the server, while a click still reaches it."""
from __future__ import annotations

import time
from pathlib import Path

from ui.state import DEFAULT_PAIRS

import numpy as np
import pytest
import torch

from vae.checkpoint import load_checkpoint
from vae.export import ExportError, decoder_payload, export_decoder

from test_browser import assert_no_failure, open_page, wait_until_idle  # tests/e2e is on sys.path (rootdir)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
DECODER_JS = ROOT / "ui" / "components" / "live_decode" / "decoder.js"
MLP_CHECKPOINTS = []
for _path in sorted((ROOT / "checkpoints").glob("*.safetensors")):
    if _path.stem.endswith(("-ae", "-vae")) and not _path.stem.startswith("classifier"):
        MLP_CHECKPOINTS.append(_path)
TOLERANCE = 1e-4  # float32 weights: what remains is float32 vs float64 accumulation (~1e-5 on logits)

JS_DECODE = """([payload, codes]) => {
  const decoder = liveParseDecoder(payload);
  return codes.map((z) => {
    const out = Array.from(liveDecode(decoder, Float32Array.from(z)));
    return [out, Array.from(liveToDisplay(decoder, out))];
  });
}"""


@pytest.fixture(scope="module")
def blank(browser):
    context = browser.new_context()
    page = context.new_page()
    page.set_content("<html><body></body></html>")
    page.add_script_tag(content=DECODER_JS.read_text())
    yield page
    context.close()


def test_the_shipped_mlp_checkpoints_are_all_tested():
    names = {p.stem for p in MLP_CHECKPOINTS}
    assert {"mnist-2d-ae", "mnist-2d-vae", "mnist-mlp-ae", "mnist-mlp-vae", "tutorial-mnist-mlp-ae",
            "tutorial-mnist-mlp-vae"} <= names, names


@pytest.mark.parametrize("path", MLP_CHECKPOINTS, ids=lambda p: p.stem)
def test_the_javascript_decoder_decodes_what_pytorch_decodes(blank, path):
    model = load_checkpoint(path).model.eval()
    try:
        exported = export_decoder(model)
    except ExportError:
        assert model.config.family not in ("mlp", "tutorial-mlp"), f"{path.name}: an MLP decoder must export"
        pytest.skip(f"{path.name}: {model.config.family} decoder, decoded by a click (see ui/live_decode.py)")
    g = torch.Generator().manual_seed(0)
    codes = torch.cat([torch.randn(6, model.config.latent_dim, generator=g),  # the prior's bulk
                       torch.randn(2, model.config.latent_dim, generator=g) * 6,  # far out, saturated outputs
                       torch.zeros(1, model.config.latent_dim)])
    with torch.no_grad():
        expected = model.decode(codes).reshape(len(codes), -1).numpy()
        expected_images = model.decode_images(codes).reshape(len(codes), -1).numpy()
    result = blank.evaluate(JS_DECODE, [decoder_payload(exported), codes.tolist()])
    outputs = np.array([r[0] for r in result])
    images = np.array([r[1] for r in result])
    assert outputs.shape == expected.shape
    assert np.abs(outputs - expected).max() < TOLERANCE
    assert np.abs(images - expected_images).max() < TOLERANCE
    assert images.std() > 0.05  # real pictures, not a constant both sides agree on


def wait_live_ready(page) -> None:
    """Until the live view is drawn and both decoders' weights are in the page."""
    page.locator(".live-map img").first.wait_for(timeout=120_000)
    page.wait_for_function("() => (globalThis.__latentExplorerLive?.decoders.size || 0) >= 2", timeout=60_000)


def test_a_glide_over_the_grid_decoders_map_decodes_in_the_browser_without_the_server(page, app_url):
    sent = []  # every frame the page sends to the server (a rerun request, a widget value), with its time
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(time.monotonic())))
    open_page(page, app_url, "Grid_decoder", "Grid decoder")  # the default pair (ui.state.DEFAULT_PAIRS[0])
    wait_live_ready(page)
    wait_until_idle(page)
    page.evaluate("() => { globalThis.__latentExplorerLive.stats.moves = 0; }")
    area = page.locator(".live-map").first
    area.scroll_into_view_if_needed()
    box = area.bounding_box()
    # browsers without pointerrawupdate (and touch) glide on plain pointermove events
    area.dispatch_event("pointermove", {"clientX": box["x"] + box["width"] * 0.5,
                                        "clientY": box["y"] + box["height"] * 0.5, "bubbles": True})
    page.wait_for_function("() => globalThis.__latentExplorerLive.last !== null", timeout=10_000)
    seen, t0 = [], time.monotonic()
    for f in np.linspace(0.2, 0.8, 25):
        page.mouse.move(box["x"] + box["width"] * f, box["y"] + box["height"] * (1 - f))
        # each move is decoded at once or at the next frame (one decode per frame at most)
        page.wait_for_function("(x) => globalThis.__latentExplorerLive.last?.x !== x",
                               arg=seen[-1]["x"] if seen else None, timeout=10_000)
        seen.append(page.evaluate("() => { const l = globalThis.__latentExplorerLive.last;"
                                  " return {x: l.x, y: l.y, codes: l.codes, outputs: {ae: Array.from(l.outputs.ae),"
                                  " vae: Array.from(l.outputs.vae)}}; }"))
    time.sleep(0.5)
    assert sent, "the page's own frames (its first run) are seen, so an empty glide is a real zero"
    assert not [t for t in sent if t >= t0], "a glide must send nothing to the server"
    assert page.locator('[data-testid="stStatusWidget"]').count() == 0, "a glide must not rerun the page"
    assert page.evaluate("() => globalThis.__latentExplorerLive.stats.moves") >= 25
    assert len({round(s["x"], 6) for s in seen}) == 25, "each move decodes a new place"
    # the decode shown is PyTorch's decode of the code the browser computed, for both models
    for kind in ("ae", "vae"):
        model = load_checkpoint(ROOT / "checkpoints" / f"{DEFAULT_PAIRS[0]}-{kind}.safetensors").model.eval()
        last = seen[-1]
        with torch.no_grad():
            expected = model.decode(torch.tensor([last["codes"][kind]])).reshape(-1).numpy()
        assert np.abs(np.array(last["outputs"][kind]) - expected).max() < TOLERANCE
    # the two decodes differ between the start and the end of the glide
    assert np.abs(np.array(seen[0]["outputs"]["vae"]) - np.array(seen[-1]["outputs"]["vae"])).max() > 1.0
    # a click still reaches the server: the page shows that location decoded
    area.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
    page.get_by_text("You clicked the").first.wait_for(timeout=60_000)
    wait_until_idle(page)
    assert_no_failure(page)
