import threading
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent  # AppTest resolves a relative path against this file


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    """Settings pointing at empty temporary folders; fresh process-wide caches before and after."""
    monkeypatch.setenv("LATENT_EXPLORER_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("LATENT_EXPLORER_CHECKPOINTS", str(tmp_path / "shipped"))
    monkeypatch.setenv("LATENT_EXPLORER_TRAIN_THREADS", "1")
    monkeypatch.setenv("LATENT_EXPLORER_HOSTED", "0")
    for name in ("LATENT_EXPLORER_MAX_EPOCHS", "LATENT_EXPLORER_MAX_TRAIN", "LATENT_EXPLORER_LOCAL_PATHS"):
        monkeypatch.delenv(name, raising=False)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tmp_path
    st.cache_resource.clear()  # releasing the registry stops its jobs (cache_resource is process-wide)
    st.cache_data.clear()


def train_page(at: AppTest, source: str, *, preset="mnist-mlp", epochs=2, batch=64, latent=4) -> AppTest:
    """Fill the Train page's form for a local data file and press Start."""
    at.selectbox(key="train_dataset").select("path").run()
    at.text_input(key="train_path").input(source).run()
    at.selectbox(key="train_preset").select(preset).run()
    at.number_input(key=f"train_epochs_{preset}").set_value(epochs)
    at.number_input(key=f"train_batch_{preset}").set_value(batch)
    at.number_input(key=f"train_latent_{preset}").set_value(latent)
    return at.button(key="FormSubmitter:train_form-Start training").click().run()


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def rerun_until(at: AppTest, predicate, timeout=20.0) -> AppTest:
    deadline = time.monotonic() + timeout
    while not predicate(at.run()):
        assert time.monotonic() < deadline, "the page never showed what the test waited for"
        time.sleep(0.2)
    return at


def test_train_page_trains_shows_progress_stops_and_every_page_shows_the_pair(app_env, bands_npz):
    at = AppTest.from_file(ROOT / "app.py", default_timeout=30).run()
    assert not at.exception and "No models yet" in " ".join(texts(at.info))
    at.switch_page("app_pages/1_Train.py").run()
    train_page(at, str(bands_npz), epochs=200, batch=8)
    assert not at.exception and not at.error
    rerun_until(at, lambda a: a.progress)
    assert "Epoch 1/200" in at.progress[0].text and "images/s" in at.progress[0].text
    jobs = at.dataframe[0].value
    assert list(jobs["state"]) == ["running"] and jobs["pair"][0].startswith("mnist-mlp-bands-")
    name = jobs["pair"][0]

    other = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=30).run()  # another visitor or tab
    assert list(other.dataframe[0].value["pair"]) == [name] and other.progress

    t0 = time.monotonic()
    [stop] = [b for b in at.button if b.key and b.key.startswith("train_stop_")]
    stop.click().run()
    assert time.monotonic() - t0 < 10
    assert any(f"**{name}** is saved and in the model picker" in w for w in texts(at.warning)), texts(at.warning)
    assert at.sidebar.selectbox[0].value == name and at.session_state["pair_name"] == name

    # the home page, with this visitor's choice (Home is a function page: AppTest cannot switch to it)
    home = AppTest.from_file(ROOT / "app.py", default_timeout=60)
    home.session_state["pair_name"] = at.session_state["pair_name"]
    home.run()
    assert not home.exception and home.sidebar.selectbox[0].value == name
    assert name in list(home.dataframe[0].value["pair"])


@pytest.mark.parametrize("native_bf16", [True, False])
def test_mixed_precision_is_offered_where_bfloat16_is_native(app_env, bands_npz, monkeypatch, native_bf16):
    from ui import state, train_widgets

    monkeypatch.setattr(train_widgets, "has_fast_bfloat16", lambda device: native_bf16)
    at = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=30).run()
    at.selectbox(key="train_dataset").select("path").run()
    at.text_input(key="train_path").input(str(bands_npz)).run()
    at.selectbox(key="train_preset").select("mnist-2d").run()
    boxes = [c for c in at.checkbox if c.key == "train_bf16_mnist-2d"]
    assert len(boxes) == (1 if native_bf16 else 0)
    if native_bf16:
        assert boxes[0].value is True  # on by default: faster, same reported figures
    at.number_input(key="train_epochs_mnist-2d").set_value(1)
    at.button(key="FormSubmitter:train_form-Start training").click().run()
    [job] = state.registry().list()
    assert job.spec.precision == ("bfloat16" if native_bf16 else "float32")
    assert job.spec.train_config().precision == job.spec.precision
    rerun_until(at, lambda a: a.success)
    assert not at.exception


