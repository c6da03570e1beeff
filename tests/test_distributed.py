"""vae/distributed.py and the trainer under torchrun: sharding, and one real 2-process gloo run
(tests/ddp_worker.py, started once per session by `torch.distributed.run --standalone`)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddp_worker import CONFIG, tiny_pair
from vae import ConfigError, TrainConfig, Trainer, load_checkpoint
from vae.distributed import SINGLE, Distributed, init_from_env, shard
from vae.metrics import likelihood_metrics

ROOT = Path(__file__).resolve().parent.parent


# --- sharding --------------------------------------------------------------------------------
@pytest.mark.parametrize("n,world", [(12, 4), (10, 4), (7, 3), (2, 3), (5, 1)])
def test_shards_are_equal_disjoint_but_for_padding_and_cover_the_permutation(n, world):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    parts = [shard(order, r, world) for r in range(world)]
    per_rank = -(-n // world)  # ceil
    assert all(len(p) == per_rank for p in parts)  # every rank runs the same number of steps
    taken = torch.cat(parts)
    assert set(taken.tolist()) == set(order.tolist())  # covers all
    padding = per_rank * world - n
    assert len(taken) - len(set(taken.tolist())) == padding  # disjoint but for the padding


def test_padding_repeats_the_start_of_the_permutation_and_rank_r_takes_every_worlds_entry():
    order = torch.tensor([5, 3, 8, 0, 9, 1, 7, 2, 6, 4])  # 10 entries, 4 ranks: pad with 5, 3
    assert shard(order, 0, 4).tolist() == [5, 9, 6]
    assert shard(order, 1, 4).tolist() == [3, 1, 4]
    assert shard(order, 2, 4).tolist() == [8, 7, 5]
    assert shard(order, 3, 4).tolist() == [0, 2, 3]
    assert shard(order, 0, 1) is order  # one process: today's order, untouched


def test_the_shards_batches_make_up_the_single_process_batches():
    order, world, batch = torch.randperm(64), 2, 16
    single = order.split(batch)
    local = [shard(order, r, world).split(batch // world) for r in range(world)]
    for step, whole in enumerate(single):
        assert sorted(torch.cat([local[r][step] for r in range(world)]).tolist()) == sorted(whole.tolist())


@pytest.mark.parametrize("env", [{}, {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}])
def test_without_torchrun_or_with_one_process_nothing_is_initialised(monkeypatch, env):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    group, device = init_from_env("cpu")
    assert group is SINGLE and device == torch.device("cpu") and not torch.distributed.is_initialized()


def test_the_global_batch_must_divide_among_the_processes(blobs):
    two = Distributed(rank=0, world_size=2, backend="gloo")
    with pytest.raises(ConfigError, match="batch_size=33 is the batch of all 2 processes"):
        Trainer(tiny_pair(), blobs, TrainConfig(batch_size=33), distributed=two)


# --- one real 2-process run --------------------------------------------------------------------
@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Runs tests/ddp_worker.py in 2 gloo processes once; returns its output folder."""
    out = tmp_path_factory.mktemp("ddp")
    npz = out / "tiny.npz"
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(npz, x_train=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), y_train=rng.integers(0, 3, 40),
             x_test=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), y_test=rng.integers(0, 3, 10))
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                        "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests" / "ddp_worker.py"), str(out), str(npz)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _ranks(out: Path, name: str) -> list[dict]:
    return [torch.load(out / f"{name}-rank{r}.pt") for r in (0, 1)]


@pytest.mark.parametrize("name", ["fused", "autograd", "resumed"])
def test_both_processes_end_with_identical_weights_and_buffers(ddp_run, name):
    a, b = _ranks(ddp_run, name)
    for kind in a["weights"]:  # autograd's "bn" model: its BatchNorm statistics too
        for key, tensor in a["weights"][kind].items():
            assert torch.equal(tensor, b["weights"][kind][key]), (kind, key)
    assert a["test"] == b["test"]  # evaluated on one shard each, all-reduced
    for kind in a["history"]:
        assert [(h["train"], h["test"]) for h in a["history"][kind]] == [(h["train"], h["test"])
                                                                         for h in b["history"][kind]]


def _single_process(data, fused: bool) -> tuple[dict, object]:
    models = tiny_pair(batchnorm=not fused)
    result = Trainer(models, data, TrainConfig(backend="fused" if fused else "autograd", **CONFIG)).fit()
    return models, result


def _moved(after: dict, before: dict) -> torch.Tensor:
    return torch.cat([(after[k] - before[k]).flatten().float() for k in before])


