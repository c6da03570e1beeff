"""The map pages (Latent map, Grid decoder, Draw) and ui/maps.py, ui/drawing.py.

Two tiny pairs are trained once for the module (a 2-D one and an 8-D one, one epoch on a
few hundred embedded MNIST digits); each page is run headless with streamlit's AppTest. The
Grid decoder's hole map also gets a tiny reference classifier placed beside a copy of the pairs.
"""
from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from ui import drawing, maps
from vae import TrainConfig, Trainer, make_pair
from vae.classifier import save_classifier, train_classifier
from vae.data import load_dataset
from vae.projections import ProjectionCache

ROOT = Path(__file__).resolve().parent.parent  # AppTest resolves a relative path against this file
PAGES = ["app_pages/2_Latent_map.py", "app_pages/3_Grid_decoder.py", "app_pages/5_Draw.py"]
PAIRS = {"tiny2d": 2, "tiny8d": 8}


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    data = load_dataset("embedded-mnist").limit(train=256, test=64)
    for name, dim in PAIRS.items():
        torch.manual_seed(0)
        models = make_pair("mnist-2d" if dim == 2 else "mnist-mlp", data.image_shape, latent_dim=dim)
        out = {kind: folder / f"{name}-{kind}.safetensors" for kind in models}
        Trainer(models, data, TrainConfig(epochs=1, batch_size=64, eval_batch_size=64), out=out).fit()
    return folder


@pytest.fixture(scope="module")
def judged_dir(pair_dir, tmp_path_factory):
    """The tiny pairs with a tiny MNIST classifier beside them (found as the pages find the shipped one)."""
    folder = tmp_path_factory.mktemp("judged")
    for path in pair_dir.glob("*.safetensors"):
        shutil.copy(path, folder / path.name)
    data = load_dataset("embedded-mnist").limit(train=256, test=64)
    save_classifier(train_classifier(data, epochs=1, batch_size=64, channels=(4, 8, 8)),
                    folder / "classifier-mnist.safetensors")
    return folder


def _app_with(checkpoints, state, monkeypatch):
    """The app's settings pointed at these folders, with fresh process-wide caches before and after."""
    monkeypatch.setenv("LATENT_EXPLORER_CHECKPOINTS", str(checkpoints))
    monkeypatch.setenv("LATENT_EXPLORER_STATE", str(state))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield state
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def judged_env(judged_dir, tmp_path, monkeypatch):
    yield from _app_with(judged_dir, tmp_path / "state", monkeypatch)


@pytest.fixture
def app_env(pair_dir, tmp_path, monkeypatch):
    yield from _app_with(pair_dir, tmp_path / "state", monkeypatch)


def run_page(page: str, pair: str, **state) -> AppTest:
    at = AppTest.from_file(ROOT / page, default_timeout=120)
    at.session_state["pair_name"] = pair
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def canvas_value(rgba: np.ndarray) -> dict:
    """What streamlit-drawable-canvas sends back: a PNG data URL of the canvas."""
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    return {"data": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), "raw": {}}


def a_drawn_one() -> np.ndarray:
    rgba = np.zeros((280, 280, 4), np.uint8)
    rgba[40:230, 150:175] = 255  # a white vertical bar, off-centre
    return rgba


# --- the pages -----------------------------------------------------------------------------
@pytest.mark.parametrize("pair", PAIRS)
def test_latent_map_page_shows_both_maps_and_a_selected_image(app_env, pair_dir, pair):
    at = run_page(PAGES[0], pair)
    assert len(at.get("plotly_chart")) == 2
    assert any("1,000 test images" in c.value for c in at.caption)  # the whole embedded test split
    assert len(at.download_button) == 1
    # a selection (what the on_select callback stores) shows the input and both reconstructions
    at = run_page(PAGES[0], pair, latent_map_selected=(page_map_key(pair_dir, pair), 3))
    assert len(at.image) == 3
    assert any("Input: test image" in c for i in at.image for c in i.captions)


def page_map_key(folder, pair: str) -> str:
    """The key the pages give this pair's default map (all 1,000 embedded test digits)."""
    from vae.projections import file_sha256

    ids = {kind: file_sha256(folder / f"{pair}-{kind}.safetensors") for kind in ("ae", "vae")}
    data_key = maps.data_id("embedded-mnist", load_dataset("embedded-mnist").test)
    return maps.map_key(ids, data_key, 1000, "identity" if PAIRS[pair] == 2 else "pca", 0,
                        aligned=maps.default_aligned(PAIRS[pair]))


