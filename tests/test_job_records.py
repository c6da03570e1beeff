"""The registry's truth on disk and its hosted limits (issue 19.1-19.4, 14.2): a modified client
cannot get past the library, a visitor stops only their own jobs, no epoch is lost on stop,
restart or kill -9, and two registries on one state folder never train one configuration twice."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vae import ConfigError, load_checkpoint
from vae.data import EMBEDDED
from vae.jobs import HostedLimits, JobRegistry

from test_jobs import gated_loader, tiny_spec, wait_for

ROOT = Path(__file__).resolve().parent.parent


def hosted_registry(tmp_path, **kw):
    uploads = tmp_path / "uploads"
    uploads.mkdir(exist_ok=True)
    limits = HostedLimits(max_epochs=5, max_train_images=500, data_roots=(str(uploads),), **kw)
    return JobRegistry(tmp_path / "trained", train_threads=1, limits=limits), uploads


# --- 19.1, 19.2, 19.7: the library refuses what the widgets never offered ---------------------------------
@pytest.mark.parametrize("overrides,message", [
    ({"dataset": "SERVER_PATH"}, "not offered on this server"),
    ({"batch_size": 65536}, "batch_size=65536 is over this server's limit of 1024"),
    ({"latent_dim": 4096}, "latent_dim=4096 is over this server's limit of 256"),
    ({"epochs": 6}, "epochs=6 is over"),
    ({"limit_train": None}, "limit_train=None is over"),
])
def test_a_hosted_registry_refuses_server_paths_and_over_cap_values(tmp_path, bands_npz, overrides, message):
    reg, _ = hosted_registry(tmp_path)
    base = dict(epochs=1, limit_train=100, dataset=EMBEDDED)
    if overrides.get("dataset") == "SERVER_PATH":
        overrides = {"dataset": str(bands_npz)}  # a real file elsewhere on the server
    with pytest.raises(ConfigError, match=message) as err:
        reg.submit(tiny_spec(bands_npz, **{**base, **overrides}))
    assert str(tmp_path) not in str(err.value)  # never echoes (or confirms) a server path
    assert reg.list() == [] and not list((tmp_path / "trained").glob("*.safetensors"))


def test_a_hosted_registry_says_the_same_of_a_path_whether_or_not_it_exists(tmp_path, bands_npz):
    """19.1: the refusal cannot be used to probe the server's files, nor escape the uploads folder by '..'."""
    reg, uploads = hosted_registry(tmp_path)
    (tmp_path / "escape.npz").write_bytes(bands_npz.read_bytes())
    messages = set()
    for path in (bands_npz, tmp_path / "no-such-file.npz", f"{uploads}/../escape.npz", "/etc/passwd", "/"):
        with pytest.raises(ConfigError, match="not offered on this server") as err:
            reg.submit(tiny_spec(path, epochs=1, limit_train=100))
        messages.add(str(err.value))
    assert len(messages) == 1 and reg.list() == []


def test_a_hosted_registry_trains_on_its_own_uploads_folder(tmp_path, bands_npz):
    reg, uploads = hosted_registry(tmp_path)
    upload = uploads / "ab12.npz"
    upload.write_bytes(bands_npz.read_bytes())
    job, created = reg.submit(tiny_spec(upload, epochs=1, limit_train=100), owner="alice")
    assert created and job.join(30) and job.state == "done"


def test_hosted_visitors_stop_only_their_own_jobs_and_have_a_queue_share(tmp_path, bands_npz):
    import threading
    gate = threading.Event()
    reg, uploads = hosted_registry(tmp_path, max_jobs_per_owner=2)
    reg._load_data = gated_loader(gate)
    upload = uploads / "d.npz"
    upload.write_bytes(bands_npz.read_bytes())
    try:
        specs = [tiny_spec(upload, epochs=1, limit_train=100, seed=s) for s in range(3)]
        a1, _ = reg.submit(specs[0], owner="alice")
        a2, _ = reg.submit(specs[1], owner="alice")
        with pytest.raises(ConfigError, match="you already have 2 training job"):
            reg.submit(specs[2], owner="alice")
        assert reg.submit(specs[0], owner="bob") == (a1, False)  # bob watches alice's job...
        with pytest.raises(ConfigError, match="only the visitor who started"):
            reg.stop(a1.id, owner="bob")  # ...but may not stop it
        with pytest.raises(ConfigError, match="only the visitor who started"):
            reg.stop(a1.id, owner="")
        assert a1.state in ("queued", "running") and a2.state == "queued"
        assert reg.stop(a2.id, owner="alice") and a2.state == "stopped"
        reg.submit(specs[2], owner="alice")  # a freed share
    finally:
        gate.set()
        reg.shutdown()


