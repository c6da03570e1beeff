"""A small reference CNN per data set: the judge for completeness, continuity and the Fréchet
distance in `vae.metrics`.

A generated image "looks like a digit" when this classifier, trained on real images, gives it
one class with high probability; its penultimate layer (global average pool) gives the
features for the Fréchet distance (the role Inception-v3's pool3 plays in FID, Heusel et al.
2017, here with a network trained on the data set itself).

The file format mirrors `vae.checkpoint`: safetensors weights plus JSON metadata (format
"latent-explorer-classifier/1"), written atomically. `python -m vae.classifier --data PATH
--out FILE --epochs N` trains one and prints its test accuracy.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .atomic import SHARED, atomic_path
from .data import ImageDataset, ImageSplit
from .errors import CheckpointError, ConfigError, run_cli
from .latent import evaluating

FORMAT = "latent-explorer-classifier/1"
_META_KEY = "latent_explorer"


ARCHS = ("cnn", "mlp")


@dataclass
class ClassifierConfig:
    """`cnn`: stages of two 3x3 conv + BatchNorm + ReLU layers, each followed by a 2x2 max-pool.
    `mlp`: fully connected ReLU layers of widths `hidden` on the raw pixels — a second judge of
    another family, which sees no translation invariance and shares none of the CNN's biases."""

    image_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    channels: tuple[int, ...] = (16, 32, 64)
    arch: str = "cnn"
    hidden: tuple[int, ...] = (512, 256)

    def __post_init__(self) -> None:
        self.image_shape = tuple(int(v) for v in self.image_shape)
        self.channels = tuple(int(v) for v in self.channels)
        self.hidden = tuple(int(v) for v in self.hidden)
        if self.arch not in ARCHS:
            raise ConfigError(f"arch={self.arch!r} is invalid: expected one of {', '.join(ARCHS)}")
        if self.arch == "mlp":
            if not self.hidden or min(self.hidden) < 1:
                raise ConfigError(f"hidden={self.hidden!r} is invalid: expected positive widths")
            return
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ConfigError(f"image_shape={self.image_shape!r} is invalid: expected (channels, height, width)")
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ConfigError(f"num_classes={self.num_classes!r} is invalid: expected an integer >= 2")
        if not self.channels or min(self.channels) < 1:
            raise ConfigError(f"channels={self.channels!r} is invalid: expected positive widths")
        if min(self.image_shape[1:]) < 2 ** len(self.channels):
            raise ConfigError(f"image_shape={self.image_shape!r} is too small for {len(self.channels)} pooling stages")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_shape"], d["channels"], d["hidden"] = list(self.image_shape), list(self.channels), list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ClassifierConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown classifier config keys: {sorted(unknown)}")
        return cls(**d)


def default_config(image_shape, num_classes: int) -> ClassifierConfig:
    """Grey 28x28 digits need little; colour 32x32 objects get twice the width (~290k weights)."""
    channels = (32, 64, 128) if image_shape[0] == 3 else (16, 32, 64)
    return ClassifierConfig(image_shape=tuple(image_shape), num_classes=num_classes, channels=channels)