@pytest.mark.parametrize("pair", PAIRS)
def test_grid_decoder_page_decodes_a_clicked_location(app_env, pair):
    at = run_page(PAGES[1], pair)
    assert len(at.get("component_instance")) == 2  # the two clickable maps
    assert len(at.image) == 2  # the two decoded grids
    assert len(at.download_button) == 2
    assert any(("exactly" if pair == "tiny2d" else "PCA inverse") in i.value for i in at.info)
    # a click in empty space on the AE map, as streamlit-image-coordinates reports it
    at = run_page(PAGES[1], pair, grid_map_ae={"x": 60, "y": 30, "width": 496, "height": 480, "unix_time": 1})
    assert any("You clicked the **AE** map" in m.value for m in at.markdown)
    assert len(at.image) == 2 + 2 * 2  # + per model: the decoded location and its nearest images
    # no classifier for embedded-mnist in this folder: one line says so, and there is no hole map
    assert any("No reference classifier for embedded-mnist" in c.value for c in at.caption)
    assert not [t for t in at.toggle if t.key == "grid_hole_map"] and not at.metric


def test_grid_decoder_hole_map_shows_the_recognised_share_per_model(judged_env):
    at = run_page(PAGES[1], "tiny2d")
    hole = at.toggle(key="grid_hole_map")
    assert hole.value and hole.label.startswith("Hole map: shade cells the classifier does not recognise")
    assert [m.label.split(":")[0] for m in at.metric] == ["AE", "VAE"]
    assert all(m.value.endswith("%") and 0 <= int(m.value[:-1]) <= 100 for m in at.metric)
    assert any("not a recognisable digit — a hole" in m.value for m in at.markdown)
    assert len(at.image) == 5  # the legend, the two territory maps and the two decoded grids
    assert any(i.value.startswith("**What this pair shows**") for i in at.info)  # judged by the tiny judge
    assert len(at.get("plotly_chart")) == 2  # class shares of the grid and of prior samples
    # equal prior mass per cell (a 2-D VAE): still a share per model, now of prior mass
    at.toggle[[t.label for t in at.toggle].index("Equal prior mass per cell")].set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.metric) == 2 and any("z ~ N(0, I)" in m.value for m in at.markdown)
    at.toggle(key="grid_hole_map").set_value(False).run()
    assert not at.exception and not at.metric


