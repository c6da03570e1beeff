"""The Reconstructions page: AE beside VAE, pictures, charts and scores, measured on request and
then kept on disk, for grey MNIST pairs (with and without a reference classifier) and colour ones."""
import json
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

from vae.checkpoint import Checkpoint, save_checkpoint
from vae.classifier import save_classifier, train_classifier
from vae.data import load_embedded_mnist
from vae.models import Autoencoder, ModelConfig
from vae.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent  # AppTest resolves a relative path against this file
PAGE = "app_pages/4_Reconstructions.py"
MEASURE = "recon_measure"


def tiny_pair(folder, name="tiny", **config):
    """An AE and a VAE of a small MLP, one epoch on 500 embedded MNIST digits (seconds)."""
    torch.manual_seed(0)
    data = load_embedded_mnist().limit(500, 200)
    base = dict(family="mlp", latent_dim=2, hidden=(32,), preset="mnist-2d") | config
    models = {k: Autoencoder(ModelConfig(variational=k == "vae", **base)) for k in ("ae", "vae")}
    out = {k: folder / f"{name}-{k}.safetensors" for k in models}
    Trainer(models, data, TrainConfig(epochs=1, batch_size=100), out=out).fit()
    return data


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A checkpoints folder holding a tiny pair and a tiny MNIST classifier (found by the page)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    data = tiny_pair(folder)
    judge = train_classifier(data, epochs=1, batch_size=100, channels=(4, 8, 8))
    save_classifier(judge, folder / "classifier-mnist.safetensors")
    return folder


@pytest.fixture(scope="module")
def no_judge(tmp_path_factory):
    """A tiny pair with no classifier for its data set."""
    folder = tmp_path_factory.mktemp("no-judge")
    tiny_pair(folder)
    return folder


@pytest.fixture(scope="module")
def colour(tmp_path_factory):
    """An untrained colour conv pair whose data set is a small CIFAR-shaped .npz."""
    folder = tmp_path_factory.mktemp("colour")
    rng = np.random.default_rng(0)
    npz = folder / "cifar10-tiny.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), y_train=np.arange(20) % 10,
             x_test=rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8), y_test=np.arange(30) % 10)
    torch.manual_seed(0)
    for kind in ("ae", "vae"):
        model = Autoencoder(ModelConfig(family="conv", variational=kind == "vae", latent_dim=4, image_shape=(3, 32, 32),
                                        hidden=(4, 8), likelihood="gaussian-learned", preset="cifar-conv"))
        save_checkpoint(Checkpoint(model=model.eval(), dataset={"name": "cifar10-tiny", "source": str(npz)},
                                   metrics={"recon": 1.0, "kl": 0.5 if kind == "vae" else 0.0}),
                        folder / f"colour-{kind}.safetensors")
    return folder


@pytest.fixture(autouse=True)
def fresh_caches():
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def open_page(monkeypatch, checkpoints, state) -> AppTest:
    monkeypatch.setenv("LATENT_EXPLORER_CHECKPOINTS", str(checkpoints))
    monkeypatch.setenv("LATENT_EXPLORER_STATE", str(state))
    at = AppTest.from_file(ROOT / PAGE, default_timeout=240)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def text(at) -> str:
    return "\n".join(m.value for m in at.markdown) + "\n" + "\n".join(c.value for c in at.caption)


def captions(at, index) -> list[str]:
    return at.image[index].captions


def test_shows_pictures_charts_instant_scores_and_downloads(monkeypatch, shipped, tmp_path):
    at = open_page(monkeypatch, shipped, tmp_path / "state")
    assert not at.error
    # test images, AE and VAE reconstructions, two path ends (one element), two paths, three sample grids;
    # the pair trained on 500 images, so section 5 shows 3 rows (images, AE, VAE) for training and unseen images
    assert len(at.image) == 9 + 6
    assert any("This pair saw only **500 training images**" in m.value for m in at.markdown)
    assert len(at.get("plotly_chart")) == 2  # path chart, KL per dimension
    page = text(at)
    for line in ("Reconstruction error (nats): AE", "KL (nats): AE", "-ELBO (nats): AE",
                 "AE reconstructions", "VAE reconstructions", "codes from the prior N(0, I)",
                 "box around its test codes", "dimensions active", "beta = 1"):
        assert line in page, line
    assert "reconstruction NLL" in page  # says which error the per-image numbers are
    originals, ae, vae = (captions(at, i) for i in range(3))
    assert len(originals) == len(ae) == len(vae) == 10 and set(originals) <= set("0123456789")
    assert all(float(e) > 0 for e in ae + vae)  # one error per reconstructed image
    assert len(at.download_button) == 7  # 2 reconstructions, 2 paths, 3 sample grids
    assert at.button(key=MEASURE).label == "Measure continuity and completeness"


