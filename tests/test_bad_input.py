"""Bad input and faults: broken checkpoint files beside good ones, nonsense in every Train form
field, and a training process killed (SIGKILL) at a random moment while it saves every epoch."""
from __future__ import annotations

import io
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

from vae import TrainConfig, Trainer, load_checkpoint, make_pair, read_metadata
from vae.catalog import find_pairs
from vae.data import EMBEDDED, load_dataset
from vae.errors import ConfigError
from vae.jobs import JobRegistry, JobSpec

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["app.py", "app_pages/1_Train.py", "app_pages/2_Latent_map.py", "app_pages/3_Grid_decoder.py",
         "app_pages/4_Reconstructions.py", "app_pages/5_Draw.py"]


# --- broken checkpoint files ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    """A tiny good 2-D pair, and beside it one file of each kind of damage a folder can hold."""
    folder = tmp_path_factory.mktemp("checkpoints")
    data = load_dataset(EMBEDDED).limit(train=256, test=64)
    torch.manual_seed(0)
    models = make_pair("mnist-2d", data.image_shape)
    Trainer(models, data, TrainConfig(epochs=1, batch_size=64, eval_batch_size=64),
            out={k: folder / f"tiny-{k}.safetensors" for k in models}).fit()
    good = (folder / "tiny-vae.safetensors").read_bytes()
    (folder / "garbage-ae.safetensors").write_bytes(b"garbage" * 100)
    (folder / "cut-vae.safetensors").write_bytes(good[:100])  # cut inside the header
    (folder / "halved-vae.safetensors").write_bytes(good[: len(good) // 2])  # cut inside the weights
    torch.save({"w": torch.zeros(1)}, folder / "pickle-ae.safetensors")  # a torch pickle, renamed
    from safetensors.torch import load_file, save_file

    save_file({"w": torch.zeros(2)}, str(folder / "foreign-vae.safetensors"))  # safetensors, not ours
    for kind in ("ae", "vae"):  # a readable header whose weights do not fit it: fails only when loaded
        meta = read_metadata(folder / f"tiny-{kind}.safetensors")
        meta["model_config"]["latent_dim"] = 5
        save_file(load_file(folder / f"tiny-{kind}.safetensors"), str(folder / f"mismatch-{kind}.safetensors"),
                  metadata={"latent_explorer": json.dumps(meta)})
    return folder


BROKEN = ["garbage-ae", "cut-vae", "halved-vae", "pickle-ae", "foreign-vae"]


@pytest.fixture
def app_env(checkpoint_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_EXPLORER_CHECKPOINTS", str(checkpoint_dir))
    monkeypatch.setenv("LATENT_EXPLORER_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("LATENT_EXPLORER_TRAIN_THREADS", "1")
    for name in ("LATENT_EXPLORER_HOSTED", "LATENT_EXPLORER_MAX_EPOCHS", "LATENT_EXPLORER_MAX_TRAIN", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tmp_path
    st.cache_resource.clear()  # releasing the registry stops its jobs
    st.cache_data.clear()


def test_the_catalog_skips_each_broken_file_with_its_name(checkpoint_dir):
    pairs, problems = find_pairs([checkpoint_dir])
    assert sorted(p.name for p in pairs) == ["mismatch", "tiny"]
    for name in BROKEN:
        assert sum(f"{name}.safetensors" in p for p in problems) == 1, (name, problems)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_beside_broken_files_and_names_them_in_the_sidebar(app_env, page):
    at = AppTest.from_file(ROOT / page, default_timeout=120)
    at.session_state["pair_name"] = "tiny"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.sidebar.selectbox[0].value == "tiny"
    warnings = " ".join(w.value for w in at.sidebar.warning)
    for name in BROKEN:
        assert f"{name}.safetensors" in warnings



@pytest.mark.parametrize("page", [
    "app.py", "app_pages/1_Train.py", "app_pages/4_Reconstructions.py", "app_pages/2_Latent_map.py",
    "app_pages/3_Grid_decoder.py", "app_pages/5_Draw.py",
])
def test_choosing_a_pair_whose_weights_do_not_load_shows_an_error_not_a_traceback(app_env, page):
    at = AppTest.from_file(ROOT / page, default_timeout=120)
    at.session_state["pair_name"] = "mismatch"
    at.run()
    assert not at.exception, [e.value[:200] for e in at.exception]
    if page not in ("app.py", "app_pages/1_Train.py"):  # those two never load the weights
        assert any("mismatch-" in e.value and "do not match" in e.value for e in at.error)


# --- nonsense in the Train form --------------------------------------------------------------------------
# The browser will not submit a number_input past its bounds (the field says why), and the server
# does not take one either: a value a client sends past min/max is replaced by the widget's default
# (streamlit's NumberInputSerde.deserialize; 1.51 passed it through). Nonsense therefore never reaches a job from the form; the library's own checks
# (test_the_library_refuses_nonsense_in_a_job_spec) guard every other caller.
NONSENSE = [("epochs", 10**9, "epochs"), ("batch", -5, "batch_size"), ("batch", 0, "batch_size"), ("lr", 5.0, "lr"),
            ("lr", -0.001, "lr"), ("latent", 0, "latent_dim"), ("latent", 10**6, "latent_dim"),
            ("beta", -3.0, "beta"), ("limit", -7, "limit_train")]


def submit_with(at: AppTest, field: str, value) -> tuple[AppTest, float]:
    """Embedded digits, the preset's defaults but `value` sent for `field`; (the page, that field's default)."""
    at.selectbox(key="train_dataset").select(EMBEDDED).run()
    preset = at.selectbox(key="train_preset").value
    widget = at.number_input(key=f"train_{field}_{preset}")
    default = widget.value
    assert not (widget.min <= value <= widget.max)  # the browser could not have sent it
    widget.set_value(value)
    return at.button(key="FormSubmitter:train_form-Start training").click().run(), default


@pytest.mark.parametrize("field,value,spec_field", NONSENSE)
def test_nonsense_past_the_form_bounds_never_reaches_a_job(app_env, field, value, spec_field):
    at, default = submit_with(AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=60).run(), field, value)
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    from ui import state

    [job] = state.registry().list()  # the job runs the form's default, not the nonsense
    assert getattr(job.spec, spec_field) == default != value


def test_hosted_limits_hold_against_a_form_past_them(app_env, monkeypatch):
    monkeypatch.setenv("LATENT_EXPLORER_HOSTED", "1")
    st.cache_resource.clear()
    at = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=60).run()
    options = at.selectbox(key="train_dataset").options  # their labels
    assert "Upload (.npz or .zip)" in options and not any("on this server" in o for o in options)
    at, default = submit_with(at, "epochs", 500)
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    from ui import state

    [job] = state.registry().list()
    assert job.spec.epochs == default <= 20 and job.spec.limit_train <= 20_000


def test_a_job_the_server_cannot_take_is_refused_with_a_clear_message(app_env, bands_npz):
    from ui import state

    registry = state.registry()  # one job running (1 at a time) and 8 waiting: the queue is full
    for seed in range(9):
        registry.submit(JobSpec(dataset=str(bands_npz), preset="mnist-2d", epochs=200, batch_size=8, seed=seed))
    at = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=60).run()
    at.selectbox(key="train_dataset").select(EMBEDDED).run()
    at.button(key="FormSubmitter:train_form-Start training").click().run()
    assert not at.exception
    assert any(e.value.startswith("Cannot start this job: the training queue is full") for e in at.error), \
        [e.value for e in at.error]
    assert len(registry.list()) == 9


@pytest.mark.parametrize("field,value", [
    ("epochs", 0), ("epochs", -1), ("epochs", 10**9), ("epochs", 2.5), ("epochs", "3"), ("epochs", math.nan),
    ("batch_size", 0), ("batch_size", -64), ("batch_size", 10**7), ("batch_size", 64.0),
    ("lr", 0), ("lr", -1e-3), ("lr", math.nan), ("lr", math.inf), ("lr", 2.0), ("lr", "0.01"),
    ("latent_dim", 0), ("latent_dim", -2), ("latent_dim", 10**6), ("latent_dim", 2.5),
    ("beta", -1.0), ("beta", math.nan), ("beta", math.inf),
    ("seed", "x"), ("seed", 1.5),
    ("limit_train", 0), ("limit_train", -3), ("limit_train", 2.5), ("limit_test", 0),
    ("kinds", "xyz"), ("kinds", ()), ("preset", "no-such-preset"), ("dataset", ""), ("dataset", "   "),
    ("seed", 2**70),
    ("epochs", True),
])
def test_the_library_refuses_nonsense_in_a_job_spec(field, value):
    with pytest.raises(ConfigError, match=field if field not in ("dataset",) else "dataset is empty"):
        JobSpec(**{field: value})


def test_a_hosted_registry_refuses_specs_past_its_limits(tmp_path):
    registry = JobRegistry(tmp_path, max_epochs=20, max_train_images=20_000)
    with pytest.raises(ConfigError, match="epochs=21 is over this server's limit of 20"):
        registry.submit(JobSpec(epochs=21, limit_train=100))
    with pytest.raises(ConfigError, match="limit_train=None is over"):
        registry.submit(JobSpec(epochs=1))
    assert registry.list() == []


# --- SIGKILL while a checkpoint is written ---------------------------------------------------------------
def test_sigkill_of_a_training_process_at_a_random_moment_leaves_loadable_checkpoints(tmp_path):
    """`python -m vae.train` saving every epoch (each save a temporary file, fsync, os.replace), killed
    at a random moment: if a save is in flight then, it is killed inside it."""
    prefix = tmp_path / "killed"
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    cmd = [sys.executable, "-m", "vae.train", "--preset", "mnist-mlp", "--data", EMBEDDED, "--epochs", "500",
           "--checkpoint-every", "1", "--limit-train", "128", "--limit-test", "32", "--batch-size", "64",
           "--threads", "1", "--out", str(prefix)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    files = [Path(f"{prefix}-{k}.safetensors") for k in ("ae", "vae")]
    try:
        deadline = time.monotonic() + 120
        while not all(f.exists() for f in files):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        # then the next moment a temporary checkpoint file exists (a save in flight), or 2 s at most
        until, in_flight = time.monotonic() + 2.0, False
        while time.monotonic() < until and not in_flight:
            in_flight = any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL, f"the process ended before the kill (seed {seed})"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    loaded = {f.name: load_checkpoint(f) for f in files}
    assert all(ck.epoch >= 1 for ck in loaded.values()), (seed, in_flight)
    assert {ck.config.latent_dim for ck in loaded.values()} == {make_pair("mnist-mlp", (1, 28, 28))["vae"].config.latent_dim}
    pairs, problems = find_pairs([tmp_path])  # a leftover temporary file is not taken for a checkpoint
    assert [p.name for p in pairs] == ["killed"] and problems == [], (seed, in_flight, problems)


# --- hostile uploads (vae/uploads.py, as the Train page calls it) ----------------------------------------
# Each refusal must be a DatasetError (the page shows it; anything else is a traceback) that names
# the member as it is inside the upload, never the server's folder.
def _refusal(tmp_path, name: str, data: bytes, limits=None) -> str:
    from vae.errors import DatasetError
    from vae.uploads import UploadLimits, store_upload

    folder = tmp_path / "uploads"
    with pytest.raises(DatasetError) as refused:
        store_upload(name, data, folder, limits or UploadLimits())
    message = str(refused.value)
    assert str(tmp_path) not in message and ".upload-" not in message, message
    assert not any(p.is_file() for p in folder.rglob("*")) if folder.exists() else True  # nothing stored
    return message


def _folder_zip(files: dict[str, bytes]) -> bytes:
    from test_uploads import zip_bytes

    return zip_bytes(files)


def _images(classes=("a", "b"), size=(8, 8), name="{i}.png", n=2) -> dict[str, bytes]:
    from test_uploads import png

    return {f"set/{split}/{c}/{name.format(i=i)}": png(size=size, value=40 * i)
            for split in ("train", "test") for c in classes for i in range(n)}


@pytest.mark.parametrize("long_part", ["file", "class"])
def test_a_member_name_over_the_file_systems_limit_is_refused_by_its_name(tmp_path, long_part):
    files = _images()
    long = "é" * 150  # 300 bytes in UTF-8: over the 255 bytes a file name may have
    for split in ("train", "test"):  # in both splits, so that the classes match
        files[f"set/{split}/a/{long}.png" if long_part == "file" else f"set/{split}/{long}/0.png"] = files["set/train/a/0.png"]
    message = _refusal(tmp_path, "long.zip", _folder_zip(files))
    assert "long.zip" in message and "too long" in message and "255" in message


def test_an_unreadable_image_is_named_as_inside_the_zip(tmp_path):
    files = _images()
    files["set/train/a/1.png"] = files["set/train/a/1.png"][:45]  # its header, then cut inside the pixels: fails when decoded
    message = _refusal(tmp_path, "cut.zip", _folder_zip(files))
    assert "cut.zip" in message and "set/train/a/1.png" in message


def test_one_class_limit_for_zips_and_npz_files(tmp_path):
    import numpy as np
    from test_uploads import good_arrays, npz_bytes
    from vae.uploads import UploadLimits

    limits = UploadLimits(max_classes=3)
    message = _refusal(tmp_path, "many.zip", _folder_zip(_images(classes="abcd", n=1)), limits)
    assert "4 classes" in message and "at most 3" in message
    arrays = good_arrays()
    arrays["y_train"] = np.arange(len(arrays["y_train"])) % 4
    assert "below 3" in _refusal(tmp_path, "many.npz", npz_bytes(**arrays), limits)
    assert UploadLimits().max_classes == 1000  # what the server takes by default, zip or npz


def test_images_too_small_to_train_on_are_refused_with_the_sizes_that_work(tmp_path):
    from test_uploads import good_arrays, npz_bytes

    for name, data in [("dots.zip", _folder_zip(_images(size=(1, 1)))),
                       ("dots.npz", npz_bytes(**good_arrays(shape=(1, 1))))]:
        message = _refusal(tmp_path, name, data)
        assert "1×1" in message and "from 8×8 to 256×256" in message, message


@pytest.mark.parametrize("first,second", [("set/train/Cat/0.png", "set/train/cat/0.png"),
                                          ("set/train/a/x.png", "set/train/a/X.png"),
                                          ("set/train/a/x.png", "set/train/a/x.png")])
def test_names_that_differ_only_in_case_are_refused(tmp_path, first, second):
    """Unpacked, one would overwrite the other (or on a case-insensitive disk, merge two classes)."""
    import zipfile

    from test_uploads import png

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z, pytest.warns(UserWarning) if first == second else nullcontext():
        for member in (first, second):  # in both splits, so that the classes match
            for split in ("train", "test"):
                z.writestr(member.replace("/train/", f"/{split}/"), png())
        for member, data in _images().items():
            z.writestr(member, data)
    message = _refusal(tmp_path, "case.zip", buf.getvalue())
    assert first in message and second in message and "case" in message


def test_names_with_control_characters_or_bytes_that_are_not_utf8_are_refused(tmp_path):
    files = _images()
    files["set/train/a/b\nc.png"] = files["set/train/a/0.png"]
    assert "control character" in _refusal(tmp_path, "ctrl.zip", _folder_zip(files))
    files = _images()
    files["set/train/a/é.png"] = files["set/train/a/0.png"]  # the zip flags its names as UTF-8...
    data = _folder_zip(files).replace("é".encode(), b"\xff\xfe")  # ...then holds bytes that are not
    message = _refusal(tmp_path, "bytes.zip", data)
    assert message.startswith("bytes.zip") and "utf-8" in message.lower(), message


@pytest.mark.parametrize("first,second", [("set/train/a/\u00e9.png", "set/train/a/e\u0301.png"),
                                          ("set/train/caf\u00e9/0.png", "set/train/cafe\u0301/0.png"),
                                          ("set/train/a/\u00c9.png", "set/train/a/e\u0301.png")])
def test_names_that_differ_only_in_how_an_accent_is_encoded_are_refused(tmp_path, first, second):
    """Kin of the case clash: é as one code point (NFC) or as e + a combining accent (NFD) look the
    same, merge on a normalisation-insensitive disk (macOS), and would be two look-alike classes."""
    files = _images()
    for member in (first, second):
        for split in ("train", "test"):
            files[member.replace("/train/", f"/{split}/")] = files["set/train/a/0.png"]
    message = _refusal(tmp_path, "accents.zip", _folder_zip(files))
    assert first in message and second in message and "accents are encoded" in message
    assert ascii(first) in message and ascii(second) in message, message  # the difference, made visible
