"""Latent Explorer's library: data, AE/VAE models, losses, training, checkpoints, projections
and metrics. It never imports streamlit (a test checks), so it runs in scripts and notebooks."""
from .checkpoint import Checkpoint, load_checkpoint, read_metadata, save_checkpoint
from .data import ImageDataset, ImageSplit, load_dataset
from .device import pick_device
from .errors import CheckpointError, ConfigError, DatasetError, LatentExplorerError
from .models import Autoencoder, ModelConfig, Posterior, build_model
from .presets import PRESETS, get_preset

__all__ = [
    "Autoencoder", "Callback", "Checkpoint", "CheckpointError", "ConfigError", "DatasetError",
    "ImageDataset", "ImageSplit", "LatentExplorerError", "ModelConfig", "PRESETS", "Posterior",
    "Progress", "TrainConfig", "TrainResult", "Trainer", "build_model", "get_preset",
    "load_checkpoint", "load_dataset", "make_pair", "pick_device", "read_metadata", "save_checkpoint",
]


_LAZY = {"Callback", "Progress", "TrainConfig", "Trainer", "TrainResult", "make_pair"}


def __getattr__(name):
    # vae.train is imported on first use: `python -m vae.train` must not find it pre-imported
    if name in _LAZY:
        from . import train

        return getattr(train, name)
    raise AttributeError(f"module 'vae' has no attribute {name!r}")
