import threading
import time

import pytest
import torch

from vae import Callback, ConfigError, TrainConfig, Trainer, load_checkpoint, make_pair
from vae.metrics import likelihood_metrics
from vae.train import NOISE_STREAM, ORDER_STREAM, epoch_seed


def tiny_pair(latent_dim=2):
    torch.manual_seed(0)
    from vae.models import Autoencoder, ModelConfig

    return {k: Autoencoder(ModelConfig(family="mlp", hidden=(64,), latent_dim=latent_dim, variational=k == "vae"))
            for k in ("ae", "vae")}


class Recorder(Callback):
    def __init__(self):
        self.steps, self.epochs, self.end = [], [], None

    def on_step_end(self, p):
        self.steps.append(p)

    def on_epoch_end(self, p, models):
        self.epochs.append(p)

    def on_train_end(self, p):
        self.end = p


def test_loss_decreases_and_progress_is_reported(blobs):
    models = tiny_pair()
    before = {k: likelihood_metrics(m, blobs.test)["loss"] for k, m in models.items()}
    rec = Recorder()
    result = Trainer(models, blobs, TrainConfig(epochs=3, batch_size=32, lr=3e-3), callbacks=[rec]).fit()
    after = {k: result.progress.test[k]["loss"] for k in models}
    assert all(after[k] < 0.8 * before[k] for k in models), (before, after)
    assert len(rec.epochs) == 3 and rec.end.phase == "done" and rec.end.fraction == 1.0
    last = rec.steps[-1]
    assert last.step == 3 * 8 and last.images_per_s > 0 and set(last.losses) == {"ae", "vae"}
    assert set(last.losses["vae"]) == {"recon", "kl", "total"} and last.eta_s >= 0
    assert "neg_elbo" in result.progress.test["vae"] and "neg_elbo" not in result.progress.test["ae"]
    assert len(result.history["vae"]) == 3


def test_vae_codes_stay_near_the_prior_and_ae_codes_do_not(blobs):
    models = tiny_pair(latent_dim=2)
    Trainer(models, blobs, TrainConfig(epochs=6, batch_size=32, lr=3e-3)).fit()
    x = models["vae"].preprocess(blobs.test.images)
    with torch.no_grad():
        q_vae, q_ae = models["vae"].encode(x), models["ae"].encode(x)
    assert float(q_vae.kl().mean()) < 50  # the KL term pulls q towards N(0, I)
    assert float(q_ae.kl().mean()) == 0.0 and float(q_ae.std.max()) == 0.0  # AE: point codes


def test_stop_event_ends_training_within_a_second_and_keeps_a_checkpoint(blobs, tmp_path):
    big = blobs.limit()
    big.train = type(blobs.train)(blobs.train.images.repeat(40, 1, 1, 1), blobs.train.labels.repeat(40))
    stop = threading.Event()
    out = {k: tmp_path / f"{k}.safetensors" for k in ("ae", "vae")}
    trainer = Trainer(tiny_pair(), big, TrainConfig(epochs=50, batch_size=16), stop_event=stop, out=out)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", trainer.fit()))
    thread.start()
    time.sleep(1.0)
    t0 = time.perf_counter()
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive() and time.perf_counter() - t0 < 1.0
    assert result["r"].stopped and result["r"].progress.phase == "stopped"
    assert load_checkpoint(out["vae"]).extra["stopped"] is True