def test_repeating_a_running_configuration_shows_the_same_job(app_env, bands_npz):
    at = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=30).run()
    train_page(at, str(bands_npz), epochs=200, batch=8)
    again = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=30).run()
    train_page(again, str(bands_npz), epochs=200, batch=8)
    assert any("already running" in i for i in texts(again.info))
    assert len(again.dataframe[0].value) == 1
    assert len([t for t in threading.enumerate() if t.name.startswith("train-")]) == 1


def test_a_finished_job_says_so_and_selects_its_pair(app_env, bands_npz):
    at = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=30).run()
    train_page(at, str(bands_npz), epochs=1)
    rerun_until(at, lambda a: a.success)
    assert "is now in the model picker" in at.success[0].value
    assert at.sidebar.selectbox[0].value == at.session_state["pair_name"] == at.dataframe[0].value["pair"][0]
    assert len(at.get("plotly_chart")) == 2  # the loss curves and the latent maps


def test_bad_data_is_reported_plainly_with_other_choices(app_env, tmp_path):
    at = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=30).run()
    at.selectbox(key="train_dataset").select("path").run()
    at.text_input(key="train_path").input(str(tmp_path / "nowhere.npz")).run()
    assert "no such file or folder" in at.error[0].value and "shipped with the app" in at.error[0].value
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    at.text_input(key="train_path").input(str(broken)).run()
    train_page(at, str(broken))
    rerun_until(at, lambda a: a.error)
    assert at.error[0].value.startswith("Training failed: DatasetError:") and "not a readable .npz" in at.error[0].value
    assert any(b.label == "Train these settings on the shipped MNIST digits" for b in at.button)


def test_hosted_mode_hides_server_paths_and_caps_the_form(app_env, monkeypatch):
    monkeypatch.setenv("LATENT_EXPLORER_HOSTED", "1")
    st.cache_resource.clear()
    at = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=30).run()
    assert not at.exception
    assert "path" not in at.selectbox(key="train_dataset").options
    preset = at.selectbox(key="train_preset").value
    assert at.number_input(key=f"train_epochs_{preset}").max == 20
    assert at.number_input(key=f"train_limit_{preset}").value == 20_000


def test_clearing_the_servers_cache_stops_its_training_jobs(app_env, bands_npz):
    from ui import state

    at = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=30).run()
    train_page(at, str(bands_npz), epochs=200, batch=8)
    rerun_until(at, lambda a: a.progress)
    [job] = state.registry().list()
    st.cache_resource.clear()  # what the app menu's "Clear cache" does
    assert job.view().state == "stopped"
    assert not [t for t in threading.enumerate() if t.name.startswith("train-")]
    # a fresh registry, and no thread of the old one races it; it reads the stopped job from disk
    [again] = state.registry().list()
    assert again is not job and again.id == job.id and again.state == "stopped" and again.thread is None


def test_the_train_page_starts_a_beta_sweep_that_the_beta_dial_then_finds(app_env, bands_npz):
    """Issue 18: a sweep from the Train page; per-member rows while it runs and when done; its family
    is in the catalog the β dial reads, and the model picker does not take it for a pair."""
    from ui import state
    from vae.sweep import find_families

    at = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=30).run()
    at.selectbox(key="train_dataset").select("path").run()
    at.text_input(key="train_path").input(str(bands_npz)).run()
    at.selectbox(key="train_preset").select("mnist-2d").run()
    at.radio(key="train_kinds_mnist-2d").set_value(("sweep",))
    at.multiselect(key="train_betas_mnist-2d").set_value([0.0, 1.0, 4.0])
    at.number_input(key="train_epochs_mnist-2d").set_value(1)
    at.button(key="FormSubmitter:train_form-Start training").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    [job] = state.registry().list()
    assert job.spec.betas == (0.0, 1.0, 4.0)
    assert job.join(60) and job.state == "done", job.view().error
    at.run()
    assert any("on the **β dial** page" in s.value for s in at.success)
    [members] = [d.value for d in at.dataframe if "model" in d.value.columns]
    assert list(members["model"]) == ["β = 0 (AE)", "β = 1", "β = 4"] and list(members["saved"]) == ["yes"] * 3
    [family] = find_families(state.model_folders())
    assert family.name == job.view().name and family.betas == [0.0, 1.0, 4.0]
    assert job.view().name not in [p.name for p in state.list_pairs()[0]]