def test_locally_anyone_may_stop_any_job(tmp_path, bands_npz):
    import threading
    gate = threading.Event()
    reg = JobRegistry(tmp_path / "trained", train_threads=1, load_data=gated_loader(gate))
    try:
        job, _ = reg.submit(tiny_spec(bands_npz), owner="alice")
        assert reg.stop(job.id, owner="bob")
    finally:
        gate.set()
        reg.shutdown()


def test_clean_up_deletes_stale_temporary_files_and_keeps_those_of_a_save_in_flight(tmp_path):
    """19.4: what a crash mid-save leaves goes at the next start; a live job's save, or a recent
    file nobody explains (another process may be writing it), stays."""
    from vae.job_records import TMP_MAX_AGE_S, JobRecords

    records, checkpoints = JobRecords(tmp_path / "trained" / ".jobs"), tmp_path / "trained"
    old = time.time() - TMP_MAX_AGE_S - 60

    def tmp(folder, name, mtime=None):
        path = folder / name
        path.write_bytes(b"")
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path
    dead = tmp(checkpoints, ".dead-pair-vae.safetensors.ab12.tmp")  # a known pair, its process gone
    live = tmp(checkpoints, ".live-pair-ae.safetensors.cd34.tmp", old)  # a job still training it
    unknown_new = tmp(checkpoints, ".other-vae.safetensors.ef56.tmp")
    unknown_old = tmp(checkpoints, ".other-ae.safetensors.ab78.tmp", old)
    record_old = tmp(records.folder, ".abc.json.x1.tmp", time.time() - 120)
    record_new = tmp(records.folder, ".def.json.x2.tmp")
    removed = records.clean_stale_tmp(checkpoints, busy_names={"live-pair"}, known_names={"dead-pair", "live-pair"})
    assert sorted(removed) == sorted([dead, unknown_old, record_old])
    assert live.exists() and unknown_new.exists() and record_new.exists()
    assert not (dead.exists() or unknown_old.exists() or record_old.exists())


# --- 19.3: stop, then the same settings again, continues ------------------------------------------------
def test_stop_then_start_again_resumes_and_never_overwrites_a_later_epoch(tmp_path, bands_npz):
    reg = JobRegistry(tmp_path / "trained", train_threads=1)
    spec = tiny_spec(bands_npz, epochs=200, batch_size=8)
    try:
        first, _ = reg.submit(spec)
        assert wait_for(lambda: first.view().epochs_done >= 1, 60)
        reg.stop(first.id)
        assert first.join(10) and first.state == "stopped"
        saved = load_checkpoint(first.view().checkpoints["vae"])
        assert saved.epoch >= 1
        again, created = reg.submit(spec)
        assert created and again is not first
        assert wait_for(lambda: again.view().progress is not None, 30)
        reg.stop(again.id)  # within its first resumed epoch
        assert again.join(10)
        view = again.view()
        assert view.resumed_from == saved.epoch and any("Resumed from the saved checkpoint" in n for n in view.notes)
        after = load_checkpoint(view.checkpoints["vae"])
        assert (after.epoch, after.batches_done) >= (saved.epoch, saved.batches_done)
        assert len(after.history) == after.epoch  # one history entry per epoch: none lost, none twice
        assert [j.id for j in reg.list()] == [again.id] and reg.get(first.id) is again  # one row
    finally:
        reg.shutdown()


# --- 19.4, 14.2: kill -9 of a real server process, then a restart; two processes on one folder --------------
CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from vae.jobs import JobRegistry, JobSpec
    reg = JobRegistry({trained!r}, train_threads=1, runner={runner!r})
    job, _ = reg.submit(JobSpec(dataset={data!r}, preset="mnist-mlp", latent_dim=4, epochs=200, batch_size=8,
                                lr=3e-3))
    print(job.id, flush=True)
    time.sleep(600)