@pytest.mark.parametrize("pair", PAIRS)
def test_draw_page_encodes_a_drawing_and_marks_it_on_both_maps(app_env, pair):
    at = run_page(PAGES[2], pair)
    assert len(at.get("component_instance")) == 1  # the canvas
    assert len(at.get("plotly_chart")) == 2
    at = run_page(PAGES[2], pair, draw_canvas=canvas_value(a_drawn_one()))
    assert len(at.image) == 3  # what the models see, AE and VAE reconstructions
    assert any("exactly where the code lands" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 2


def test_second_run_loads_the_projection_from_disk(app_env):
    run_page(PAGES[0], "tiny8d")
    files = sorted((app_env / "cache" / "projections").glob("pca-*.npz"))
    assert len(files) == 2  # one per model
    st.cache_resource.clear()  # a restarted server: only the disk cache is left
    at = run_page(PAGES[0], "tiny8d")
    assert any("loaded from the disk cache" in c.value for c in at.caption)


def test_prebuild_fits_the_slow_maps_that_the_pages_then_load(app_env):
    """`python -m ui.prebuild` (the Space's Dockerfile runs it) writes what the page looks for."""
    from ui import prebuild

    lines = prebuild.prebuild(["tsne"], n=500)  # t-SNE: the same path as UMAP, without numba's compile
    assert sorted(line.split()[0] for line in lines) == sorted(PAIRS)
    assert all("fitted and saved" in line for line in lines), lines
    assert all("already cached" in line for line in prebuild.prebuild(["tsne"], n=500))
    st.cache_resource.clear()  # the server starts with the disk cache only
    at = run_page(PAGES[0], "tiny8d", maps_method="tsne", maps_sample=500)
    assert any("loaded from the disk cache" in c.value for c in at.caption), [c.value for c in at.caption]


def test_prebuild_cli_refuses_nonsense(capsys):
    from ui import prebuild

    assert prebuild._run(prebuild.build_parser().parse_args(["--n", "0"])) == 2
    assert "--n must be at least 1" in capsys.readouterr().err


# --- ui/maps.py ----------------------------------------------------------------------------
def test_click_pixels_map_to_data_coordinates_exactly():
    canvas = maps.MapCanvas(xlim=(-3.0, 5.0), ylim=(-1.0, 7.0), size=400)
    corners = canvas.to_pixel([[-3.0, 7.0], [5.0, -1.0]])
    np.testing.assert_allclose(corners, [[canvas.left, canvas.top], [canvas.left + 400, canvas.top + 400]])
    points = np.random.default_rng(0).uniform([-3, -1], [5, 7], (50, 2))
    back = np.array([canvas.to_data(*p) for p in canvas.to_pixel(points)])
    np.testing.assert_allclose(back, points, atol=1e-9)
    # a click on pixel (i, j) means its centre; a half-size display reports half-size pixels
    px, py = canvas.to_pixel([[1.0, 3.0]])[0]
    full = {"x": int(px), "y": int(py), "width": canvas.width, "height": canvas.height}
    half = {"x": int(px) // 2, "y": int(py) // 2, "width": canvas.width / 2, "height": canvas.height / 2}
    unit = 8.0 / 400  # map units per pixel
    assert np.allclose(maps.click_to_data(full, canvas), (1.0, 3.0), atol=unit)
    assert np.allclose(maps.click_to_data(half, canvas), (1.0, 3.0), atol=2 * unit)
    assert maps.click_to_data({"x": 2, "y": 2, "width": canvas.width, "height": canvas.height}, canvas) is None
    assert maps.click_to_data(None, canvas) is None


def test_a_dot_is_drawn_where_a_click_on_it_lands():
    canvas = maps.MapCanvas(xlim=(0.0, 10.0), ylim=(0.0, 10.0), size=200)
    image = maps.render_map_image(canvas, np.array([[7.0, 2.0]]), np.array([3]))
    assert image.shape == (canvas.height, canvas.width, 3)
    rgb = image.astype(int)
    ys, xs = np.nonzero(rgb.max(-1) - rgb.min(-1) > 30)  # the only coloured pixels: the dot (axes are grey)
    assert 0 < len(xs) < 100
    click = {"x": int(np.median(xs)), "y": int(np.median(ys)), "width": canvas.width, "height": canvas.height}
    assert np.allclose(maps.click_to_data(click, canvas), (7.0, 2.0), atol=0.1)


def _is_red(pixel) -> bool:
    r, g, b = (int(v) for v in pixel)
    return r > g + 60 and r > b + 60


def test_cell_shade_tints_the_cell_of_its_tile():
    canvas = maps.MapCanvas(xlim=(0.0, 3.0), ylim=(0.0, 3.0), size=300)
    shade = np.ones(9)
    shade[0] = 0.0  # tile 0 of grid_points_2d's layout: the top-left cell (smallest x, largest y)
    image = maps.render_map_image(canvas, np.empty((0, 2)), np.empty(0, int), tiles=np.zeros((9, 4, 4, 1)),
                                  cell_shade=shade)
    centre = lambda x, y: image[int(canvas.to_pixel([[x, y]])[0, 1]), int(canvas.to_pixel([[x, y]])[0, 0])]
    assert _is_red(centre(0.5, 2.5))
    for x, y in [(2.5, 2.5), (0.5, 0.5), (1.5, 1.5), (2.5, 0.5)]:  # top-right, bottom-left, middle, bottom-right
        assert tuple(centre(x, y)) == (0, 0, 0)
    red = np.argwhere([[_is_red(p) for p in row] for row in image])
    assert red[:, 0].min() >= canvas.top and red[:, 0].max() < canvas.top + 101  # within the top third ...
    assert red[:, 1].min() >= canvas.left and red[:, 1].max() < canvas.left + 101  # ... and the left third
    # the decoded grid picture: the same tile tinted, 1-pixel separators between 4-pixel tiles
    grid = np.asarray(Image.open(io.BytesIO(maps.grid_png(np.zeros((9, 4, 4, 1)), 3, shade))).convert("RGB"))
    assert grid.shape == (14, 14, 3) and _is_red(grid[1, 1])
    assert tuple(grid[1, 6]) == tuple(grid[6, 1]) == (0, 0, 0)  # its right and lower neighbours


def test_cell_bounds_hold_their_nodes_and_gaussian_cells_are_tinted_where_they_lie():
    for spec in (maps.GridSpec(4, (0.0, 8.0), (-2.0, 2.0)), maps.GridSpec(4, (0.0, 1.0), (0.0, 1.0), gaussian=True)):
        xe, ye = spec.cell_bounds()
        for i, (x, y) in enumerate(spec.points()):
            row, col = divmod(i, 4)
            assert xe[col] < x < xe[col + 1] and ye[3 - row] < y < ye[4 - row]  # row 0 is the top row
    # without tiles (the equal-prior-mass grid): the prior's quantile cells, tinted on white
    spec = maps.GridSpec(4, (-3.0, 3.0), (-3.0, 3.0), gaussian=True)
    canvas = maps.MapCanvas(spec.xlim, spec.ylim, size=300)
    shade = np.ones(16)
    shade[3] = 0.0  # top-right: x > 0.674, y > 0.674 (the 75% quantile), out to the edge of the view
    image = maps.render_map_image(canvas, np.empty((0, 2)), np.empty(0, int), cell_shade=shade,
                                  cell_bounds=spec.cell_bounds())
    at = lambda x, y: image[int(canvas.to_pixel([[x, y]])[0, 1]), int(canvas.to_pixel([[x, y]])[0, 0])]
    assert _is_red(at(0.8, 0.8)) and _is_red(at(2.9, 2.9))
    assert tuple(at(0.5, 0.8)) == (255, 255, 255) and tuple(at(0.8, 0.5)) == (255, 255, 255)
    assert tuple(at(-2.9, 2.9)) == (255, 255, 255)


def test_hole_shade_leaves_recognised_cells_clear_and_tints_the_rest():
    confidence = np.array([1.0, 0.9, 0.89, 0.5, 0.1])
    shade = maps.hole_shade(confidence)
    assert list(shade[:2]) == [1.0, 1.0] and (shade[2:] <= 0.6).all() and (np.diff(shade[2:]) < 0).all()
    assert maps.recognised_share(confidence) == pytest.approx(0.4)


def test_uniform_grid_tiles_the_view_and_the_inverse_lands_under_the_click(pair_dir):
    spec = maps.GridSpec(4, (0.0, 8.0), (0.0, 4.0))
    pts = spec.points()
    assert np.allclose(sorted(set(pts[:, 0])), [1, 3, 5, 7]) and np.allclose(pts[0], [1, 3.5])  # top row first
    lmap, models = _tiny_map(pair_dir, "tiny8d")
    where = np.array([[0.3, -0.2], [1.0, 1.0]], np.float32)
    for kind in lmap.kinds:
        # PCA: the decoded code lies exactly under the clicked point, for the aligned AE map too
        np.testing.assert_allclose(lmap.to_map(kind, lmap.to_latent(kind, where)), where, atol=1e-4)
        tiles = maps.decode_map_points(lmap, kind, models[kind], spec.points())
        assert tiles.shape == (16, 28, 28, 1) and 0 <= tiles.min() and tiles.max() <= 1


def test_projection_cache_is_reused_without_refitting(pair_dir, tmp_path, monkeypatch):
    cache = ProjectionCache(tmp_path)
    first, _ = _tiny_map(pair_dir, "tiny8d", cache=cache)
    assert not first.from_disk and len(list(tmp_path.glob("pca-*.npz"))) == 2
    import vae.projections  # every map's fit goes through its fit_projection -> make_projection

    monkeypatch.setattr(vae.projections, "make_projection", lambda *a, **k: pytest.fail("refitted a cached projection"))
    second, _ = _tiny_map(pair_dir, "tiny8d", cache=ProjectionCache(tmp_path))
    assert second.from_disk
    for kind in first.kinds:
        np.testing.assert_allclose(second.points[kind], first.points[kind], atol=1e-5)


def test_largest_gap_finds_the_hole_in_a_ring():
    angles = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    ring = np.stack([np.cos(angles), np.sin(angles)], 1) * 3 + [10, -2]
    assert np.allclose(maps.largest_gap(ring), (10, -2), atol=0.2)


def _tiny_map(pair_dir, name, cache=None):
    from vae.checkpoint import load_checkpoint

    models = {kind: load_checkpoint(pair_dir / f"{name}-{kind}.safetensors").model for kind in ("ae", "vae")}
    split = load_dataset("embedded-mnist").test
    lmap = maps.build_latent_map(models, split, [str(i) for i in range(10)], "pca", 300,
                                 model_ids={"ae": f"{name}-ae", "vae": f"{name}-vae"}, data_key="embedded/test",
                                 cache=cache)
    return lmap, models


# --- ui/drawing.py -------------------------------------------------------------------------
def test_a_drawing_is_cropped_scaled_and_centred_like_mnist():
    digit = drawing.mnist_style(a_drawn_one())
    assert digit.shape == (28, 28) and digit.dtype == np.uint8
    rows, cols = np.flatnonzero(digit.max(1) > 30), np.flatnonzero(digit.max(0) > 30)
    assert rows[-1] - rows[0] + 1 in (19, 20, 21)  # the long side fills the 20-pixel box
    assert cols[-1] - cols[0] + 1 < 20  # a "1" is narrower than tall: the aspect is kept
    ys, xs = np.indices(digit.shape)
    com = np.array([(ys * digit).sum(), (xs * digit).sum()]) / digit.sum()
    assert np.allclose(com, 13.5, atol=1.0)  # centred by its centre of mass, not its box
    assert drawing.mnist_style(np.zeros((280, 280, 4), np.uint8)) is None


# --- pairs the map pages cannot fully serve --------------------------------------------------
@pytest.fixture
def colour_pair_env(tmp_path, monkeypatch):
    """A CIFAR-shaped pair whose data cannot be found (no network, no local copy)."""
    from vae import catalog
    from vae.checkpoint import Checkpoint, save_checkpoint
    from vae.errors import DatasetError

    folder = tmp_path / "checkpoints"
    for kind, model in make_pair("cifar-conv", (3, 32, 32)).items():
        model.eval()
        save_checkpoint(Checkpoint(model=model, dataset={"name": "cifar10", "source": "torchvision"}),
                        folder / f"colour-{kind}.safetensors")

    def no_data(meta, image_shape, allow_download=True):
        raise DatasetError("cifar10 could not be downloaded (no network)")

    monkeypatch.setattr(catalog, "data_for", no_data)
    yield from _app_with(folder, tmp_path / "state", monkeypatch)


@pytest.mark.parametrize("page", PAGES[:2])
def test_without_data_the_map_pages_say_why_and_show_prior_samples(colour_pair_env, page):
    at = AppTest.from_file(ROOT / page, default_timeout=120)
    at.session_state["pair_name"] = "colour"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("no network" in e.value for e in at.error)
    assert len(at.image) == 2  # each model's decoded prior samples


def test_the_draw_page_says_it_needs_a_28x28_pair(colour_pair_env):
    at = AppTest.from_file(ROOT / PAGES[2], default_timeout=120)
    at.session_state["pair_name"] = "colour"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("28×28" in i.value for i in at.info)
    assert not at.get("component_instance")  # no canvas


def test_a_hosted_server_caps_new_slow_maps_whatever_size_the_client_asks(app_env, monkeypatch):
    """Issue 19.6: a new t-SNE / UMAP map is capped on a hosted server (bench/hosted_maps.py measures
    the default), whatever size the client asks for; the page says so and fits the capped map."""
    monkeypatch.setenv("LATENT_EXPLORER_HOSTED", "1")
    monkeypatch.setenv("LATENT_EXPLORER_MAX_SLOW_MAP", "40")
    st.cache_resource.clear()
    at = run_page(PAGES[0], "tiny8d", maps_method="tsne", maps_sample=5000)
    assert any(i.value.startswith("Showing 40 images: a new t-SNE map of 1,000 images would hold this server's one "
                                  "map-fitting slot for minutes") for i in at.info), [i.value for i in at.info]
    wait_for_fits()
    assert len(list((app_env / "cache" / "projections").glob("tsne-*"))) == 2
    at = run_page(PAGES[0], "tiny8d", maps_method="tsne", maps_sample=5000)
    assert any("t-SNE (no inverse: nearest code); 40 test images" in c.value for c in at.caption)


# --- slow maps off the page run (issue 19.6) ------------------------------------------------------
def wait_for_fits(timeout_s: float = 120, errors: bool = False) -> None:
    """Until the server's map queue has nothing queued or running (what the progress fragment waits for)."""
    import time

    from ui import map_fits

    fits = map_fits.queue()
    deadline = time.monotonic() + timeout_s
    while fits.pending():
        assert time.monotonic() < deadline, "the map fit did not finish"
        time.sleep(0.2)
    assert errors or not [f.error for f in fits._fits.values() if f.error]


def test_a_new_slow_map_is_fitted_once_off_the_page_run_whoever_asks(app_env, monkeypatch):
    """The page returns at once with the fit's progress; two visitors asking for the same map start
    one fit (one child process); once it is on disk the page shows the map."""
    from ui import map_fits

    children = []
    real = map_fits.fit_in_child
    monkeypatch.setattr(map_fits, "fit_in_child", lambda job, on_stage: children.append(job) or real(job, on_stage))
    first = run_page(PAGES[0], "tiny8d", maps_method="tsne", maps_sample=500)
    second = run_page(PAGES[0], "tiny8d", maps_method="tsne", maps_sample=500)  # another visitor, meanwhile
    for at in (first, second):
        assert not at.get("plotly_chart")  # no map yet, and the page run did not wait for it
        assert any("is not on the server yet, so it is being fitted now" in i.value for i in at.info)
        assert at.get("progress")
    wait_for_fits()
    assert len(children) == 1
    at = run_page(PAGES[0], "tiny8d", maps_method="tsne", maps_sample=500)
    assert len(at.get("plotly_chart")) == 2
    assert any("loaded from the disk cache" in c.value for c in at.caption)


def test_a_failed_fit_says_so_without_internals_when_hosted_and_can_be_retried(app_env, monkeypatch):
    from ui import map_fits
    from vae.map_fit import MapFitError

    real = map_fits.fit_in_child

    def broken(job, on_stage):
        raise MapFitError("the map's fit failed (exit status 1)", "Traceback ... /srv/secret/path.py")

    monkeypatch.setenv("LATENT_EXPLORER_HOSTED", "1")
    monkeypatch.setattr(map_fits, "fit_in_child", broken)
    st.cache_resource.clear()
    run_page(PAGES[0], "tiny8d", maps_method="tsne", maps_sample=500)
    wait_for_fits(errors=True)
    at = AppTest.from_file(ROOT / PAGES[0], default_timeout=120)
    at.session_state["pair_name"], at.session_state["maps_method"], at.session_state["maps_sample"] = "tiny8d", "tsne", 500
    at.run()
    assert [e.value for e in at.error] == ["the t-SNE map of 500 images: the map's fit failed (exit status 1)"]
    assert not at.code and not at.expander  # the child's own words (paths, a traceback) stay on the server
    monkeypatch.setattr(map_fits, "fit_in_child", real)  # the next try works
    at.button(key="map_fit_retry").click().run()
    assert any("is being fitted now" in i.value for i in at.info)
    wait_for_fits()
    assert len(at.run().get("plotly_chart")) == 2


def test_a_hosted_grid_decoder_names_no_server_path_when_its_judge_is_broken(judged_dir, tmp_path, monkeypatch):
    """Issue 19.7 (and 19.8's "one bad file"): a judge file that does not load reaches a hosted
    visitor as a message naming the file, without the server's folders, and the page still runs."""
    folder = tmp_path / "checkpoints"
    shutil.copytree(judged_dir, folder)
    (folder / "classifier-mnist.safetensors").write_bytes(b"garbage" * 100)
    monkeypatch.setenv("LATENT_EXPLORER_HOSTED", "1")
    gen = _app_with(folder, tmp_path / "state", monkeypatch)
    next(gen)
    try:
        at = AppTest.from_file(ROOT / PAGES[1], default_timeout=120)
        at.session_state["pair_name"] = "tiny2d"
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        if any(t.key == "grid_hole_map" for t in at.toggle) and not at.toggle(key="grid_hole_map").value:
            at.toggle(key="grid_hole_map").set_value(True).run()
        assert not at.exception, [e.value for e in at.exception]
        shown = [e.value for e in [*at.error, *at.warning, *at.info, *at.caption, *at.markdown]]
        assert any("classifier-mnist.safetensors" in s for s in shown), shown  # the broken judge is named...
        assert not [s for s in shown if str(tmp_path) in s], shown  # ...by its name alone
    finally:
        next(gen, None)


@pytest.mark.parametrize("page", ["app.py", "app_pages/0_Lesson.py", "app_pages/4_Reconstructions.py",
                                  "app_pages/6_Beta_dial.py"])
def test_every_page_that_judges_runs_on_without_a_broken_judge(judged_dir, tmp_path, monkeypatch, page):
    """The same broken judge file on the other pages that load judges: each names it and runs."""
    folder = tmp_path / "checkpoints"
    shutil.copytree(judged_dir, folder)
    (folder / "classifier-mnist.safetensors").write_bytes(b"garbage" * 100)
    gen = _app_with(folder, tmp_path / "state", monkeypatch)
    next(gen)
    try:
        at = AppTest.from_file(ROOT / page, default_timeout=120)
        at.session_state["pair_name"] = "tiny2d"
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert any("classifier-mnist.safetensors" in w.value for w in at.sidebar.warning), page
    finally:
        next(gen, None)
