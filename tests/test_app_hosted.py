"""Hosted mode against a modified client (issue 19.1, 19.2, 19.4, 19.7): values the widgets never
offered are refused by the server with a clear message, visitors stop only their own jobs, and a
job killed with its server is listed after a restart with a Resume button."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import streamlit as st
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest

from test_app_train import ROOT, app_env, rerun_until, texts, train_page  # noqa: F401 (fixture)
from test_job_records import CHILD
from test_jobs import gated_loader, wait_for
from vae.data import EMBEDDED
from vae.jobs import JobSpec


@pytest.fixture
def hosted(app_env, monkeypatch):
    monkeypatch.setenv("LATENT_EXPLORER_HOSTED", "1")
    st.cache_resource.clear()
    return app_env


def forge(widget, **fields):
    """Make the next run send what a modified client would: any value, whatever the options."""
    ws = WidgetState()
    ws.id = widget.id
    for name, value in fields.items():
        setattr(ws, name, value)
    widget.__class__ = type("Forged", (type(widget),), {"_widget_state": property(lambda self: ws)})
    return widget


def page_text(at: AppTest) -> str:
    return " ".join(texts(at.error) + texts(at.warning) + texts(at.info) + texts(at.caption) + texts(at.markdown))


def submit(at: AppTest) -> AppTest:
    return at.button(key="FormSubmitter:train_form-Start training").click().run()


def test_a_server_path_sent_as_the_data_set_is_refused(hosted, bands_npz):
    """Sent with Start in one request, a value the select box never offered is refused with a
    message (ui.train_widgets._offered_only) and starts nothing; sent alone, Streamlit resets the
    box to its default. The registry refuses the path in any case (test_job_records)."""
    from ui import state

    at = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=30).run()
    for value in (str(bands_npz), "path"):
        jobs = len(state.registry().list())
        forge(at.selectbox(key="train_dataset"), string_value=value)
        submit(at)
        assert not at.exception and "does not offer (Data set)" in " ".join(texts(at.error)), texts(at.error)
        assert len(state.registry().list()) == jobs  # nothing started
        assert at.selectbox(key="train_dataset").value in ("mnist", "fashion-mnist", "cifar10", EMBEDDED, "upload")
        assert not at.text_input  # the server-path field is never drawn on a hosted server
        submit(at)  # the next request, as offered: no refusal left over
        assert not any("does not offer" in t for t in texts(at.error))
    assert all(j.spec.dataset != str(bands_npz) for j in state.registry().list())
    assert str(bands_npz) not in page_text(at) + " ".join(texts(at.error))


def test_an_unknown_preset_gets_a_message_not_a_traceback(hosted):
    from ui import state

    at = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=30).run()
    at.selectbox(key="train_dataset").select(EMBEDDED).run()
    forge(at.selectbox(key="train_preset"), string_value="../../etc")
    submit(at)
    assert not at.exception and at.selectbox(key="train_preset").value in at.selectbox(key="train_preset").options
    assert "does not offer (Preset (architecture and likelihood))" in " ".join(texts(at.error)), texts(at.error)
    assert "../../etc" not in " ".join(texts(at.error)) and not state.registry().list()


@pytest.mark.parametrize("field,value", [("train_batch", 65536), ("train_latent", 4096), ("train_epochs", 500)])
def test_over_cap_numbers_never_reach_a_job(hosted, field, value):
    """Streamlit resets a number outside the input's bounds; what trains is within every cap."""
    from ui import state

    at = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=30).run()
    at.selectbox(key="train_dataset").select(EMBEDDED).run()
    preset = at.selectbox(key="train_preset").value
    at.number_input(key=f"{field}_{preset}").set_value(value)
    submit(at)
    assert not at.exception
    for job in state.registry().list():
        spec = job.spec
        assert spec.batch_size <= 1024 and spec.latent_dim <= 256 and spec.epochs <= 20
    state.registry().shutdown()