def test_resume_continues_where_it_stopped(blobs, tmp_path):
    out = {k: tmp_path / f"{k}.safetensors" for k in ("ae", "vae")}
    Trainer(tiny_pair(), blobs, TrainConfig(epochs=2, batch_size=32), out=out).fit()
    resume = {k: load_checkpoint(p) for k, p in out.items()}
    assert resume["vae"].epoch == 2 and resume["vae"].optimizer_state is not None
    rec = Recorder()
    r = Trainer(tiny_pair(), blobs, TrainConfig(epochs=3, batch_size=32), callbacks=[rec], out=out, resume=resume).fit()
    assert [p.epoch for p in rec.epochs] == [3] and len(r.history["vae"]) == 3
    # an unbroken 3-epoch run draws the same batches and noise: same weights
    unbroken = tiny_pair()
    Trainer(unbroken, blobs, TrainConfig(epochs=3, batch_size=32)).fit()
    resumed = load_checkpoint(out["vae"]).model
    for a, b in zip(resumed.parameters(), unbroken["vae"].parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_checkpoint_reproduces_the_reported_test_losses(blobs, tmp_path):
    out = {"vae": tmp_path / "vae.safetensors"}
    r = Trainer({"vae": tiny_pair()["vae"]}, blobs, TrainConfig(epochs=1, batch_size=32), out=out).fit()
    ck = load_checkpoint(out["vae"])
    assert likelihood_metrics(ck.model, blobs.test) == pytest.approx(r.progress.test["vae"], rel=1e-5)
    assert ck.metrics == pytest.approx(r.progress.test["vae"])


@pytest.mark.parametrize("kwargs,name", [({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr"),
                                         ({"batch_size": 0}, "batch_size"), ({"lr": float("nan")}, "lr")])
def test_nonsense_hyper_parameters(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        TrainConfig(**kwargs)


def test_model_and_data_shapes_must_agree(blobs):
    with pytest.raises(ConfigError, match="expects images"):
        Trainer(make_pair("cifar-conv", (3, 32, 32), kinds=("ae",)), blobs, TrainConfig())
    with pytest.raises(ConfigError, match="models"):
        make_pair("mnist-2d", (1, 28, 28), kinds=("gan",))


class StopAt(Callback):
    def __init__(self, step, event):
        self.step, self.event = step, event

    def on_step_end(self, p):
        if p.step == self.step:
            self.event.set()


def test_a_stop_mid_epoch_then_resume_equals_an_unbroken_run(blobs, tmp_path):
    out = {k: tmp_path / f"{k}.safetensors" for k in ("ae", "vae")}
    config = TrainConfig(epochs=2, batch_size=32)  # 8 steps per epoch: stop after 3 of the second
    stop = threading.Event()
    first = Trainer(tiny_pair(), blobs, config, callbacks=[StopAt(11, stop)], stop_event=stop, out=out).fit()
    assert first.stopped and first.progress.step == 11
    resume = {k: load_checkpoint(p) for k, p in out.items()}
    resumed = Trainer(tiny_pair(), blobs, config, out=out, resume=resume).fit()
    assert resumed.progress.step == 16
    unbroken = tiny_pair()
    expected = Trainer(unbroken, blobs, config).fit()
    for kind in ("ae", "vae"):
        model = load_checkpoint(out[kind]).model
        for (name, a), b in zip(model.named_parameters(), unbroken[kind].parameters()):
            assert torch.equal(a, b), (kind, name)
        assert resumed.history[kind][-1]["train"] == pytest.approx(expected.history[kind][-1]["train"])


def test_a_mid_epoch_checkpoint_refuses_a_resume_that_would_draw_other_batches(blobs, tmp_path):
    out = {"vae": tmp_path / "vae.safetensors"}
    stop = threading.Event()
    Trainer({"vae": tiny_pair()["vae"]}, blobs, TrainConfig(epochs=2, batch_size=32), callbacks=[StopAt(3, stop)],
            stop_event=stop, out=out).fit()
    resume = {"vae": load_checkpoint(out["vae"])}
    assert (resume["vae"].epoch, resume["vae"].batches_done) == (0, 3)
    with pytest.raises(ConfigError, match="batch_size 32 \\(now 16\\)"):
        Trainer({"vae": tiny_pair()["vae"]}, blobs, TrainConfig(epochs=2, batch_size=16), resume=resume)


def test_the_largest_seeds_train_and_small_seeds_keep_their_streams(blobs):
    # seed * 100_019 overflowed manual_seed's 64 bits above seed ~1.8e14; TrainConfig takes up to 2**63 - 1
    for seed in (2**62, 2**63 - 1):
        r = Trainer({"vae": tiny_pair()["vae"]}, blobs, TrainConfig(epochs=1, batch_size=64, seed=seed)).fit()
        assert r.progress.phase == "done"
    # the seeds that fitted before are the seeds drawn now: old runs resume onto the same streams
    assert epoch_seed(3, 2, NOISE_STREAM) == 3 * 100_019 + 2 and epoch_seed(3, 2, ORDER_STREAM) == 3 * 100_003 + 2
    assert epoch_seed(2**62, 0, NOISE_STREAM) != epoch_seed(2**62 + 1, 0, NOISE_STREAM)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: on the CPU the models never leave it")
def test_fit_trains_on_the_gpu_and_puts_the_models_back(blobs):
    # found on an H200: fit() left the models on CUDA, so encoding the caller's CPU images failed
    models = tiny_pair(latent_dim=2)
    Trainer(models, blobs, TrainConfig(epochs=1, batch_size=32, device="cuda")).fit()
    assert {p.device.type for m in models.values() for p in m.parameters()} == {"cpu"}
    models["vae"].encode(models["vae"].preprocess(blobs.test.images))
