"""What every model is built from: `ModelConfig`, stored in every checkpoint as plain JSON.

Its own module so that `vae.models` (the AE/VAE) and `vae.networks` (the encoder and decoder
families) both import it without importing each other.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from .errors import ConfigError

FAMILIES = ("mlp", "tutorial-mlp", "conv", "resnet18")
LIKELIHOODS = ("bernoulli", "gaussian-fixed", "gaussian-learned")
DATA_RANGES = ("unit", "symmetric")
KL_ESTIMATORS = ("closed-form", "monte-carlo")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored in every checkpoint as plain JSON."""

    family: str = "mlp"
    variational: bool = True
    latent_dim: int = 16
    image_shape: tuple[int, int, int] = (1, 28, 28)
    hidden: tuple[int, ...] = (512, 256)  # MLP widths, or conv channels per stride-2 stage
    likelihood: str = "bernoulli"
    data_range: str = "unit"  # "unit": pixels in [0, 1]; "symmetric": [-1, 1] (Tanh output)
    recon_weight: float = 1.0  # the tutorial's alpha = C = 1/(2c) for a fixed-variance Gaussian
    beta: float = 1.0
    kl_estimator: str = "closed-form"
    batchnorm_momentum: float = 0.1
    init_log_scale: float = 0.0  # learned Gaussian scale's start (the tutorial's 0.0: sigma = 1)
    preset: str = ""

    def __post_init__(self) -> None:
        self.image_shape = tuple(int(v) for v in self.image_shape)
        self.hidden = tuple(int(v) for v in self.hidden)
        _check(self.family in FAMILIES, "family", self.family, f"one of {FAMILIES}")
        _check(self.likelihood in LIKELIHOODS, "likelihood", self.likelihood, f"one of {LIKELIHOODS}")
        _check(self.data_range in DATA_RANGES, "data_range", self.data_range, f"one of {DATA_RANGES}")
        _check(self.kl_estimator in KL_ESTIMATORS, "kl_estimator", self.kl_estimator, f"one of {KL_ESTIMATORS}")
        _check(isinstance(self.latent_dim, int) and not isinstance(self.latent_dim, bool) and 1 <= self.latent_dim <= 4096,
               "latent_dim", self.latent_dim, "an integer from 1 to 4096")
        _check(len(self.image_shape) == 3 and min(self.image_shape) >= 1, "image_shape",
               self.image_shape, "(channels, height, width)")
        _check(len(self.hidden) >= 1 and min(self.hidden) >= 1, "hidden", self.hidden, "positive widths")
        _check(math.isfinite(self.beta) and self.beta >= 0, "beta", self.beta, "a number >= 0")
        _check(math.isfinite(self.recon_weight) and self.recon_weight > 0, "recon_weight",
               self.recon_weight, "a number > 0")
        _check(0 < self.batchnorm_momentum <= 1, "batchnorm_momentum", self.batchnorm_momentum, "in (0, 1]")
        _check(not (self.likelihood == "bernoulli" and self.data_range != "unit"), "likelihood",
               self.likelihood, "used with data_range='unit' (Bernoulli needs pixels in [0, 1])")
        if self.family in ("conv", "resnet18"):
            stride = 2 ** len(self.hidden) if self.family == "conv" else 8
            _, h, w = self.image_shape
            _check(h % stride == 0 and w % stride == 0, "image_shape", self.image_shape,
                   f"height and width divisible by {stride} for the {self.family} family")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_shape"], d["hidden"] = list(self.image_shape), list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)

    @property
    def kind(self) -> str:
        return "vae" if self.variational else "ae"

    @property
    def num_pixels(self) -> int:
        c, h, w = self.image_shape
        return c * h * w


def _check(ok: bool, name: str, value, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid: expected {expected}")
