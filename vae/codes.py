"""`Codes`: a split's posterior parameters as numpy arrays, what maps and scores are made of.

Numpy only, so a process that fits maps from saved codes (vae/map_fit.py) never imports torch."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Codes:
    """Posterior parameters of a split: the mean (the mode, used for maps) and, for a VAE, the log-variance."""

    mean: np.ndarray  # float32 [N, d]
    logvar: np.ndarray | None  # float32 [N, d]; None for the AE (a point mass)
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return self.mean.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.mean.shape[1]

    @property
    def std(self) -> np.ndarray | None:
        return None if self.logvar is None else np.exp(0.5 * self.logvar)


__all__ = ["Codes"]
