"""Named AE/VAE pairs: the tutorial's two models and our teaching defaults.

A preset fixes the architecture and likelihood; latent size and beta stay parameters.
Each preset also suggests training hyper-parameters that work on a laptop CPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from .errors import ConfigError
from .models import ModelConfig


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    base: ModelConfig
    default_dataset: str
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    notes: tuple[str, ...] = field(default_factory=tuple)

    def config(self, variational: bool, *, image_shape=None, latent_dim: int | None = None,
               beta: float | None = None) -> ModelConfig:
        """The ModelConfig of the AE (variational=False) or the VAE of this pair."""
        changes = {"variational": bool(variational), "preset": self.name}
        if image_shape is not None:
            changes["image_shape"] = tuple(image_shape)
        if latent_dim is not None:
            changes["latent_dim"] = latent_dim
        if beta is not None:
            changes["beta"] = beta
        return replace(self.base, **changes)  # replace() re-runs the config's validation


_MNIST = (1, 28, 28)
_CIFAR = (3, 32, 32)

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset(
        "tutorial-mnist-mlp",
        "The tutorial's VAEonMNIST: MLP 784-196-49-28, BatchNorm (momentum 0.7), latent 28, "
        "Tanh output on [-1, 1] pixels, loss alpha * ||x - x'||^2 + KL.",
        ModelConfig(family="tutorial-mlp", latent_dim=28, image_shape=_MNIST, likelihood="gaussian-fixed",
                    data_range="symmetric", recon_weight=1.0, batchnorm_momentum=0.7),
        default_dataset="mnist", epochs=10, batch_size=128, lr=1e-3,
    ),
    Preset(
        "tutorial-cifar-resnet18",
        "The tutorial's CIFAR-10 VAE: ResNet-18 encoder (3x3 first conv, no max-pool), mirrored "
        "upsampling decoder, enc_out 512, latent 256, Gaussian likelihood with a learned "
        "log-scale, Monte-Carlo KL, Adam lr 1e-4. Needs a GPU to train in reasonable time.",
        ModelConfig(family="resnet18", latent_dim=256, image_shape=_CIFAR, likelihood="gaussian-learned",
                    kl_estimator="monte-carlo"),
        default_dataset="cifar10", epochs=30, batch_size=256, lr=1e-4,
    ),
    Preset(
        "mnist-2d",
        "MLP 784-512-256-2 with a Bernoulli likelihood: the 2-D latent space is the map itself.",
        ModelConfig(family="mlp", latent_dim=2, image_shape=_MNIST, hidden=(512, 256)),
        default_dataset="mnist", epochs=30, batch_size=128, lr=1e-3,
    ),
    Preset(
        "mnist-mlp",
        "MLP 784-512-256-16 with a Bernoulli likelihood: where sampling the prior separates "
        "the AE from the VAE most clearly.",
        ModelConfig(family="mlp", latent_dim=16, image_shape=_MNIST, hidden=(512, 256)),
        default_dataset="mnist", epochs=30, batch_size=128, lr=1e-3,
    ),
    Preset(
        "cifar-conv",
        "Small conv net (32-64-128 channels, stride 2) with latent 128 and a Gaussian likelihood "
        "with a learned scale; trains on CIFAR-10 on a laptop CPU in minutes per epoch.",
        ModelConfig(family="conv", latent_dim=128, image_shape=_CIFAR, hidden=(32, 64, 128),
                    likelihood="gaussian-learned", init_log_scale=-2.3),  # sigma starts at 0.1
        default_dataset="cifar10", epochs=15, batch_size=128, lr=1e-3,
    ),
]}


# What `python -m vae.train --data X` trains when no preset is named, by the images' channels:
# the first of these that can be built for the images' size. mnist-2d's 2-D latent space is the
# map itself, and an MLP takes any size; cifar-conv trains on colour images on a CPU in minutes
# but needs sides divisible by 8.
DEFAULT_PRESETS = {1: ("mnist-2d",), 3: ("cifar-conv", "mnist-2d")}


def default_preset(image_shape) -> str:
    """The preset to train on images of shape (C, H, W) when none is named."""
    for name in DEFAULT_PRESETS.get(image_shape[0], ()) + ("mnist-2d",):
        try:
            PRESETS[name].config(True, image_shape=image_shape)
        except ConfigError:
            continue
        return name
    raise ConfigError(f"no preset can be built for images of shape {tuple(image_shape)}")


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"preset={name!r} is unknown: choose one of {sorted(PRESETS)}") from None
