"""Issue 19.8: a pair with one bad file shows its good member and says what is wrong; an epoch-0
pair reads "–" on Home, not "None"; ?pair=NAME chooses a pair, and a mistyped one says so."""
import threading
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from vae.catalog import find_pairs
from vae.data import EMBEDDED, load_dataset
from vae.train import TrainConfig, Trainer, make_pair

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """`good`: a 1-epoch pair; `half`: a good AE beside a garbage VAE file; `fresh`: stopped at epoch 0."""
    folder = tmp_path_factory.mktemp("shipped")
    data = load_dataset(EMBEDDED).limit(train=128, test=32)
    for name, epochs in (("good", 1), ("fresh", 1)):
        stop = threading.Event()
        if name == "fresh":
            stop.set()
        models = make_pair("mnist-2d", data.image_shape)
        Trainer(models, data, TrainConfig(epochs=epochs, batch_size=64, eval_batch_size=64), stop_event=stop,
                out={k: folder / f"{name}-{k}.safetensors" for k in models}).fit()
    (folder / "half-ae.safetensors").write_bytes((folder / "good-ae.safetensors").read_bytes())
    (folder / "half-vae.safetensors").write_bytes(b"garbage" * 100)
    return folder


@pytest.fixture
def env(shipped, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_EXPLORER_CHECKPOINTS", str(shipped))
    monkeypatch.setenv("LATENT_EXPLORER_STATE", str(tmp_path / "state"))
    for name in ("LATENT_EXPLORER_HOSTED", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


def test_a_pair_with_one_bad_file_keeps_its_good_member(shipped):
    pairs, problems = find_pairs([shipped])
    half = {p.name: p for p in pairs}["half"]
    assert set(half.paths) == {"ae"}
    [problem] = problems
    assert "half-vae.safetensors" in problem and "its AE is shown alone" in problem


def test_home_shows_a_dash_for_figures_an_epoch_0_pair_does_not_have(env):
    at = AppTest.from_file(ROOT / "app.py", default_timeout=60).run()
    assert not at.exception
    table = at.dataframe[0].value.set_index("pair")
    assert table.loc["fresh", "epochs"] == 0
    assert table.loc["fresh", "VAE -ELBO (nats)"] == "–" and "None" not in table.astype(str).to_string()
    assert table.loc["half", "VAE -ELBO (nats)"] == "–" and table.loc["good", "VAE -ELBO (nats)"] != "–"


def test_a_link_with_pair_chooses_it_and_a_mistyped_one_says_so(env):
    at = AppTest.from_file(ROOT / "app.py", default_timeout=60)
    at.query_params["pair"] = "half"
    at.run()
    assert not at.exception and at.session_state["pair_name"] == "half"
    at.sidebar.selectbox[0].select("good").run()  # the visitor may pick another afterwards
    assert at.session_state["pair_name"] == "good"

    typo = AppTest.from_file(ROOT / "app.py", default_timeout=60)
    typo.query_params["pair"] = "hallf"
    typo.run()
    assert any("a pair named “hallf”, and there is none" in w.value for w in typo.sidebar.warning)


def test_a_queued_job_reads_as_waiting_not_loading_data(env, monkeypatch):
    """19.8: only a running job that has no name yet is '(loading data)'; one waiting for a slot
    says it waits, with its place in the queue."""
    from test_jobs import gated_loader
    from ui import state
    from vae.jobs import JobSpec

    monkeypatch.setenv("LATENT_EXPLORER_MAX_JOBS", "1")
    st.cache_resource.clear()
    gate = threading.Event()
    reg = state.registry()
    reg._load_data = gated_loader(gate)
    try:
        running, _ = reg.submit(JobSpec(dataset=EMBEDDED, preset="mnist-mlp", epochs=1, limit_train=100, seed=1))
        queued, _ = reg.submit(JobSpec(dataset=EMBEDDED, preset="mnist-mlp", epochs=1, limit_train=100, seed=2))
        assert (running.state, queued.state) == ("running", "queued")
        at = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=30).run()
        assert not at.exception
        rows = dict(zip(at.dataframe[0].value["state"], at.dataframe[0].value["pair"]))
        assert rows["running"].endswith("(loading data)") and "loading" not in rows["queued"]
        at.selectbox(key="train_watch").select(queued.id).run()
        assert any(i.value.startswith("Waiting for a free training slot: number 1 in the queue") for i in at.info)
    finally:
        gate.set()