# Tolerances, measured on this run (2 epochs, 16 Adam steps at lr 3e-3 of the tiny pair):
# - the AE draws no noise, so 2 processes compute the mean gradient of the very images one
#   process does, summed in another order. Adam magnifies rounding where a gradient is ~0 (a
#   step of lr whatever its size), so we compare distances, not entries: the two runs' AE
#   weights are 2e-7 (1 thread) to 3e-5 (2 threads) of the distance training moved them apart;
#   we allow 1e-3. Their test figures agree to 1e-7; we allow 1e-5.
# - the VAE's noise is each process's own stream (only rank 0's is the single-process one), so
#   its weights take another sample path (0.75 of the distance moved): we ask for the same test
#   loss within 5% (measured 1.2% fused, 2.4% autograd).
AE_REL_DISTANCE, AE_RTOL, VAE_TEST_LOSS_RTOL = 1e-3, 1e-5, 0.05


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "autograd"])
def test_two_processes_match_one_process_at_the_same_global_batch(ddp_run, blobs, fused):
    two = _ranks(ddp_run, "fused" if fused else "autograd")[0]
    start = tiny_pair()["ae"].state_dict()
    models, one = _single_process(blobs, fused)  # the workers' data set: conftest's blobs
    assert two["step"] == one.progress.step == 16
    one_ae = models["ae"].state_dict()
    distance = _moved(two["weights"]["ae"], one_ae).norm() / _moved(one_ae, start).norm()
    assert distance < AE_REL_DISTANCE
    assert two["test"]["ae"] == pytest.approx(one.progress.test["ae"], rel=AE_RTOL)
    assert two["history"]["ae"][-1]["train"] == pytest.approx(one.history["ae"][-1]["train"], rel=AE_RTOL)
    assert two["test"]["vae"]["loss"] == pytest.approx(one.progress.test["vae"]["loss"], rel=VAE_TEST_LOSS_RTOL)


def test_a_checkpoint_written_under_ddp_loads_as_the_app_loads_it(ddp_run, blobs):
    rank0 = _ranks(ddp_run, "fused")[0]
    for kind in ("ae", "vae"):
        ck = load_checkpoint(ddp_run / f"fused-{kind}.safetensors")
        assert ck.epoch == 2 and ck.extra["world_size"] == 2 and ck.optimizer_state is not None
        for key, tensor in ck.model.state_dict().items():
            assert torch.equal(tensor, rank0["weights"][kind][key]), key
        assert ck.metrics == rank0["test"][kind]
    # the all-reduced evaluation of the shards is the evaluation of the whole test split
    ae = load_checkpoint(ddp_run / "fused-ae.safetensors")
    assert likelihood_metrics(ae.model, blobs.test) == pytest.approx(ae.metrics, rel=1e-5)


def test_a_stop_on_one_process_stops_both_and_the_resume_equals_an_unbroken_run(ddp_run):
    stopped = load_checkpoint(ddp_run / "stopped-vae.safetensors")
    assert (stopped.epoch, stopped.batches_done) == (1, 3)  # rank 0 asked at step 11 = 8 + 3
    assert stopped.trainer_state["noise_generators"].shape[0] == 2  # one noise stream per process
    resumed, unbroken = _ranks(ddp_run, "resumed")[0], _ranks(ddp_run, "fused")[0]
    assert resumed["step"] == 16
    for kind in ("ae", "vae"):
        for key, tensor in resumed["weights"][kind].items():
            assert torch.equal(tensor, unbroken["weights"][kind][key]), (kind, key)
        assert resumed["history"][kind][-1]["train"] == pytest.approx(unbroken["history"][kind][-1]["train"])


def test_a_mid_epoch_ddp_checkpoint_refuses_another_number_of_processes(ddp_run, blobs):
    resume = {k: load_checkpoint(ddp_run / f"stopped-{k}.safetensors") for k in ("ae", "vae")}
    with pytest.raises(ConfigError, match=r"processes 2 \(now 1\)"):
        Trainer(tiny_pair(), blobs, TrainConfig(**CONFIG), resume=resume, distributed=SINGLE)
    # at an epoch boundary any number of processes may continue
    done = {k: load_checkpoint(ddp_run / f"fused-{k}.safetensors") for k in ("ae", "vae")}
    Trainer(tiny_pair(), blobs, TrainConfig(**(CONFIG | {"epochs": 3})), resume=done)


def test_the_cli_under_torchrun_prints_on_rank_0_only_and_writes_loadable_checkpoints(ddp_run):
    assert [(ddp_run / f"cli-rank{r}.rc").read_text() for r in (0, 1)] == ["0", "0"]
    log0, log1 = ((ddp_run / f"cli-rank{r}.log").read_text() for r in (0, 1))
    assert "on 2 processes (gloo, cpu)" in log0 and "done after 5 steps" in log0  # 40 images, 8 a step
    assert log1 == ""
    ck = load_checkpoint(ddp_run / "cli-vae.safetensors")
    assert ck.config.preset == "mnist-2d" and ck.train["batch_size"] == 8 and ck.extra["world_size"] == 2
