"""The Lesson page: every step runs on a pair, the step is in the address, a prediction comes
before the reveal, and the whole lesson downloads as one HTML file that needs no network."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

from vae import TrainConfig, Trainer, make_pair
from vae.classifier import save_classifier, train_classifier
from vae.data import load_dataset

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "app_pages" / "0_Lesson.py"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lesson")
    data = load_dataset("embedded-mnist").limit(train=256, test=64)
    models = make_pair("mnist-mlp", data.image_shape, latent_dim=4, seed=0)
    Trainer(models, data, TrainConfig(epochs=1, batch_size=64, eval_batch_size=64),
            out={k: folder / f"tiny-{k}.safetensors" for k in models}).fit()
    torch.manual_seed(0)
    save_classifier(train_classifier(data, epochs=1, batch_size=64, channels=(4, 8, 8)),
                    folder / "classifier-mnist.safetensors")
    return folder


@pytest.fixture
def page(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_EXPLORER_CHECKPOINTS", str(folder))
    monkeypatch.setenv("LATENT_EXPLORER_STATE", str(tmp_path / "state"))
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(PAGE, default_timeout=240)
    yield at
    st.cache_resource.clear()
    st.cache_data.clear()


def sentences(at) -> list[str]:
    return [m.value for m in at.markdown if "class='lesson-sentence'" in m.value]


def test_every_step_runs_and_the_step_is_in_the_address(page):
    page.run()
    assert not page.exception and page.subheader[0].value.startswith("1. What an autoencoder does")
    titles = []
    for step in range(1, 6):
        page.query_params["step"] = str(step)
        page.run()
        assert not page.exception, [e.value for e in page.exception]
        titles.append(page.subheader[0].value)
    assert [t.split(".")[0] for t in titles] == ["1", "2", "3", "4", "5"]
    page.query_params["step"] = "99"  # a link past the end opens the last step
    page.run()
    assert page.subheader[0].value == titles[-1]
    page.query_params["step"] = "x"
    page.run()
    assert page.subheader[0].value == titles[0]


def test_predict_comes_before_the_reveal(page):
    page.query_params["step"] = "3"
    page.run()
    assert not sentences(page) and not page.image  # nothing shown before the class answers
    [reveal] = page.toggle
    assert reveal.disabled
    page.radio[0].set_value(page.radio[0].options[1]).run()
    page.toggle[0].set_value(True).run()
    assert not page.exception
    said = sentences(page)
    assert said and re.search(r"AE \d+% vs VAE \d+%", said[0])  # measured on these models
    assert len(page.image) == 2  # 16 prior samples per model
    assert page.success or page.warning or page.info


def test_next_button_moves_one_step(page):
    page.run()
    page.button[1].click().run()  # Next
    assert page.query_params["step"] == ["2"] or page.query_params["step"] == "2"


def test_the_whole_lesson_is_one_offline_html_file(folder, monkeypatch, tmp_path):
    from ui import lesson_steps
    from ui.lesson_steps import Step

    import plotly.graph_objects as go
    import numpy as np

    steps = [Step("1. a", "**bold** 3 nats", [("pic", np.zeros((4, 4, 3), np.uint8))]),
             Step("2. b", "chart", chart=go.Figure(go.Bar(x=[1], y=[2])), formula=r"\beta"),
             Step("3. c", "q", question=("what?", ["x", "y"], 1))]
    page = lesson_steps.lesson_html("Lesson", steps)
    assert page.count("<img src='data:image/png;base64,") == 1 and "<b>bold</b>" in page
    assert "✔" in page.split("<li>y")[1].split("</li>")[0]
    assert not re.search(r"<script[^>]+src=", page)  # plotly.js is inlined, nothing is fetched
    assert len(page) > 1_000_000  # the inlined plotly.js
    assert "<math " in page and r"\beta" not in page  # the formula as MathML, drawn without a script


def test_the_lesson_files_formulas_are_mathml_with_no_raw_latex_left():
    from ui.lesson_steps import FORMULAS, Step, lesson_html

    page = lesson_html("Lesson", [Step(f"{i}. step", "words", formula=f) for i, f in enumerate(FORMULAS.values())])
    assert page.count("<math ") == len(FORMULAS) == 7
    assert not re.findall(r"\\[A-Za-z]+|\\[,;|]", page)  # no \frac, \mathcal, \, left as text
    assert "&#x003B2;" in page and "<munder>" in page  # β, and the braces under distortion and rate
