"""ui/live_decode.py on the Grid decoder page (AppTest, the shipped 2-D pair): the live view's
data holds the maps and their inverses but no weights until the browser asks for them, and
the run that answers is the only one that carries them. The in-browser decode itself is
tested in tests/e2e/test_browser_live_decode.py."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from ui import live_decode, maps

ROOT = Path(__file__).resolve().parents[1]
GRID_PAGE = str(ROOT / "app_pages" / "3_Grid_decoder.py")


@pytest.fixture
def shipped_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_EXPLORER_STATE", str(tmp_path / "state"))
    monkeypatch.delenv("LATENT_EXPLORER_CHECKPOINTS", raising=False)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


def _live_data(at: AppTest) -> dict:
    (element,) = at.get("bidi_component")
    return json.loads(element.proto.json)


def test_the_grid_decoder_sends_the_weights_only_in_the_run_that_answers_the_browser(shipped_env):
    if not (ROOT / "checkpoints" / "mnist-2d-vae.safetensors").exists():
        pytest.skip("the shipped mnist-2d pair is not here")
    at = AppTest.from_file(GRID_PAGE, default_timeout=300)
    at.session_state["pair_name"] = "mnist-2d"
    at.run()
    assert not at.exception, at.exception[0].value
    assert live_decode.TITLE in [s.value for s in at.subheader]
    data = _live_data(at)
    assert "weights" not in data and len(json.dumps(data)) < 300_000  # maps and inverses: no weights
    assert data["kinds"] == ["ae", "vae"] and data["maps"]["ae"].startswith("data:image/png;base64,")
    # a 2-D pair opens in each model's own coordinates: both maps are the codes themselves
    for kind in ("ae", "vae"):
        np.testing.assert_allclose(data["inverse"][kind]["weight"], np.eye(2))
    canvas = maps.MapCanvas(tuple(data["canvas"]["xlim"]), tuple(data["canvas"]["ylim"]))
    assert (data["canvas"]["width"], data["canvas"]["height"], data["canvas"]["size"]) == \
        (canvas.width, canvas.height, canvas.size)

    ids = sorted(d["id"] for d in data["decoders"].values())
    at.session_state[live_decode.ASKED] = ids  # what the "need" trigger's callback stores
    at.run()
    answered = _live_data(at)
    assert sorted(answered["weights"]) == ids
    assert answered["weights"][ids[0]]["dtype"] == "float32" and len(answered["weights"][ids[0]]["layers"]) == 3
    at.run()
    assert "weights" not in _live_data(at)  # asked once, sent once


def test_maps_without_a_linear_inverse_and_conv_pairs_keep_the_click_path():
    mlp = {"ae": SimpleNamespace(config=SimpleNamespace(family="mlp"))}
    conv = {"ae": SimpleNamespace(config=SimpleNamespace(family="conv"))}
    linear = SimpleNamespace(transform_is_exact=True, method="pca")
    assert live_decode.unavailable_reason(mlp, linear) is None
    assert "umap map has none" in live_decode.unavailable_reason(
        mlp, SimpleNamespace(transform_is_exact=False, method="umap"))
    assert "conv decoder" in live_decode.unavailable_reason(conv, linear)
