"""A beta sweep: one family of models from the AE (beta = 0) to VAEs whose KL weight is past the
point where the posterior collapses (Higgins et al. 2017's beta-VAE; Alemi et al. 2018 read the
family as points on a rate-distortion curve: KL nats against reconstruction nats).

Members are named `beta-<value>` and trained together, in lockstep on the same batches, from
the same seed (`python -m vae.train --beta 0,0.1,1,4`), so the only difference between two
members is the KL weight. `find_families` lists the families in checkpoint folders.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import read_metadata
from .errors import CheckpointError, ConfigError
from .models import Autoencoder

MEMBER = re.compile(r"^(?P<family>.+)-beta-(?P<beta>\d+(?:\.\d+)?(?:e-?\d+)?)\.safetensors$")


def member_name(beta: float) -> str:
    return f"beta-{beta:g}"


def sweep_models(preset: str, image_shape, betas, latent_dim: int | None = None, seed: int = 0
                 ) -> dict[str, Autoencoder]:
    """member name -> fresh model: the preset's AE for beta 0, its VAE with that KL weight otherwise,
    each drawn from the same seed."""
    from .train import make_pair

    if len(set(betas)) != len(list(betas)) or any(b < 0 for b in betas):
        raise ConfigError(f"betas={list(betas)!r} is invalid: expected distinct numbers >= 0")
    models = {}
    for beta in sorted(betas):
        kind = "ae" if beta == 0 else "vae"
        models[member_name(beta)] = make_pair(preset, image_shape, (kind,), latent_dim=latent_dim,
                                              beta=beta or None, seed=seed)[kind]
    return models


@dataclass(frozen=True)
class Family:
    name: str
    folder: str
    members: tuple  # ((beta, path), ...) by beta
    preset: str
    latent_dim: int
    dataset: str

    @property
    def betas(self) -> list[float]:
        return [b for b, _ in self.members]

    def path(self, beta: float) -> str:
        return dict(self.members)[beta]


def find_families(folders) -> list[Family]:
    """Every family of two or more `<name>-beta-<value>.safetensors` files per folder, by name."""
    found: dict[tuple, list] = {}
    for folder in folders:
        if not Path(folder).is_dir():
            continue
        for path in sorted(Path(folder).glob("*-beta-*.safetensors")):
            m = MEMBER.match(path.name)
            if m:
                found.setdefault((str(folder), m["family"]), []).append((float(m["beta"]), str(path)))
    families = []
    for (folder, name), members in sorted(found.items(), key=lambda kv: kv[0][1]):
        if len(members) < 2:
            continue
        try:
            meta = read_metadata(members[0][1])
        except CheckpointError:
            continue
        cfg = meta.get("model_config", {})
        families.append(Family(name, folder, tuple(sorted(members)), cfg.get("preset", ""),
                               int(cfg.get("latent_dim", 0)), str(meta.get("dataset", {}).get("name", ""))))
    return families