def test_a_rerun_encodes_no_picture_and_builds_no_chart(monkeypatch, shipped, tmp_path):
    """Every picture reaches the browser as a data URL made once per content and shared: a second
    visit with the same choices only looks them up (the page's cost per run; bench/README.md)."""
    import ui.images
    import ui.reconstructions

    at = open_page(monkeypatch, shipped, tmp_path / "state")
    assert all(url.startswith("data:image/jpeg;base64,") for image in at.image for url in image.value)
    made = []
    monkeypatch.setattr(ui.images, "encode", lambda *a, **k: made.append("picture"))
    monkeypatch.setattr(ui.reconstructions, "_path_chart", lambda *a, **k: made.append("chart"))
    monkeypatch.setattr(ui.reconstructions, "_kl_chart", lambda *a, **k: made.append("chart"))
    again = AppTest.from_file(ROOT / PAGE, default_timeout=240)
    again.run()
    assert not again.exception and not made
    assert [image.value for image in again.image] == [image.value for image in at.image]
    assert [image.captions for image in again.image] == [image.captions for image in at.image]
    assert len(again.get("plotly_chart")) == 2


def test_buttons_draw_new_images_pairs_and_samples(monkeypatch, shipped, tmp_path):
    at = open_page(monkeypatch, shipped, tmp_path / "state")
    before = captions(at, 1)
    at.button(key="recon_new_images").click().run()
    assert captions(at, 1) != before
    pair = [box.value for box in at.number_input]
    at.button(key="recon_random_pair").click().run()
    assert [box.value for box in at.number_input] != pair
    at.number_input[0].set_value(7).run()  # typed by hand
    assert at.number_input[0].value == 7 and at.session_state["recon_index_a"] == 7
    assert "start: #7" in captions(at, 3)[0]
    at.slider(key="recon_steps").set_value(6).run()
    at.button(key="recon_new_samples").click().run()
    assert not at.exception
    assert at.session_state["recon_sample_seed"] == 1
    assert "Sample seed 1" in text(at)


def test_measure_shows_scores_and_a_restart_reads_them_from_disk(monkeypatch, shipped, tmp_path):
    at = open_page(monkeypatch, shipped, tmp_path / "state")
    assert "Biggest jump along a path" not in text(at)
    at.button(key=MEASURE).click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    page = text(at)
    for line in ("IWAE NLL (nats): AE **–** · VAE", "Biggest jump along a path: AE", "Worst frame along a path: AE",
                 "Prior samples that look real: AE", "Box samples that look real: AE",
                 "Real test images, for comparison", "Variety of prior samples", "Fréchet distance: AE"):
        assert line in page, line
    assert "Measured " in page and "kept for every visitor" in page
    stored = sorted((tmp_path / "state" / "cache" / "scores").glob("*.json"))
    assert [p.name.split("-")[1] for p in stored] == ["ae", "vae"]
    record = json.loads(stored[1].read_text())
    assert 0 <= record["scores"]["prior_confident_share"] <= 1 and record["scores"]["active_units"] <= 2

    # a server restart (empty st caches) and a second visitor: shown at once, no button
    st.cache_data.clear()
    st.cache_resource.clear()
    again = open_page(monkeypatch, shipped, tmp_path / "state")
    assert not [b for b in again.button if b.key == MEASURE]
    assert "Prior samples that look real: AE" in text(again)


def test_without_a_classifier_measures_likelihood_only(monkeypatch, no_judge, tmp_path):
    at = open_page(monkeypatch, no_judge, tmp_path / "state")
    assert "No reference classifier for embedded-mnist" in text(at)
    assert len(at.get("plotly_chart")) == 2
    button = at.button(key=MEASURE)
    assert button.label == "Measure likelihood and active units"
    button.click().run()
    assert not at.exception and not at.error
    page = text(at)
    assert "IWAE NLL (nats): AE **–** · VAE" in page
    assert "Prior samples that look real" not in page
    assert "Measuring this needs a reference classifier for embedded-mnist" in page


def test_colour_pair_with_its_own_data(monkeypatch, colour, tmp_path):
    at = open_page(monkeypatch, colour, tmp_path / "state")
    assert not at.error
    assert len(at.image) == 9
    assert "No reference classifier for cifar10-tiny" in text(at)
    at.button(key=MEASURE).click().run()
    assert not at.exception and not at.error
    assert "bits per colour value: AE" in text(at)


def test_missing_data_still_shows_prior_samples(monkeypatch, colour, tmp_path):
    (colour / "cifar10-tiny.npz").rename(colour / "moved.npz")
    try:
        at = open_page(monkeypatch, colour, tmp_path / "state")
    finally:
        (colour / "moved.npz").rename(colour / "cifar10-tiny.npz")
    assert at.error and "No test images for this pair" in at.error[0].value
    assert len(at.image) == 2  # AE and VAE prior samples
    assert len(at.download_button) == 2
    assert not [b for b in at.button if b.key == MEASURE]