class Classifier(nn.Module):
    """Images in [0, 1] -> class logits. `probs` and `features` are the no-grad conveniences."""

    def __init__(self, config: ClassifierConfig, classes: list[str] | None = None, dataset: str = "",
                 test_accuracy: float | None = None):
        super().__init__()
        self.config = config
        self.classes = list(classes) if classes else [str(i) for i in range(config.num_classes)]
        self.dataset, self.test_accuracy = dataset, test_accuracy
        self.body, width = (_mlp_body if config.arch == "mlp" else _cnn_body)(config)
        self.head = nn.Linear(width, config.num_classes)

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    @property
    def name(self) -> str:
        """What the app and the CLI call this judge, e.g. "CNN (99.5% on MNIST test)"."""
        acc = f" ({self.test_accuracy:.1%} on test images)" if self.test_accuracy else ""
        return ("MLP on pixels" if self.config.arch == "mlp" else "CNN") + acc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body((x - 0.5) / 0.25))  # fixed scaling; BatchNorm does the rest

    def probs(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Softmax class probabilities [N, classes] of float images in [0, 1] (uint8 accepted)."""
        return self._batched(lambda x: F.softmax(self(x), dim=1), images, batch_size)

    def features(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Penultimate-layer activations [N, feature_dim]: the Fréchet distance's features."""
        return self._batched(lambda x: self.body((x - 0.5) / 0.25), images, batch_size)

    @torch.no_grad()
    def _batched(self, fn, images: torch.Tensor, batch_size: int) -> torch.Tensor:
        device = next(self.parameters()).device
        with evaluating(self):  # a shared model: back in its mode even if this raises
            out = [fn(as_unit_float(chunk).to(device)).cpu() for chunk in images.split(batch_size)]
        return torch.cat(out) if out else torch.empty(0)


def _cnn_body(config: ClassifierConfig) -> tuple[nn.Sequential, int]:
    layers, cin = [], config.image_shape[0]
    for cout in config.channels:
        layers += [_conv_bn_relu(cin, cout), _conv_bn_relu(cout, cout), nn.MaxPool2d(2)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), cin


def _mlp_body(config: ClassifierConfig) -> tuple[nn.Sequential, int]:
    layers, cin = [nn.Flatten()], math.prod(config.image_shape)
    for cout in config.hidden:
        layers += [nn.Linear(cin, cout), nn.ReLU(inplace=True), nn.Dropout(0.2)]
        cin = cout
    return nn.Sequential(*layers), cin


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def as_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> floats in [0, 1]; float images pass through."""
    return images.to(torch.float32) / 255.0 if images.dtype == torch.uint8 else images.to(torch.float32)


# --- training ----------------------------------------------------------------------------------
@dataclass
class ClassifierTrainConfig:
    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.05  # peak of the one-cycle schedule (Smith & Topin 2019), SGD with Nesterov momentum
    weight_decay: float = 5e-4
    seed: int = 0
    augment: bool | None = None  # None: random crop + flip for colour images only
    channels: tuple[int, ...] | None = None  # None: `default_config`'s
    arch: str = "cnn"
    hidden: tuple[int, ...] | None = None  # mlp widths; None: ClassifierConfig's

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or not 1 <= self.epochs <= 1000:
            raise ConfigError(f"epochs={self.epochs!r} is invalid: expected an integer from 1 to 1000")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size!r} is invalid: expected an integer >= 1")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 10):
            raise ConfigError(f"lr={self.lr!r} is invalid: expected a number in (0, 10]")


def train_classifier(dataset: ImageDataset, epochs: int = 5, *, config: ClassifierTrainConfig | None = None,
                     log=None, **kwargs) -> Classifier:
    """Train a fresh classifier on `dataset.train`; sets `.test_accuracy` on `dataset.test`.

    Batches are index gathers from the resident uint8 tensor (as in `vae.train`); `log`, if
    given, is called with one line per epoch.
    """
    cfg = config or ClassifierTrainConfig(epochs=epochs, **kwargs)
    torch.manual_seed(cfg.seed)
    model = Classifier(_architecture(cfg, dataset), dataset.classes, dataset.name).to(memory_format=torch.channels_last)
    augment = dataset.image_shape[0] == 3 if cfg.augment is None else cfg.augment
    images, labels = dataset.train.images, dataset.train.labels
    steps = math.ceil(len(images) / cfg.batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(cfg.epochs):
        start, loss_sum = time.perf_counter(), 0.0
        model.train()
        for idx in torch.randperm(len(images), generator=gen).split(cfg.batch_size):
            x = as_unit_float(images[idx])
            x = random_crop_flip(x, gen) if augment else x
            x = x.contiguous(memory_format=torch.channels_last)  # ~30% faster convolutions on CPU
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
        model.test_accuracy = accuracy(model, dataset.test)
        if log:
            log(f"epoch {epoch + 1}/{cfg.epochs}  train loss {loss_sum / len(images):.4f}  "
                f"test accuracy {model.test_accuracy:.2%}  ({time.perf_counter() - start:.0f} s)")
    model.eval()
    return model


def _architecture(cfg: ClassifierTrainConfig, dataset: ImageDataset) -> ClassifierConfig:
    base = default_config(dataset.image_shape, len(dataset.classes))
    extra = {"hidden": tuple(cfg.hidden)} if cfg.hidden else {}
    return ClassifierConfig(base.image_shape, base.num_classes, tuple(cfg.channels or base.channels), cfg.arch, **extra)


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Per-image random shifts of up to `pad` pixels (reflect padding) and horizontal flips."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy, dx = (torch.randint(0, 2 * pad + 1, (2, b), generator=generator))
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # [B, H, 1]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # [B, 1, W]
    out = padded.permute(0, 2, 3, 1)[torch.arange(b)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    flip = torch.rand(b, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out).contiguous()


def accuracy(model: Classifier, split: ImageSplit, batch_size: int = 1000) -> float:
    predicted = model.probs(split.images, batch_size).argmax(1)
    return float((predicted == split.labels).float().mean())


# --- files ---------------------------------------------------------------------------------------
def save_classifier(model: Classifier, path: str | Path, train: dict | None = None) -> Path:
    """safetensors + JSON metadata, written atomically (vae/atomic.py), as `vae.checkpoint`."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": model.config.to_dict(), "dataset": model.dataset,
            "classes": model.classes, "test_accuracy": model.test_accuracy, "train": train or {}}
    with atomic_path(path, SHARED) as tmp:  # a shipped model is for every reader
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(meta)})
    return path


