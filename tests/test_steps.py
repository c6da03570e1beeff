"""vae/steps.py: every backend trains, compile computes autograd's loss, unsupported backends say so."""
import pytest
import torch

from vae import ConfigError, TrainConfig, Trainer
from vae.distributed import Distributed
from vae.models import Autoencoder, ModelConfig
from vae.steps import compile_unavailable, make_step, resolve_backend

NO_COMPILE = compile_unavailable("cpu")
needs_compiler = pytest.mark.skipif(NO_COMPILE is not None, reason=f"backend 'compile' skipped: {NO_COMPILE}")


def tiny(variational=True, **overrides) -> Autoencoder:
    torch.manual_seed(0)
    return Autoencoder(ModelConfig(**{"family": "mlp", "hidden": (32,), "latent_dim": 2,
                                      "variational": variational, **overrides}))


def _first_and_last_epoch_loss(backend: str, blobs, **overrides) -> tuple[float, float]:
    model = tiny(**overrides)
    trainer = Trainer({"vae": model}, blobs, TrainConfig(epochs=3, batch_size=32, lr=3e-3, backend=backend))
    history = trainer.fit().history["vae"]
    assert trainer.steps["vae"].backend == backend
    return history[0]["train"]["total"], history[-1]["train"]["total"]


@pytest.mark.parametrize("backend", ["autograd", "fused", pytest.param("compile", marks=needs_compiler)])
def test_every_backend_trains_a_tiny_vae_and_its_loss_falls(backend, blobs):
    first, last = _first_and_last_epoch_loss(backend, blobs)
    assert last < 0.9 * first, (first, last)


@needs_compiler
def test_compile_and_autograd_take_the_same_step_from_the_same_noise():
    """One step from the same weights, batch and generator state: compile draws the noise outside
    its graph, exactly as autograd draws it. Tolerance: inductor fuses and reorders the float32
    sums (784 pixels per image), so the loss agrees to 1e-5 relative, the gradients to 1e-4."""
    x = (torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1)) > 0.7).float()
    ref, ours = tiny(), tiny()
    terms, grads = {}, {}
    for name, model in (("autograd", ref), ("compile", ours)):
        step = make_step(model, torch.optim.SGD(model.parameters(), lr=0.0), name)  # lr 0: weights stay
        terms[name] = step(x, torch.Generator().manual_seed(7))
        grads[name] = [p.grad for p in model.parameters()]
    for part in ("recon", "kl", "total"):
        torch.testing.assert_close(getattr(terms["compile"], part), getattr(terms["autograd"], part),
                                   rtol=1e-5, atol=1e-4)
    for g_compile, g_autograd in zip(grads["compile"], grads["autograd"]):
        torch.testing.assert_close(g_compile, g_autograd, rtol=1e-4, atol=1e-6)


def test_the_noise_a_step_is_given_is_the_noise_loss_would_draw():
    model, x = tiny(), torch.rand(8, 1, 28, 28)
    drawn = model.loss(x, generator=torch.Generator().manual_seed(3))
    given = model.loss(x, noise=model.draw_noise(8, torch.Generator().manual_seed(3)))
    assert torch.equal(drawn.total, given.total)
    assert tiny(variational=False).draw_noise(8) is None  # the AE draws none


def test_auto_is_fused_where_it_applies_and_autograd_elsewhere():
    assert resolve_backend(tiny()) == "fused"
    assert resolve_backend(tiny(likelihood="gaussian-fixed")) == "autograd"
    assert TrainConfig().backend == "auto"


def test_a_backend_that_cannot_train_the_model_says_why(blobs):
    with pytest.raises(ConfigError, match="backend 'fused' implements MLP models .* not mlp/gaussian-fixed"):
        Trainer({"vae": tiny(likelihood="gaussian-fixed")}, blobs, TrainConfig(backend="fused"))
    two = Distributed(rank=0, world_size=2, local_rank=0, backend="gloo")
    with pytest.raises(ConfigError, match="one process only"):
        resolve_backend(tiny(), "compile", two)
    with pytest.raises(ConfigError, match="backend='jit' is invalid"):
        resolve_backend(tiny(), "jit")
