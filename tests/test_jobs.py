import os
import signal
import threading
import time

import numpy as np
import pytest

from vae import ConfigError, load_checkpoint
from vae.catalog import find_pairs
from vae.data import load_dataset
from vae.jobs import HostedLimits, JobRegistry, JobSpec, compatible_presets, guess_image_shape
from vae.sweep import find_families
from vae.projections import procrustes_align


def tiny_spec(path, **kw):
    base = dict(dataset=str(path), preset="mnist-mlp", latent_dim=4, epochs=2, batch_size=64, lr=3e-3)
    return JobSpec(**{**base, **kw})


def gated_loader(gate: threading.Event):
    """Loads the spec's data only once `gate` is set: keeps a job 'running' as long as a test needs."""
    def load(spec):
        assert gate.wait(10), "test gate never opened"
        return load_dataset(spec.dataset).limit(spec.limit_train, spec.limit_test)
    return load


@pytest.fixture
def registry(tmp_path):
    """The app's default: each job trains in a child process (python -m vae.worker)."""
    reg = JobRegistry(tmp_path / "trained", max_running=1, train_threads=1, runner="process")
    yield reg
    reg.shutdown()


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def train_threads():
    return [t for t in threading.enumerate() if t.name.startswith("train-")]


def test_spec_fills_preset_defaults_and_hashes_stably(bands_npz):
    a = JobSpec(dataset=str(bands_npz), preset="mnist-mlp")
    b = JobSpec(dataset=str(bands_npz), preset="mnist-mlp", latent_dim=16, beta=1.0, kinds=("vae", "ae"))
    assert a == b and a.key() == b.key() and a.kinds == ("ae", "vae")
    assert JobSpec(dataset="MNIST").dataset == "mnist"
    assert a.key() != JobSpec(dataset=str(bands_npz), preset="mnist-mlp", seed=1).key()
    assert a.pair_name("bands") == f"mnist-mlp-bands-{a.key()[:6]}"
    assert JobSpec.from_preset("cifar-conv").dataset == "cifar10"


@pytest.mark.parametrize("kwargs,name", [({"epochs": 0}, "epochs"), ({"lr": 0.0}, "lr"), ({"batch_size": 0}, "batch_size"),
                                         ({"kinds": ("gan",)}, "kinds"), ({"preset": "nope"}, "preset"),
                                         ({"latent_dim": 0}, "latent_dim"), ({"beta": -1.0}, "beta"),
                                         ({"limit_train": 0}, "limit_train"), ({"dataset": " "}, "dataset")])