def read_classifier_metadata(path: str | Path) -> dict:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such classifier file")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
        meta = json.loads(raw) if raw is not None else None
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable classifier file ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else meta
        raise CheckpointError(f"{path}: not a Latent Explorer classifier (format {found!r}, expected {FORMAT!r})")
    return meta


def load_classifier(path: str | Path, map_location: str | torch.device = "cpu") -> Classifier:
    """Rebuild the classifier from the file alone; any problem raises CheckpointError naming the file."""
    path = Path(path)
    meta = read_classifier_metadata(path)
    try:
        tensors = load_file(str(path), device=str(map_location))
        model = Classifier(ClassifierConfig.from_dict(meta["config"]), meta.get("classes"),
                           meta.get("dataset", ""), meta.get("test_accuracy"))
        model.load_state_dict(tensors, strict=True)
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: corrupt classifier file, or weights that do not match "
                              f"its config ({err})") from err
    return model.eval()


# --- command line --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vae.classifier", description="Train the reference classifier "
                                "of a data set (the judge of vae.metrics) and print its test accuracy.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="mnist, fashion-mnist, cifar10, a .npz file or an image folder")
    p.add_argument("--out", required=True, help="where to write the .safetensors file")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", choices=ARCHS, default="cnn", help="cnn, or mlp: fully connected layers on the pixels "
                   "(a second, independent judge)")
    p.add_argument("--channels", default=None, help="cnn: conv widths per stage, e.g. 32,64,128 (default: by image shape)")
    p.add_argument("--hidden", default=None, help="mlp: hidden widths, e.g. 512,256")
    p.add_argument("--no-augment", action="store_true", help="no random crop/flip (the default for grey images)")
    p.add_argument("--limit-train", type=int, default=None, help="use a random subset of the training split")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _run, argv)


def _run(args) -> int:
    from .data import load_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.data, fallback=False)
    if args.limit_train:
        data = data.limit(args.limit_train, seed=args.seed)
    channels = tuple(int(c) for c in args.channels.split(",")) if args.channels else None
    hidden = tuple(int(c) for c in args.hidden.split(",")) if args.hidden else None
    cfg = ClassifierTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                augment=False if args.no_augment else None, channels=channels, arch=args.arch,
                                hidden=hidden)
    print(f"training the {data.name} classifier on {len(data.train):,} images, {cfg.epochs} epochs", flush=True)
    start = time.perf_counter()
    model = train_classifier(data, config=cfg, log=lambda line: print(line, flush=True))
    train = asdict(cfg) | {"data": str(args.data), "wall_s": round(time.perf_counter() - start, 1)}
    path = save_classifier(model, args.out, train=train)
    print(f"test accuracy {model.test_accuracy:.2%} on {len(data.test):,} {data.name} test images -> {path} "
          f"({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