def test_the_library_refuses_over_cap_values_the_page_would_pass(hosted):
    """Defence in depth: the registry checks the spec even if a page forgot to."""
    from ui import state
    from vae.errors import ConfigError

    with pytest.raises(ConfigError, match="batch_size=4096 is over this server's limit of 1024"):
        state.registry().submit(JobSpec(dataset=EMBEDDED, batch_size=4096, epochs=1, limit_train=100))


def test_a_visitor_cannot_see_a_stop_button_for_another_visitors_job_nor_watch_a_forged_id(hosted):
    from ui import state

    gate = threading.Event()
    reg = state.registry()
    reg._load_data = gated_loader(gate)
    try:
        job, _ = reg.submit(JobSpec(dataset=EMBEDDED, preset="mnist-mlp", epochs=1, limit_train=100), owner="alice")
        bob = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=30).run()
        assert not [b for b in bob.button if b.key and b.key.startswith("train_stop_")]
        assert "Started by another visitor: only they can stop it" in page_text(bob)
        forge(bob.selectbox(key="train_watch"), string_value="0123456789ab").run()
        assert not bob.exception and bob.selectbox(key="train_watch").value == job.id
        assert job.state in ("queued", "running")
    finally:
        gate.set()


def test_locally_a_teacher_can_stop_any_job(app_env):
    from ui import state

    gate = threading.Event()
    reg = state.registry()
    reg._load_data = gated_loader(gate)
    try:
        job, _ = reg.submit(JobSpec(dataset=EMBEDDED, preset="mnist-mlp", epochs=1, limit_train=100), owner="alice")
        at = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=30).run()
        [stop] = [b for b in at.button if b.key and b.key.startswith("train_stop_")]
        gate.set()
        stop.click().run()
        assert job.join(10) and job.state in ("stopped", "done")
    finally:
        gate.set()


def test_hosted_messages_show_no_server_paths(hosted):
    from ui import state

    text = state.public("DatasetError: /srv/app/.cache/state/uploads/ab12.npz: x_train is missing")
    assert "/srv" not in text and "ab12.npz: x_train is missing" in text
    url = "download failed: https://ossci-datasets.s3.amazonaws.com/mnist/train.gz"
    assert state.public(url) == url


def test_kill_9_of_the_training_server_then_restart_offers_resume(app_env, bands_npz):
    """A real process trains (as the server did), dies by SIGKILL; the next server's Train page lists
    the job as interrupted with a Resume button, and Resume continues from its last saved epoch."""
    from ui import state

    trained = app_env / "state" / "trained"
    code = CHILD.format(root=str(ROOT), trained=str(trained), data=str(bands_npz))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child.stdout.readline()
        assert wait_for(lambda: any('"epochs_done": 2' in p.read_text() or '"epochs_done": 3' in p.read_text()
                                    for p in (trained / ".jobs").glob("*.json")), 90)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    st.cache_resource.clear()
    at = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=30).run()
    assert not at.exception
    assert list(at.dataframe[0].value["state"]) == ["interrupted"]
    [warning] = [w for w in texts(at.warning) if w.startswith("Interrupted after")]
    done = int(warning.split()[2])
    assert done >= 2 and "Resume continues from it" in warning
    at.button(key=[b.key for b in at.button if b.key and b.key.startswith("train_resume_")][0]).click().run()
    [job] = state.registry().list()
    assert wait_for(lambda: job.view().epochs_done > done, 60) and job.view().resumed_from == done
    assert list(rerun_until(at, lambda a: a.progress).dataframe[0].value["state"]) == ["running"]


