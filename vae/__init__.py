"""Latent Explorer's library: data, AE/VAE models, losses, training, checkpoints, projections
and metrics. It never imports streamlit (a test checks), so it runs in scripts and notebooks.

Every name below is imported on first use (PEP 562), not with the package: `import vae.map_fit`
in the map-fit child must not pull in torch, and `python -m vae.train` must not find its own
module pre-imported. `from vae import Trainer` works as usual."""
from __future__ import annotations

import importlib

_HOMES = {
    "checkpoint": ("Checkpoint", "load_checkpoint", "read_metadata", "save_checkpoint"),
    "data": ("ImageDataset", "ImageSplit", "load_dataset"),
    "device": ("pick_device",),
    "errors": ("CheckpointError", "ConfigError", "DatasetError", "LatentExplorerError"),
    "models": ("Autoencoder", "ModelConfig", "Posterior", "build_model"),
    "presets": ("PRESETS", "get_preset"),
    "train": ("Callback", "Progress", "TrainConfig", "TrainResult", "Trainer", "make_pair"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_HOME_OF)


def __getattr__(name: str):
    if name not in _HOME_OF:
        raise AttributeError(f"module 'vae' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME_OF[name]}", __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