""").replace("{runner!r}", "'thread'")  # what test_app_hosted's restart runs (a server that trains in a thread)
PROCESS_CHILD = CHILD.replace("runner='thread'", "runner='process'")  # a server whose job trains in its own child


def records_of(trained: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (trained / ".jobs").glob("*.json")]


def start_server_process(code: str) -> tuple[subprocess.Popen, str]:
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    return child, child.stdout.readline().strip()


def test_a_second_process_lists_attaches_to_and_stops_the_first_ones_job(tmp_path, bands_npz):
    """Two JobRegistry instances in two OS processes on one state folder: the second lists the first's
    job with its live progress, a submit of the same settings attaches to it, and Stop there reaches it."""
    trained = tmp_path / "trained"
    child, job_id = start_server_process(PROCESS_CHILD.format(root=str(ROOT), trained=str(trained), data=str(bands_npz)))
    other = JobRegistry(trained, train_threads=1, runner="process")
    try:
        [job] = other.list()
        assert job.id == job_id and not job.local
        assert wait_for(lambda: (p := job.view().progress) is not None and p.step > 20, 90)
        step = job.view().progress.step
        assert wait_for(lambda: job.view().progress.step > step, 30)  # live, read from the run's log
        assert job.view().state == "running"
        spec = tiny_spec(bands_npz, epochs=200, batch_size=8)
        assert other.submit(spec) == (job, False)  # no second run of one configuration
        assert other.stop(job.id)  # locally anyone may stop any job, whichever process runs it
        assert wait_for(lambda: job.view().state == "stopped", 15)
        assert load_checkpoint(job.view().checkpoints["vae"]).extra["stopped"] is True
        assert wait_for(lambda: not other.records.busy(spec.key()), 15)  # the first process let it go
        assert wait_for(lambda: records_of(trained)[0]["state"] == "stopped", 15)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        other.shutdown()


@pytest.mark.parametrize("code", [CHILD, PROCESS_CHILD], ids=["thread", "process"])
def test_kill_9_during_training_then_restart_lists_the_job_and_resumes_from_its_last_epoch(tmp_path, bands_npz, code):
    trained = tmp_path / "trained"
    child, job_id = start_server_process(code.format(root=str(ROOT), trained=str(trained), data=str(bands_npz)))

    def epochs_on_disk():
        rec = records_of(trained)
        return rec[0]["epochs_done"] if rec and rec[0].get("checkpoints") else 0
    try:
        assert wait_for(lambda: epochs_on_disk() >= 2, 90), "the child never saved 2 epochs"
    finally:
        os.kill(child.pid, signal.SIGKILL)  # no shutdown hook runs: what a crash or an OOM kill does
        child.wait(10)
    stale = trained / ".mnist-mlp-bands-abcdef-vae.safetensors.x1y2.tmp"
    stale.write_bytes(b"")  # what a crash in the middle of a save leaves
    os.utime(stale, (time.time() - 3600, time.time() - 3600))

    reg = JobRegistry(trained, train_threads=1)  # the restarted server
    try:
        # a worker process outlives its server only until it notices: it saves and leaves, freeing the settings
        assert wait_for(lambda: reg.list()[0].view().state == "interrupted", 15)
        [found] = reg.list()
        view = found.view()
        saved = load_checkpoint(view.checkpoints["vae"])
        assert found.id == job_id and view.epochs_done == saved.epoch >= 2
        # and once nobody holds the settings any more, the record says so too (for every other process)
        assert wait_for(lambda: reg.list() and records_of(trained)[0]["state"] == "interrupted", 15)
        reg._load_records()  # what a restart does once the settings are free: the stale temporary file goes
        assert not stale.exists()
        resumed = reg.resume(found.id)
        assert wait_for(lambda: resumed.view().epochs_done > saved.epoch, 60)
        assert resumed.view().resumed_from == saved.epoch
        reg.stop(resumed.id)
        assert resumed.join(10)
        ck = load_checkpoint(resumed.view().checkpoints["vae"])
        assert ck.epoch > saved.epoch and [h["epoch"] for h in ck.history] == list(range(1, ck.epoch + 1))
    finally:
        reg.shutdown()