def test_spec_refuses_nonsense(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        JobSpec(**kwargs)


def test_image_shapes_and_compatible_presets(bands_npz):
    assert guess_image_shape(str(bands_npz)) == (1, 28, 28)
    assert guess_image_shape("cifar10") == (3, 32, 32) and guess_image_shape("/no/such.npz") is None
    assert "cifar-conv" not in compatible_presets((1, 28, 28))  # 28 is not divisible by 8
    assert compatible_presets((3, 32, 32))[:2] == ["tutorial-cifar-resnet18", "cifar-conv"]  # made for it first


def test_repeated_submits_of_one_spec_share_one_job_and_thread(tmp_path, bands_npz):
    gate = threading.Event()
    reg = JobRegistry(tmp_path / "trained", max_running=2, train_threads=1, load_data=gated_loader(gate))
    try:
        spec = tiny_spec(bands_npz, epochs=1)
        job, created = reg.submit(spec)
        again = [reg.submit(tiny_spec(bands_npz, epochs=1)) for _ in range(3)]
        assert created and all(j is job and not c for j, c in again)
        assert [t.name for t in train_threads()] == [f"train-{job.id}"] and reg.list() == [job]
        gate.set()
        assert job.join(30) and job.state == "done"
        assert reg.submit(spec) == (job, False)  # a finished spec is not retrained
    finally:
        gate.set()
        reg.shutdown()


def test_second_job_waits_for_a_free_slot_then_runs(tmp_path, bands_npz):
    gate = threading.Event()
    reg = JobRegistry(tmp_path / "trained", max_running=1, train_threads=1, load_data=gated_loader(gate))
    try:
        first, _ = reg.submit(tiny_spec(bands_npz, epochs=1))
        second, _ = reg.submit(tiny_spec(bands_npz, epochs=1, seed=1))
        assert (first.state, second.state) == ("running", "queued")
        assert reg.queue_position(second.id) == 1 and second.view().progress is None
        gate.set()
        assert first.join(30) and wait_for(lambda: second.state != "queued")
        assert second.join(30) and second.state == "done"
        assert second.view().started_at >= first.view().finished_at
    finally:
        gate.set()
        reg.shutdown()


def test_a_full_queue_refuses_and_a_stopped_queued_job_never_starts(tmp_path, bands_npz):
    gate = threading.Event()
    reg = JobRegistry(tmp_path / "trained", max_running=1, max_queued=1, train_threads=1, load_data=gated_loader(gate))
    try:
        first, _ = reg.submit(tiny_spec(bands_npz, seed=1))
        second, _ = reg.submit(tiny_spec(bands_npz, seed=2))
        with pytest.raises(ConfigError, match="queue is full"):
            reg.submit(tiny_spec(bands_npz, seed=3))
        second.stop()
        assert second.state == "stopped" and second.thread is None
        third, created = reg.submit(tiny_spec(bands_npz, seed=3))  # the stopped one freed the place
        assert created and third.state == "queued"
        first.stop()
        gate.set()
        assert first.join(10) and wait_for(lambda: third.state != "queued") and third.join(30)
        assert second.thread is None and third.state == "done"
    finally:
        gate.set()
        reg.shutdown()


def test_hosted_limits_refuse_larger_specs(tmp_path, bands_npz):
    reg = JobRegistry(tmp_path / "trained", max_epochs=5, max_train_images=500)
    with pytest.raises(ConfigError, match="epochs=6"):
        reg.submit(tiny_spec(bands_npz, epochs=6, limit_train=100))
    with pytest.raises(ConfigError, match="limit_train=None"):
        reg.submit(tiny_spec(bands_npz))
    assert reg.list() == []


@pytest.mark.parametrize("runner", ["process", "thread"])
def test_stop_ends_within_a_second_and_keeps_the_checkpoint(tmp_path, bands_npz, runner):
    registry = JobRegistry(tmp_path / "trained", train_threads=1, runner=runner)
    job, _ = registry.submit(tiny_spec(bands_npz, epochs=200, batch_size=8))
    assert wait_for(lambda: (p := job.view().progress) is not None and p.step > 5)
    t0 = time.perf_counter()
    job.stop()
    assert job.join(5) and time.perf_counter() - t0 < 1.0
    view = job.view()
    assert view.state == "stopped" and view.error == "" and set(view.checkpoints) == {"ae", "vae"}
    assert load_checkpoint(view.checkpoints["vae"]).extra["stopped"] is True
    pairs, problems = find_pairs([registry.out_dir])
    assert [p.name for p in pairs] == [view.name] and not problems  # the model picker will list it
    assert view.name.startswith("mnist-mlp-bands-")
    registry.shutdown()


def test_an_exception_in_the_thread_fails_the_job_not_the_registry(tmp_path, bands_npz, monkeypatch):
    registry = JobRegistry(tmp_path / "trained", train_threads=1, runner="thread")  # the patch lives in this process
    missing, _ = registry.submit(tiny_spec(tmp_path / "missing.npz"))
    assert missing.join(10)
    assert missing.state == "failed" and missing.view().error.startswith("DatasetError: ") and "no such file" in missing.view().error

    def boom(*args, **kwargs):
        raise RuntimeError("the trainer exploded")

    monkeypatch.setattr("vae.jobs.Trainer.fit", boom)
    spec = tiny_spec(bands_npz)
    broken, _ = registry.submit(spec)
    assert broken.join(10) and broken.view().error == "RuntimeError: the trainer exploded"
    monkeypatch.undo()
    retried, created = registry.submit(spec)  # a failed spec may be started again
    assert created and retried is not broken and retried.join(30) and retried.state == "done"
    # one row per configuration: the retry replaces the failed run's row, and its id leads to the retry
    assert {j.state for j in registry.list()} == {"failed", "done"} and len(registry.list()) == 2
    assert registry.get(broken.id) is retried
    registry.shutdown()


def test_a_snapshot_per_epoch_with_stable_shapes_and_orientation(registry, bands_npz):
    job, _ = registry.submit(tiny_spec(bands_npz, epochs=3, limit_test=100))
    assert job.join(30) and job.state == "done"
    view = job.view()
    assert [s.epoch for s in view.snapshots] == [0, 1, 2, 3]  # 0: the untrained models
    for snap in view.snapshots:
        assert snap.method == "pca" and list(snap.points) == ["ae", "vae"]
        assert all(p.shape == (100, 2) and p.dtype == np.float32 for p in snap.points.values())
        np.testing.assert_array_equal(snap.labels, view.snapshots[0].labels)
        assert not snap.points["vae"].flags.writeable
    assert set(view.snapshots[-1].test) == {"ae", "vae"} and "neg_elbo" in view.snapshots[-1].test["vae"]
    # each map is already turned onto the previous epoch's: the best rotation left is the identity
    for before, after in zip(view.snapshots, view.snapshots[1:]):
        for kind in ("ae", "vae"):
            _, t = procrustes_align(after.points[kind], before.points[kind])
            np.testing.assert_allclose(t.rotation, np.eye(2), atol=1e-4)
    # loss curves: one point per model at least per epoch end, ending on the last epoch's means
    for kind in ("ae", "vae"):
        curve = view.curves[kind]
        assert {1.0, 2.0, 3.0} <= {p.epoch for p in curve} and curve[-1].epoch == 3.0
        assert curve[-1].total == pytest.approx(curve[-1].recon + curve[-1].kl, rel=1e-4)
    assert view.classes == ("0", "1", "2") and view.fraction == 1.0


def test_a_two_dimensional_latent_is_mapped_as_it_is(registry, bands_npz):
    job, _ = registry.submit(tiny_spec(bands_npz, preset="mnist-2d", latent_dim=None, epochs=1, kinds=("vae",)))
    assert job.join(30) and job.state == "done"
    snap = job.view().snapshots[-1]
    assert snap.method == "identity" and list(snap.points) == ["vae"]
    assert set(job.view().checkpoints) == {"vae"}


def test_a_fallback_that_does_not_fit_the_preset_fails_with_the_reason(tmp_path, bands_npz):
    def offline_cifar(spec):  # what load_dataset returns for cifar10 without a network
        data = load_dataset(str(bands_npz))
        data.notes.append("Could not download cifar10 (no network). Using the embedded MNIST digits instead.")
        return data

    reg = JobRegistry(tmp_path / "trained", train_threads=1, load_data=offline_cifar)
    job, _ = reg.submit(JobSpec.from_preset("cifar-conv", epochs=1))
    assert job.join(10) and job.state == "failed"
    view = job.view()
    assert view.error.startswith("DatasetError: cifar10 could not be loaded") and "Choose an MNIST preset" in view.error
    assert "no network" in view.notes[0]


def test_built_in_data_is_loaded_once_per_registry_and_threads_are_restored(tmp_path, bands_npz, monkeypatch):
    import torch

    calls = []

    def fake_load(source, fallback=True):
        calls.append(source)
        return load_dataset(str(bands_npz))

    monkeypatch.setattr("vae.jobs.load_dataset", fake_load)
    before = torch.get_num_threads()
    reg = JobRegistry(tmp_path / "trained", train_threads=1, runner="thread")  # the data cache is the thread runner's
    for seed in (0, 1):
        job, _ = reg.submit(JobSpec(dataset="mnist", preset="mnist-mlp", latent_dim=4, epochs=1, batch_size=64, seed=seed))
        assert job.join(30) and job.state == "done"
    assert calls == ["mnist"]
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert seen == [before]  # threads created after the jobs get the count they had before


def test_a_job_trains_on_the_local_copy_in_the_data_folder_without_downloading(tmp_path, bands_npz, monkeypatch):
    import shutil
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError("a local copy is there: nothing should be downloaded")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setenv("LATENT_EXPLORER_DATA", str(tmp_path / "data"))  # the one data setting (README)
    (tmp_path / "data").mkdir()
    shutil.copy(bands_npz, tmp_path / "data" / "mnist.npz")
    reg = JobRegistry(tmp_path / "trained", train_threads=1)
    job, _ = reg.submit(JobSpec(dataset="mnist", preset="mnist-2d", epochs=1, batch_size=64, limit_train=128))
    assert job.join(30) and job.state == "done", job.view().error
    view = job.view()
    assert view.notes == () and view.classes == ("0", "1", "2")  # the bands, not the fallback digits
    assert load_checkpoint(view.checkpoints["vae"]).dataset["source"] == str(tmp_path / "data" / "mnist.npz")


# --- the process runner (issue 14.2) -------------------------------------------------------------------
def test_spec_keys_of_earlier_configurations_are_unchanged(bands_npz):
    """Records and locks on disk are named by key: a sweep or torchrun field at its default must not
    change the key that earlier versions gave a configuration (values computed before they existed)."""
    assert JobSpec().key() == "1722aca121bca397"
    spec = JobSpec(dataset="embedded-mnist", preset="mnist-mlp", latent_dim=4, epochs=2, batch_size=64, lr=3e-3)
    assert spec.key() == "0e3581c186d3a63e"
    assert JobSpec(dataset="embedded-mnist", processes=2).key() != JobSpec().key()


def test_a_process_job_trains_in_a_child_and_its_log_is_the_view(registry, bands_npz):
    job, _ = registry.submit(tiny_spec(bands_npz, epochs=2, limit_test=100))
    assert wait_for(lambda: job._worker is not None, 10)
    assert job._worker.proc.pid != os.getpid()  # not this interpreter, not its GIL
    assert not [t for t in threading.enumerate() if t.name.startswith("trainer-")]
    assert job.join(60) and job.state == "done", job.view().error
    view = job.view()
    assert [s.epoch for s in view.snapshots] == [0, 1, 2] and view.epochs_done == 2
    assert all(p.shape == (100, 2) for p in view.snapshots[-1].points.values())
    assert {p.epoch for p in view.curves["vae"]} >= {1.0, 2.0}
    assert load_checkpoint(view.checkpoints["vae"]).epoch == 2
    lines = (job.run_dir / "events.jsonl").read_text().splitlines()
    assert lines[-1].startswith('{"t":"finished"') and '"state":"done"' in lines[-1]


def test_a_child_killed_by_sigkill_leaves_an_interrupted_job_that_resumes(registry, bands_npz):
    spec = tiny_spec(bands_npz, epochs=200, batch_size=8)
    job, _ = registry.submit(spec)
    assert wait_for(lambda: job.view().checkpoints, 90)
    assert os.getpriority(os.PRIO_PROCESS, job._worker.proc.pid) >= 10  # page runs of the app come first
    os.kill(job._worker.proc.pid, signal.SIGKILL)
    assert job.join(10)
    view = job.view()
    assert view.state == "interrupted" and "killed by signal SIGKILL" in view.error
    saved = load_checkpoint(view.checkpoints["vae"])
    assert saved.epoch == view.epochs_done >= 1
    assert not registry.records.busy(spec.key())  # the configuration is free again
    again = registry.resume(job.id)
    assert wait_for(lambda: again.view().progress is not None, 60)
    assert again.view().resumed_from == saved.epoch
    registry.stop(again.id)
    assert again.join(10) and again.state == "stopped"


# --- a beta sweep as a job (issue 18) -----------------------------------------------------------------
def test_a_sweep_spec_is_normalised_and_validated(bands_npz):
    a = tiny_spec(bands_npz, betas=(4, 0, 1.0))
    assert a.betas == (0.0, 1.0, 4.0) and a.members() == ("beta-0", "beta-1", "beta-4")
    assert a.key() == tiny_spec(bands_npz, betas=[0, 1, 4], kinds=("vae",)).key()  # kinds do not apply
    for bad in ((1.0,), (1, 1), (-1, 0), (0, float("nan"))):
        with pytest.raises(ConfigError, match="betas"):
            tiny_spec(bands_npz, betas=bad)
    with pytest.raises(ConfigError, match="multiple of 3"):
        tiny_spec(bands_npz, processes=3, batch_size=64)


def test_hosted_limits_cap_sweeps_and_refuse_torchrun(bands_npz):
    limits = HostedLimits()
    base = dict(dataset="embedded-mnist", epochs=1, limit_train=100)
    limits.check(tiny_spec(bands_npz, betas=(0, 0.1, 1, 4), **base))
    with pytest.raises(ConfigError, match="sweep of 5 values of β is over this server's limit of 4"):
        limits.check(tiny_spec(bands_npz, betas=(0, 0.1, 1, 4, 8), **base))
    with pytest.raises(ConfigError, match="beta=60 is over"):
        limits.check(tiny_spec(bands_npz, betas=(0, 60), **base))
    with pytest.raises(ConfigError, match="several processes"):
        limits.check(tiny_spec(bands_npz, processes=2, **base))


def test_a_sweep_job_trains_one_model_per_beta_and_the_beta_dial_finds_the_family(registry, bands_npz):
    job, _ = registry.submit(tiny_spec(bands_npz, preset="mnist-2d", latent_dim=None, betas=(0, 1, 4), epochs=1,
                                       limit_test=60))
    assert job.join(60) and job.state == "done", job.view().error
    view = job.view()
    assert set(view.checkpoints) == {"beta-0", "beta-1", "beta-4"} and set(view.curves) == set(view.checkpoints)
    assert list(view.snapshots[-1].points) == ["beta-0", "beta-1", "beta-4"]
    [family] = find_families([registry.out_dir])
    assert family.name == view.name and family.betas == [0.0, 1.0, 4.0]
    first = {b: load_checkpoint(p) for b, p in family.members}
    assert not first[0.0].config.variational and first[4.0].config.beta == 4.0
    assert len({ck.history[0]["train"]["recon"] for ck in first.values()}) == 3  # three models, one run
    assert not find_pairs([registry.out_dir])[0]  # not a pair: the model picker does not list it


def test_a_job_can_train_under_torchrun_with_two_cpu_processes(tmp_path, bands_npz):
    reg = JobRegistry(tmp_path / "trained", train_threads=1, runner="process")
    try:
        job, _ = reg.submit(tiny_spec(bands_npz, epochs=1, processes=2, limit_test=100))
        assert job.join(120) and job.state == "done", (job.view().error, (job.run_dir / "worker.log").read_text()[-2000:])
        ck = load_checkpoint(job.view().checkpoints["vae"])
        assert ck.extra["world_size"] == 2 and ck.epoch == 1
        assert len(job.view().snapshots) == 2  # rank 0 alone speaks for the job
        with pytest.raises(ConfigError, match="process runner"):
            JobRegistry(tmp_path / "other", runner="thread").submit(tiny_spec(bands_npz, processes=2))
    finally:
        reg.shutdown()
