"""`python -m ui.prebuild`: fit the slow latent maps (UMAP, t-SNE) of the shipped pairs once,
into the app's projection cache, so the first visitor who picks one does not wait a minute; and
measure every member of the shipped β sweeps into the β dial's cache (15-25 s per sweep otherwise).

The Space's Dockerfile runs it at build time: the maps (and the data sets they need, downloaded
into LATENT_EXPLORER_DATA) are then part of the image, and a restarted Space has them at once.
It reads the same settings as the app (LATENT_EXPLORER_STATE, LATENT_EXPLORER_CHECKPOINTS) and
writes exactly the files the Latent map and Grid decoder pages look for.
"""
from __future__ import annotations

import argparse
import sys
import time

from pathlib import Path

from vae import catalog, sweep
from vae.checkpoint import load_checkpoint, read_metadata
from vae.classifier import load_classifier
from vae.errors import LatentExplorerError, run_cli
from vae.evaluate import judges_for
from vae.maps import DEFAULT_SAMPLE, SLOW_METHODS, build_latent_map, data_id
from vae.projections import ProjectionCache, available_methods, file_sha256

from .settings import load_settings

# Streamlit-free on purpose (a test checks it): it runs at image build time, and it shares with the
# pages only the library and the settings, so what it writes is what they read by construction.


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ui.prebuild", description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(SLOW_METHODS), choices=list(SLOW_METHODS))
    p.add_argument("--n", type=int, default=DEFAULT_SAMPLE, help="test images per map (the pages' default)")
    return p


def prebuild(methods: list[str], n: int) -> list[str]:
    """One line per (pair, method): what was done and how long it took."""
    settings = load_settings()
    cache = ProjectionCache(settings.cache_dir / "projections")
    pairs, problems = catalog.find_pairs([settings.shipped_dir])
    lines = [f"skipped an unreadable checkpoint: {p}" for p in problems]
    for pair in pairs:
        try:
            checkpoints = {kind: load_checkpoint(path) for kind, path in pair.paths.items()}
            data = catalog.data_for(next(iter(checkpoints.values())).dataset, pair.image_shape)
        except LatentExplorerError as err:
            lines.append(f"{pair.name}: skipped ({err})")
            continue
        models = {kind: ck.model for kind, ck in checkpoints.items()}
        ids = {kind: file_sha256(path) for kind, path in pair.paths.items()}  # ui.maps.model_id, uncached
        dkey, n_used = data_id(data.name, data.test), min(n, len(data.test))
        for method in (m for m in methods if m in available_methods(pair.latent_dim)):
            lmap = build_latent_map(models, data.test, data.classes, method, n_used, model_ids=ids,
                                    data_key=dkey, cache=cache)
            state = "already cached" if lmap.from_disk else "fitted and saved"
            lines.append(f"{pair.name} {method} ({n_used:,} images): {state} in {lmap.seconds:.1f} s")
    return lines


def prebuild_sweeps() -> list[str]:
    """One line per shipped β sweep: its members measured into the β dial's disk cache, or found there."""
    settings, lines = load_settings(), []
    cache = sweep.MemberCache(Path(settings.cache_dir) / "beta")  # ui.beta.member_cache
    for family in sweep.find_families([settings.shipped_dir]):
        t0 = time.perf_counter()
        try:
            meta = read_metadata(family.members[0][1]).get("dataset", {})
            data = catalog.data_for(meta, tuple(family.image_shape))
            judges, bad = judges_for(family.dataset, family.image_shape, [settings.shipped_dir])
            lines += [f"{family.name} β dial: left out an unreadable judge ({msg})" for msg in bad]
            members, measured = sweep.measure_members(
                family, data.test, data_id(data.name, data.test), judges, cache, sha=file_sha256,
                load_model=load_checkpoint, load_judges=lambda paths: sweep.judge_names(map(load_classifier, paths)))
        except LatentExplorerError as err:
            lines.append(f"{family.name} β dial: skipped ({err})")
            continue
        done = "already cached" if not measured else f"{measured} of {len(members)} measured and saved"
        lines.append(f"{family.name} β dial ({len(members)} members): {done} in {time.perf_counter() - t0:.1f} s")
    return lines


def _run(args) -> int:
    if args.n < 1:
        print("error: --n must be at least 1", file=sys.stderr)
        return 2
    for line in prebuild(args.methods, args.n):
        print(line, flush=True)
    for line in prebuild_sweeps():
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(build_parser(), _run))
