"""Pick the fastest device present: CUDA, then Apple's MPS, then the CPU."""
from __future__ import annotations

import torch

from .errors import ConfigError


def pick_device(requested: str = "auto") -> torch.device:
    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise ConfigError(f"device={requested!r} is invalid: expected auto, cpu, cuda or mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={requested!r} is not available on this machine")
    return device
