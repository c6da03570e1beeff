"""vae/fused.py: the hand-written loss and gradient must equal autograd's through the modules."""
import pytest
import torch

from vae import fused
from vae.data import ImageDataset, ImageSplit
from vae.errors import ConfigError
from vae.models import Autoencoder, ModelConfig
from vae.train import TrainConfig, Trainer, make_pair


def _twins(**overrides) -> tuple[Autoencoder, Autoencoder]:
    cfg = ModelConfig(**{"family": "mlp", "hidden": (48,), "latent_dim": 6, **overrides})
    torch.manual_seed(0)
    a, b = Autoencoder(cfg), Autoencoder(cfg)
    b.load_state_dict(a.state_dict())
    return a, b


def _images(n=24, seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    return x * (x > 0.6)  # MNIST-like: mostly exact zeros, some grey, a few near 1


def _grads(model) -> list[torch.Tensor]:
    return [p.grad for p in model.parameters()]


@pytest.mark.parametrize("variational", [True, False])
@pytest.mark.parametrize("hidden", [(48,), (64, 32)])
@pytest.mark.parametrize("objective", ["total", "every term"])
def test_values_and_gradients_equal_autograd(variational, hidden, objective):
    ref, ours = _twins(variational=variational, hidden=hidden, beta=2.5)
    x = _images()
    t_ref = ref.loss(x, generator=torch.Generator().manual_seed(7))
    t_ours = fused.FusedLoss(ours)(x, generator=torch.Generator().manual_seed(7))
    for name in ("recon", "kl", "total"):
        torch.testing.assert_close(getattr(t_ours, name), getattr(t_ref, name), rtol=1e-5, atol=1e-3)

    def objective_of(t):  # "every term" sends a gradient through each output, not only total
        return t.total.mean() if objective == "total" else t.total.mean() + 0.3 * t.recon.sum() + 0.7 * t.kl.sum()

    objective_of(t_ref).backward()
    objective_of(t_ours).backward()
    for (name, p), g in zip(ref.named_parameters(), _grads(ours)):
        assert g is not None and g.dtype == torch.float32 and g.shape == p.shape, name
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("variational", [True, False])
def test_step_gradients_set_the_gradients_of_the_mean_total_without_a_graph(variational):
    ref, ours = _twins(variational=variational, hidden=(40, 24), beta=0.5)
    x = _images()
    t_ref = ref.loss(x, generator=torch.Generator().manual_seed(7))
    t_ref.total.mean().backward()
    for p in ours.parameters():  # stale gradients must be replaced, not added to
        p.grad = torch.full_like(p, 9.0)
    t_ours = fused.FusedLoss(ours).step_gradients(x, generator=torch.Generator().manual_seed(7))
    assert not t_ours.total.requires_grad
    torch.testing.assert_close(t_ours.total, t_ref.total.detach(), rtol=1e-5, atol=1e-3)
    for (name, p), g in zip(ref.named_parameters(), _grads(ours)):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_second_backward_through_the_node_is_refused():
    _, ours = _twins()
    terms = fused.FusedLoss(ours)(_images())
    terms.total.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backpropagated once"):
        terms.total.sum().backward()


@pytest.mark.parametrize("batch,shape,latent", [(1, (1, 28, 28), 3), (5, (1, 30, 30), 1), (7, (3, 6, 6), 2)])
def test_odd_batches_image_sizes_and_latent_sizes(batch, shape, latent):
    """A last batch of one image, pixel counts not divisible by 16 (the log-product chunks), odd
    latent sizes (the stacked heads), colour images."""
    ref, ours = _twins(image_shape=shape, latent_dim=latent, hidden=(12,))
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(2))
    t_ref = ref.loss(x, generator=torch.Generator().manual_seed(7))
    t_ref.total.mean().backward()
    t_ours = fused.FusedLoss(ours).step_gradients(x, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(t_ours.total, t_ref.total.detach(), rtol=1e-5, atol=1e-3)
    for (name, p), g in zip(ref.named_parameters(), _grads(ours)):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_noise_is_drawn_like_the_posterior_sample():
    """Same generator state -> same z: a fused and an unfused run of the trainer draw alike."""
    ref, ours = _twins()
    x = _images()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    ref.loss(x, generator=g1)
    fused.FusedLoss(ours)(x, generator=g2)
    assert torch.equal(torch.randn(5, generator=g1), torch.randn(5, generator=g2))


def test_bfloat16_matmuls_stay_close_and_leave_float32_gradients():
    # 784 x 96 weights are over the low-precision threshold: the first and last layers use bf16
    assert 784 * 96 >= fused.LOW_PRECISION_MIN_WEIGHTS
    ref, ours = _twins(hidden=(96,))
    x = _images(64)
    t_ref = ref.loss(x, generator=torch.Generator().manual_seed(7))
    t_ours = fused.FusedLoss(ours, matmul_dtype=torch.bfloat16)(x, generator=torch.Generator().manual_seed(7))
    assert t_ours.total.dtype == torch.float32
    assert abs(t_ours.total.mean() / t_ref.total.mean() - 1) < 0.005
    t_ref.total.mean().backward()
    t_ours.total.mean().backward()
    for (name, p), g in zip(ref.named_parameters(), _grads(ours)):
        assert g.dtype == torch.float32, name
        assert (g - p.grad).norm() / p.grad.norm() < 0.05, name  # bf16 has 8 bits of mantissa
    assert not torch.equal(_grads(ours)[0], ref.encoder[1].weight.grad)  # bf16 really was used


@pytest.mark.parametrize("overrides", [
    {"family": "tutorial-mlp"}, {"family": "conv", "hidden": (8, 16)},
    {"likelihood": "gaussian-fixed"}, {"kl_estimator": "monte-carlo"},
])
def test_supports_only_what_it_implements(overrides):
    assert fused.supports(Autoencoder(ModelConfig(family="mlp", hidden=(16,), latent_dim=2)))
    assert fused.supports(Autoencoder(ModelConfig(family="mlp", hidden=(16,), latent_dim=2, variational=False)))
    other = Autoencoder(ModelConfig(**{"hidden": (16,), "latent_dim": 2, **overrides}))
    assert not fused.supports(other)
    with pytest.raises(ValueError, match="does not implement"):
        fused.FusedLoss(other)


def _data(n_train=256, n_test=64) -> ImageDataset:
    g = torch.Generator().manual_seed(0)

    def split(n):
        return ImageSplit((torch.rand(n, 1, 28, 28, generator=g) * 255).to(torch.uint8),
                          torch.randint(0, 10, (n,), generator=g))

    return ImageDataset("random", split(n_train), split(n_test), [str(i) for i in range(10)])


def _train(**config) -> tuple[dict, Trainer]:
    models = make_pair("mnist-2d", (1, 28, 28), seed=0)  # same initial weights for every call
    trainer = Trainer(models, _data(), TrainConfig(epochs=2, batch_size=32, seed=5, device="cpu", **config))
    return trainer.fit().history, trainer


def test_trainer_uses_fused_step_and_trains_like_autograd():
    fused_hist, fused_trainer = _train()
    plain_hist, plain_trainer = _train(backend="autograd")
    assert all(step.backend == "fused" for step in fused_trainer.steps.values())
    assert all(step.backend == "autograd" for step in plain_trainer.steps.values())
    for name in ("ae", "vae"):
        for a, b in zip(fused_hist[name], plain_hist[name]):
            for part in ("train", "test"):
                for key, value in b[part].items():
                    assert a[part][key] == pytest.approx(value, rel=1e-3, abs=1e-3), (name, part, key)
        # 16 Adam steps amplify the 1e-7 differences of the two gradients: over initial seeds 0-3 the
        # largest weight difference is 2e-5 to 1.7e-4
        for p, q in zip(fused_trainer.models[name].parameters(), plain_trainer.models[name].parameters()):
            torch.testing.assert_close(p, q, rtol=1e-3, atol=5e-4)


@pytest.mark.parametrize("preset", ["mnist-2d", "tutorial-mnist-mlp"])  # fused and autocast paths
def test_bfloat16_training_lowers_the_loss_and_evaluates_in_float32(preset):
    models = make_pair(preset, (1, 28, 28), kinds=("vae",))
    trainer = Trainer(models, _data(), TrainConfig(epochs=3, batch_size=32, seed=5, device="cpu",
                                                   precision="bfloat16", lr=3e-3))
    history = trainer.fit().history["vae"]
    assert history[-1]["train"]["total"] < history[0]["train"]["total"]
    assert all(p.dtype == torch.float32 for p in trainer.models["vae"].parameters())


@pytest.mark.parametrize("bad", [{"precision": "float16"}, {"precision": "bf16"}, {"backend": "yes"},
                                 {"backend": True}])
def test_train_config_refuses_unknown_precision_and_backend_values(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        TrainConfig(**bad)


def test_a_log_variance_past_the_clamp_gives_autograds_values_and_gradients():
    """Posterior clamps log sigma^2 to [-30, 20]: no gradient flows through a clamped entry."""
    ref, ours = _twins(latent_dim=6, beta=1.0)
    with torch.no_grad():
        for m in (ref, ours):
            m.to_logvar.bias.copy_(torch.tensor([100.0, -100.0, 0.0, 0.0, 100.0, 0.0]))
    x = _images()
    t_ref = ref.loss(x, generator=torch.Generator().manual_seed(7))
    t_ref.total.mean().backward()
    t_ours = fused.FusedLoss(ours).step_gradients(x, generator=torch.Generator().manual_seed(7))
    assert torch.isfinite(t_ours.total).all()
    torch.testing.assert_close(t_ours.total, t_ref.total.detach(), rtol=1e-5, atol=1e-3)
    for (name, p), g in zip(ref.named_parameters(), _grads(ours)):
        # sigma = 2e4 makes decoder gradients of 1e5: float32 sums of such terms differ in the 6th digit
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-5 * float(p.grad.abs().max()), msg=name)