# --- 19.5: uploads are private to the session that uploaded them, stored once, pruned --------------------
def test_uploads_and_their_pairs_are_seen_only_by_the_visitor_who_uploaded(hosted, bands_npz):
    from ui import state
    from vae.uploads import store_upload, upload_of

    uploads = state.settings().uploads_dir
    stored = store_upload("secret digits.npz", bands_npz.read_bytes(), uploads)
    digest = upload_of(stored.path, uploads)
    job, _ = state.registry().submit(JobSpec(dataset=str(stored.path), preset="mnist-mlp", latent_dim=4, epochs=1,
                                             batch_size=64, limit_train=100), owner="alice")
    assert job.join(30) and job.state == "done"
    st.cache_data.clear()

    alice = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=30)
    alice.session_state["_session_uploads"] = {digest}
    alice.run()
    assert any(job.view().name in o for o in alice.sidebar.selectbox[0].options)
    assert len(alice.dataframe[0].value) == 1

    bob = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=30).run()
    assert not bob.exception
    assert not any(job.view().name in o for o in (bob.sidebar.selectbox[0].options if bob.sidebar.selectbox else []))
    assert "secret" not in " ".join(texts(bob.markdown) + texts(bob.caption) + texts(bob.info))
    assert not bob.dataframe or len(bob.dataframe[0].value) == 0


def test_stored_uploads_are_pruned_by_age_then_size_but_not_while_a_job_uses_them(tmp_path, bands_npz):
    import numpy as np
    from vae.uploads import prune_uploads, store_upload, upload_of

    data = bands_npz.read_bytes()
    stored = []
    for i in range(3):
        arrays = dict(np.load(bands_npz))
        arrays["x_train"] = arrays["x_train"] + i  # different bytes each
        path = tmp_path / f"u{i}.npz"
        np.savez(path, **arrays)
        s = store_upload(path.name, path.read_bytes(), tmp_path / "uploads")
        os.utime(s.path.parent, (time.time() - 3600 * (10 - i),) * 2)  # u0 the least recently used
        stored.append(upload_of(s.path, tmp_path / "uploads"))
    assert store_upload("same bytes.npz", (tmp_path / "u2.npz").read_bytes(), tmp_path / "uploads").path.name == "u2.npz"
    size = sum(f.stat().st_size for f in (tmp_path / "uploads" / stored[0]).rglob("*") if f.is_file())
    assert prune_uploads(tmp_path / "uploads", max_age_s=9.5 * 3600, max_total_bytes=10**9) == [stored[0]]
    assert prune_uploads(tmp_path / "uploads", 10**6, max_total_bytes=size + 10, in_use={stored[1]}) == [stored[2]]
    assert sorted(p.name for p in (tmp_path / "uploads").iterdir()) == [stored[1]]
    del data


def test_a_hosted_app_shows_visitors_no_tracebacks(hosted):
    at = AppTest.from_file(ROOT / "app.py", default_timeout=60).run()
    assert not at.exception and st.get_option("client.showErrorDetails") == "none"
    st.set_option("client.showErrorDetails", "full")  # process-wide: leave it as the other tests expect


def test_a_forged_watch_of_another_visitors_upload_job_shows_nothing_of_it(hosted, bands_npz):
    """19.2/19.5: a modified client sends the id of a job it was never offered (another visitor's,
    on their private upload): the page shows neither it nor its upload, and offers no Stop."""
    from ui import state
    from vae.uploads import store_upload

    gate = threading.Event()
    reg = state.registry()
    reg._load_data = gated_loader(gate)
    stored = store_upload("secret digits.npz", bands_npz.read_bytes(), state.settings().uploads_dir)
    try:
        private, _ = reg.submit(JobSpec(dataset=str(stored.path), preset="mnist-mlp", latent_dim=4, epochs=1,
                                        batch_size=64, limit_train=100), owner="alice")
        public, _ = reg.submit(JobSpec(dataset=EMBEDDED, preset="mnist-mlp", epochs=1, limit_train=100), owner="carol")
        bob = AppTest.from_file(ROOT / "app_pages/1_Train.py", default_timeout=30).run()
        assert bob.selectbox(key="train_watch").value == public.id and len(bob.selectbox(key="train_watch").options) == 1
        forge(bob.selectbox(key="train_watch"), string_value=private.id).run()
        assert not bob.exception and bob.selectbox(key="train_watch").value == public.id
        shown = page_text(bob) + " ".join(str(df.value.to_dict()) for df in bob.dataframe)
        assert "secret" not in shown and private.id not in shown
        assert not [b for b in bob.button if b.key and b.key.startswith(("train_stop_", "train_resume_"))]
        assert private.state in ("queued", "running")
    finally:
        gate.set()
