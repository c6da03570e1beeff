"""Encoder and decoder networks, one pair per family.

Every encoder maps float images [B, C, H, W] to features [B, F] (the mean and log-variance
heads sit in `models.Autoencoder`); every decoder maps codes [B, latent] to [B, C, H, W].
"""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from .config import ModelConfig


def build_encoder(cfg: ModelConfig) -> tuple[nn.Module, int]:
    return _BUILDERS[cfg.family][0](cfg)


def build_decoder(cfg: ModelConfig) -> nn.Module:
    decoder = _BUILDERS[cfg.family][1](cfg)
    return nn.Sequential(decoder, _output_activation(cfg))


def _output_activation(cfg: ModelConfig) -> nn.Module:
    # Bernoulli decoders return logits (the loss applies the sigmoid, stably); Gaussian means
    # are squashed into the data range: Tanh for the tutorial's [-1, 1] data.
    if cfg.likelihood == "bernoulli":
        return nn.Identity()
    return nn.Tanh() if cfg.data_range == "symmetric" else nn.Sigmoid()


# --- MLP -----------------------------------------------------------------------------------
def _mlp_encoder(cfg: ModelConfig) -> tuple[nn.Module, int]:
    layers, width = [nn.Flatten()], cfg.num_pixels
    for h in cfg.hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers), width


def _mlp_decoder(cfg: ModelConfig) -> nn.Module:
    layers, width = [], cfg.latent_dim
    for h in reversed(cfg.hidden):
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers += [nn.Linear(width, cfg.num_pixels), nn.Unflatten(1, cfg.image_shape)]
    return nn.Sequential(*layers)


# --- the tutorial's VAEonMNIST: 784-196-49-28, BatchNorm momentum 0.7 -----------------------
def _tutorial_encoder(cfg: ModelConfig) -> tuple[nn.Module, int]:
    m = cfg.batchnorm_momentum
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(cfg.num_pixels, 196), nn.ReLU(), nn.BatchNorm1d(196, momentum=m),
        nn.Linear(196, 49), nn.ReLU(), nn.BatchNorm1d(49, momentum=m),
        nn.Linear(49, 28), nn.LeakyReLU(),
    ), 28


def _tutorial_decoder(cfg: ModelConfig) -> nn.Module:
    return nn.Sequential(
        nn.Linear(cfg.latent_dim, 49), nn.ReLU(),
        nn.Linear(49, 196), nn.ReLU(),
        nn.Linear(196, cfg.num_pixels), nn.Unflatten(1, cfg.image_shape),
    )


# --- small convolutional net (trains on CIFAR-10 on a 2-core CPU) ---------------------------
def _conv_encoder(cfg: ModelConfig) -> tuple[nn.Module, int]:
    c, h, w = cfg.image_shape
    layers, cin = [], c
    for cout in cfg.hidden:  # each stage halves the resolution
        layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.ReLU()]
        cin = cout
    k = 2 ** len(cfg.hidden)
    return nn.Sequential(*layers, nn.Flatten()), cin * (h // k) * (w // k)


def _conv_decoder(cfg: ModelConfig) -> nn.Module:
    c, h, w = cfg.image_shape
    k = 2 ** len(cfg.hidden)
    chans = list(reversed(cfg.hidden))
    layers: list[nn.Module] = [nn.Linear(cfg.latent_dim, chans[0] * (h // k) * (w // k)), nn.ReLU(),
                               nn.Unflatten(1, (chans[0], h // k, w // k))]
    for cin, cout in zip(chans, chans[1:]):
        layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.ReLU()]
    layers.append(nn.ConvTranspose2d(chans[-1], c, 4, 2, 1))
    return nn.Sequential(*layers)


# --- ResNet-18 for 32x32 inputs: 3x3 first conv, no max-pool; mirrored decoder --------------
def _resnet18_encoder(cfg: ModelConfig) -> tuple[nn.Module, int]:
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(cfg.image_shape[0], 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net, 512


class _UpBasicBlock(nn.Module):
    """ResNet's basic block run backwards: optional nearest-neighbour upsampling first."""

    def __init__(self, cin: int, cout: int, scale: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=scale, mode="nearest") if scale > 1 else nn.Identity()
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def _resnet18_decoder(cfg: ModelConfig) -> nn.Module:
    c, h, w = cfg.image_shape
    stages = [(512, 256, 2), (256, 128, 2), (128, 64, 2), (64, 64, 1)]  # layer4 .. layer1
    blocks: list[nn.Module] = []
    for cin, cout, scale in stages:
        blocks += [_UpBasicBlock(cin, cout, scale), _UpBasicBlock(cout, cout, 1)]
    return nn.Sequential(
        nn.Linear(cfg.latent_dim, 512 * (h // 8) * (w // 8)), nn.Unflatten(1, (512, h // 8, w // 8)),
        *blocks, nn.Conv2d(64, c, 3, 1, 1),
    )


_BUILDERS = {
    "mlp": (_mlp_encoder, _mlp_decoder),
    "tutorial-mlp": (_tutorial_encoder, _tutorial_decoder),
    "conv": (_conv_encoder, _conv_decoder),
    "resnet18": (_resnet18_encoder, _resnet18_decoder),
}
