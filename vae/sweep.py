"""A beta sweep: one family of models from the AE (beta = 0) to VAEs whose KL weight is past the
point where the posterior collapses (Higgins et al. 2017's beta-VAE; Alemi et al. 2018 read the
family as points on a rate-distortion curve: KL nats against reconstruction nats).

Members are named `beta-<value>` and trained together, in lockstep on the same batches, from
the same seed (`python -m vae.train --beta 0,0.1,1,4`), so the only difference between two
members is the KL weight. `find_families` lists the families in checkpoint folders.
"""
from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .checkpoint import read_metadata
from .errors import CheckpointError, ConfigError
from .grids import grid_points_2d
from .latent import decode_points, encode_means, encode_split, sample_prior
from .lesson import judge_images, prior_sample_images
from .maps import sample_indices
from .metrics import active_units
from .models import Autoencoder
from .atomic import write_npz
from .projections import key_json, make_projection
from .train import make_pair

MEMBER = re.compile(r"^(?P<family>.+)-beta-(?P<beta>\d+(?:\.\d+)?(?:e-?\d+)?)\.safetensors$")


def member_name(beta: float) -> str:
    return f"beta-{beta:g}"


def sweep_models(preset: str, image_shape, betas, latent_dim: int | None = None, seed: int = 0
                 ) -> dict[str, Autoencoder]:
    """member name -> fresh model: the preset's AE for beta 0, its VAE with that KL weight otherwise,
    each drawn from the same seed."""
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
    image_shape: tuple = ()

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
                               int(cfg.get("latent_dim", 0)), str(meta.get("dataset", {}).get("name", "")),
                               tuple(cfg.get("image_shape", ()))))
    return families


# --- what the dial shows: each member measured and drawn on the same axes -------------------------
VIEW = 3.5  # every member's map and grid on the same window, [-VIEW, VIEW]^2: the prior's world


@dataclass(frozen=True)
class Member:
    """One member of a family, ready to show: figures and pictures on the family's shared axes."""

    beta: float
    figures: dict  # recon, kl, neg_elbo (test, from training), prior recognised/entropy per judge, active_units
    points: object  # [N, 2] test codes on the shared axes (2-D: the code; more: its own PCA plane)
    labels: object  # [N]
    grid: object  # decoded grid images [n*n, H, W, C]
    samples: object  # 16 prior samples [16, H, W, C]
    recons: object  # [2, H, W, C] reconstructions of two fixed test images


def member_view(ckpt, test, judges: dict, n_points: int = 1000, grid_n: int = 10, seed: int = 0) -> Member:
    """Everything the dial shows for one member, computed once (the app caches it, `ui.prebuild`
    bakes it in). Judges: name -> classifier."""
    model = ckpt.model.eval()
    idx = sample_indices(len(test), n_points, seed)
    codes = encode_split(model, type(test)(test.images[idx], test.labels[idx]))
    dim = codes.latent_dim
    proj = make_projection("identity" if dim == 2 else "pca", dim, seed=seed).fit(codes)
    grid_codes = proj.inverse_transform(grid_points_2d((-VIEW + VIEW / grid_n, VIEW - VIEW / grid_n),
                                                       (-VIEW + VIEW / grid_n, VIEW - VIEW / grid_n), grid_n))
    figures = {k: ckpt.metrics[k] for k in ("recon", "kl", "neg_elbo") if k in ckpt.metrics}
    figures.setdefault("kl", 0.0)
    figures |= active_units(model, test.subset(2000, seed))
    prior = prior_sample_images(model)
    for name, judge in judges.items():
        v = judge_images(judge, prior)
        figures[f"prior_recognised [{name}]"], figures[f"prior_entropy [{name}]"] = v.recognised, v.entropy
    fixed = test.images[:2]
    return Member(
        beta=float(ckpt.config.beta if ckpt.config.variational else 0.0), figures=figures,
        points=np.asarray(proj.transform(codes.mean), np.float32), labels=codes.labels,
        grid=decode_points(model, np.asarray(grid_codes, np.float32)), samples=sample_prior(model, 16, seed)[1],
        recons=decode_points(model, encode_means(model, fixed).numpy()))


def measure_members(family: Family, test, data_key: str, judge_paths: list[Path], cache: "MemberCache", *,
                    sha: Callable[[Path], str], load_model: Callable[[Path], object],
                    load_judges: Callable[[list[Path]], dict]) -> tuple[list[Member], int]:
    """Each member's view, by β, and how many were measured now: a member whose checkpoint, test
    split and judges (by content: `sha`) were measured before comes from `cache`; only the others
    are measured (a second or so each) and saved. The loaders are the caller's: the app passes
    its cached ones, `ui.prebuild` plain ones; judges are loaded only if a member is measured."""
    judge_shas = [sha(p) for p in judge_paths]
    out, judges, measured = [], None, 0
    for _, path in family.members:
        key = member_key(sha(path), data_key, judge_shas)
        member = cache.load(key)
        if member is None:
            judges = load_judges(judge_paths) if judges is None else judges
            member = member_view(load_model(path), test, judges)
            cache.save(key, member)
            measured += 1
        out.append(member)
    return out, measured


def judge_names(loaded) -> dict:
    """Short name -> classifier: "CNN (99.5% on test images)" is named "CNN" in the figures."""
    return {judge.name.split(" (")[0]: judge for judge in loaded}


# --- on disk: each member's view, computed once per checkpoint content ---------------------------
VIEW_VERSION = 1  # bump when member_view changes what it computes: older files are then ignored
ARRAYS = ("points", "labels", "grid", "samples", "recons")


def member_key(model_sha: str, data_key: str, judge_shas, n_points: int = 1000, grid_n: int = 10,
               seed: int = 0) -> dict:
    """Everything a Member depends on: the checkpoint's and the judges' file contents (sha256),
    the test split (`vae.maps.data_id`), the sample sizes, the shared window and the code version."""
    return {"what": "beta-member", "version": VIEW_VERSION, "model": model_sha, "data": data_key,
            "judges": sorted(judge_shas), "n": int(n_points), "grid": int(grid_n), "seed": int(seed), "view": VIEW}


class MemberCache:
    """Members on disk, one .npz per key (arrays plus the figures as JSON, never pickled), shared
    by every session and server on the folder; `python -m ui.prebuild` fills it at build time.
    A file that cannot be read back, or whose stored key differs, is a miss."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def path_for(self, key: dict) -> Path:
        return self.directory / f"beta-member-{hashlib.sha256(key_json(key).encode()).hexdigest()[:24]}.npz"

    def load(self, key: dict) -> Member | None:
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["key_json"]) != key_json(key):
                    return None
                head = json.loads(str(f["member_json"]))
                return Member(beta=float(head["beta"]), figures=head["figures"], **{k: f[k] for k in ARRAYS})
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
            return None  # truncated, corrupt or an older layout: measure again

    def save(self, key: dict, member: Member) -> None:
        head = {"beta": member.beta, "figures": {k: float(v) for k, v in member.figures.items()}}
        arrays = {k: np.asarray(getattr(member, k)) for k in ARRAYS}
        write_npz(self.path_for(key), arrays | {"key_json": np.array(key_json(key)),
                                                       "member_json": np.array(json.dumps(head))})

