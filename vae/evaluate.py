"""`python -m vae.evaluate CHECKPOINT [CHECKPOINT...]`: one table, a column per checkpoint, of
likelihood, completeness, continuity, Fréchet distance and active units (see `vae.metrics`).

The reference classifier is found from the checkpoint's data set (checkpoints/classifier-
<dataset>.safetensors) unless --classifier names one; the test data is the checkpoint's own
source (a .npz or folder, if it still exists) or its data set's name, unless --data names one.
`evaluate_checkpoint` returns the same figures as a flat dict for the app to cache.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable

import torch

from . import metrics
from .checkpoint import Checkpoint, load_checkpoint
from .classifier import Classifier, load_classifier
from .data import ImageDataset, load_dataset
from .errors import CheckpointError, ConfigError, LatentExplorerError, run_cli
from .latent import encode_means

# the shipped classifiers live in the repository's checkpoints/, wherever the CLI is run from
CLASSIFIER_DIRS = (Path(__file__).resolve().parent.parent / "checkpoints",)

# (key in evaluate_checkpoint's dict, label, format); the CLI's rows and the app's, in order
ROWS = [
    ("recon", "recon NLL (nats)", ".2f"),
    ("kl", "KL (nats)", ".2f"),
    ("neg_elbo", "-ELBO (nats)", ".2f"),
    ("iwae_nll", "IWAE NLL (nats)", ".2f"),
    ("bits_per_dim", "bits/dim (-ELBO, colour)", ".3f"),
    ("iwae_bits_per_dim", "bits/dim (IWAE, colour)", ".3f"),
    ("prior_confident_share", "completeness: prior samples p>=thr", ".3f"),
    ("box_confident_share", "completeness: box samples p>=thr", ".3f"),
    ("real_confident_share", "real test images p>=thr", ".3f"),
    ("prior_class_evenness", "class evenness (prior)", ".3f"),
    ("box_class_evenness", "class evenness (box)", ".3f"),
    ("max_step_share_mean", "continuity: largest step share", ".3f"),
    ("min_confidence_mean", "continuity: lowest confidence", ".3f"),
    ("frechet_distance", "Fréchet distance (prior vs test)", ".2f"),
    ("active_units", "active units", ".0f"),
    ("latent_dim", "latent dim", ".0f"),
    ("j2_prior_confident_share", "2nd judge: prior samples p>=thr", ".3f"),
    ("j2_box_confident_share", "2nd judge: box samples p>=thr", ".3f"),
    ("j2_real_confident_share", "2nd judge: real test images p>=thr", ".3f"),
    ("j2_prior_class_evenness", "2nd judge: class evenness (prior)", ".3f"),
    ("j2_min_confidence_mean", "2nd judge: lowest confidence", ".3f"),
]


def dataset_key(name: str, image_shape) -> str:
    """'mnist', 'fashion-mnist' or 'cifar10' from a data set's name, else from its image shape."""
    name = name.lower().replace("_", "-")
    if "fashion" in name:
        return "fashion-mnist"
    if "cifar" in name:
        return "cifar10"
    if "mnist" in name:
        return "mnist"
    shape = tuple(image_shape or ())
    if shape == (3, 32, 32):
        return "cifar10"
    if shape == (1, 28, 28):
        return "mnist"
    raise ConfigError(f"no reference classifier for data set {name!r} with images {shape}: pass --classifier")


def find_classifier(ckpt: Checkpoint, dirs=CLASSIFIER_DIRS) -> Path:
    """checkpoints/classifier-<dataset>.safetensors, also looked for beside the checkpoint."""
    return find_classifiers(ckpt, dirs)[0]


def find_classifiers(ckpt: Checkpoint, dirs=CLASSIFIER_DIRS) -> list[Path]:
    """Every judge of the checkpoint's data set: the primary classifier-<dataset>.safetensors
    first, then the independent ones, classifier-<dataset>-<family>.safetensors (e.g. -mlp)."""
    key = dataset_key(str(ckpt.dataset.get("name", "")), ckpt.config.image_shape)
    folders = list(dirs) + ([ckpt.path.parent] if ckpt.path else [])
    found = judge_files(key, folders)
    if not found:
        raise CheckpointError(f"no classifier-{key}.safetensors in {', '.join(map(str, folders))}: train one with "
                              f"`python -m vae.classifier --data ... --out checkpoints/classifier-{key}.safetensors`")
    return found


def judge_files(key: str, folders) -> list[Path]:
    """The judges of data set `key` in the first folder that has its primary one; [] if none does."""
    for folder in dict.fromkeys(Path(f) for f in folders):
        path = folder / f"classifier-{key}.safetensors"
        if path.is_file():
            return [path, *sorted(folder / f"classifier-{key}-{s}.safetensors" for s in ARCH_SUFFIXES
                                  if (folder / f"classifier-{key}-{s}.safetensors").is_file())]
    return []


def readable_judges(paths, load: Callable[[Path], object] = load_classifier) -> tuple[list[Path], list[str]]:
    """Those of `paths` that `load` reads as classifiers, and why each other one does not: a broken
    judge file is left out and named (the app's sidebar, `ui.prebuild`'s log), never raised."""
    good, bad = [], []
    for path in paths:
        try:
            load(path)
        except (LatentExplorerError, OSError) as err:
            bad.append(str(err))
        else:
            good.append(path)
    return good, bad


def judges_for(dataset: str, image_shape, folders, load: Callable[[Path], object] = load_classifier
               ) -> tuple[list[Path], list[str]]:
    """The readable judges of a data set (by name, else image shape) found in `folders`, and a
    message per unreadable one; none for a data set no judge is made for."""
    try:
        key = dataset_key(str(dataset), image_shape)
    except ConfigError:
        return [], []
    return readable_judges(judge_files(key, folders), load)


ARCH_SUFFIXES = ("mlp",)  # classifier-mnist-mlp: the second judge; "fashion" never matches as a suffix


def default_data_source(ckpt: Checkpoint) -> str:
    """The file or folder the checkpoint was trained from if it still exists, else its data set's name."""
    source = str(ckpt.dataset.get("source", ""))
    if source and Path(source).exists():
        return source
    name = str(ckpt.dataset.get("name", ""))
    if not name:
        raise ConfigError(f"{ckpt.path}: the checkpoint names no data set: pass --data")
    return name


def evaluate_checkpoint(checkpoint: str | Path | Checkpoint, data: str | ImageDataset | None = None,
                        classifier: str | Path | Classifier | None = None, n: int = 2000, seed: int = 0,
                        iwae_k: int = 100, iwae_images: int = 1000, n_pairs: int = 200, steps: int = 16,
                        threshold: float = 0.9) -> dict[str, float]:
    """Every figure of ROWS for one checkpoint, as a flat dict of floats (missing: not defined,
    e.g. IWAE for an AE). All figures use the first n test images of a seeded shuffle."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    data = data if isinstance(data, ImageDataset) else load_dataset(data or default_data_source(ckpt))
    judge = classifier if isinstance(classifier, Classifier) else load_classifier(classifier or find_classifier(ckpt))
    _check_shapes(ckpt, data, judge)
    model, test = ckpt.model.eval(), data.test.subset(n, seed)
    out = dict(metrics.likelihood_metrics(model, test, seed=seed))
    out.update(metrics.iwae_nll(model, test, k=iwae_k, seed=seed, n_images=iwae_images))
    out.update(judge_figures(model, test, judge, n, seed, n_pairs, steps, threshold))
    out.update(metrics.sample_fid(model, judge, test, n, seed))
    out.update(metrics.active_units(model, test))
    return out


def judge_figures(model, test, judge: Classifier, n: int = 2000, seed: int = 0, n_pairs: int = 200,
                  steps: int = 16, threshold: float = 0.9) -> dict[str, float]:
    """The figures that depend on the judge: completeness (prior, box), real images, continuity."""
    out = {}
    box = encode_means(model, test.images)
    for source in ("prior", "box"):
        found = metrics.completeness(model, judge, n, seed, source=source, box_codes=box, threshold=threshold)
        out.update({f"{source}_{k}": v for k, v in found.items()})
    real = metrics.reference_confidence_share(judge, test.images, threshold)
    out.update({f"real_{k}": v for k, v in real.items()})
    out.update(metrics.continuity(model, test, judge, min(n_pairs, len(test) // 2), steps, seed))
    out["classifier_test_accuracy"] = float(judge.test_accuracy or math.nan)
    return out


SECOND_JUDGE_ROWS = ("prior_confident_share", "box_confident_share", "real_confident_share", "prior_class_evenness",
                     "min_confidence_mean")  # the largest step share is measured in pixels: no judge in it


def _check_shapes(ckpt: Checkpoint, data: ImageDataset, judge: Classifier) -> None:
    shapes = {"model": tuple(ckpt.config.image_shape), "data": tuple(data.image_shape),
              "classifier": tuple(judge.config.image_shape)}
    if len(set(shapes.values())) != 1:
        raise ConfigError(f"image shapes differ: {shapes}")


# --- command line -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vae.evaluate", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT")
    p.add_argument("--classifier", default=None, help="reference classifier (default: by the checkpoint's data set)")
    p.add_argument("--data", default=None, help="test data: a name, .npz or folder (default: the checkpoint's)")
    p.add_argument("--n", type=int, default=2000, help="test images and prior samples per figure")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iwae-k", type=int, default=100, help="importance samples per image")
    p.add_argument("--iwae-images", type=int, default=1000, help="test images for the IWAE estimate")
    p.add_argument("--pairs", type=int, default=200, help="interpolation paths for continuity")
    p.add_argument("--steps", type=int, default=16, help="steps per interpolation path")
    p.add_argument("--threshold", type=float, default=0.9, help="classifier confidence that counts as recognised")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _run, argv)


def _run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    datasets: dict[str, ImageDataset] = {}
    columns, notes, lessons = {}, [], {}
    for path in args.checkpoints:
        ckpt = load_checkpoint(path)
        source = args.data or default_data_source(ckpt)
        if source not in datasets:
            datasets[source] = load_dataset(source)
            notes += datasets[source].notes
        judge_paths = [Path(args.classifier)] if args.classifier else find_classifiers(ckpt)
        judges = [load_classifier(p) for p in judge_paths]
        col = columns[Path(path).stem] = evaluate_checkpoint(
            ckpt, datasets[source], judges[0], n=args.n, seed=args.seed, iwae_k=args.iwae_k,
            iwae_images=args.iwae_images, n_pairs=args.pairs, steps=args.steps, threshold=args.threshold)
        test = datasets[source].test.subset(args.n, args.seed)
        for judge in judges[1:]:  # the independent judge's figures, as extra rows
            found = judge_figures(ckpt.model, test, judge, args.n, args.seed, args.pairs, args.steps, args.threshold)
            col.update({f"j2_{k}": found[k] for k in SECOND_JUDGE_ROWS})
        notes.append(f"{Path(path).stem}: {ckpt.config.kind.upper()}, data {source}, judges "
                     + "; ".join(f"{p} ({j.name})" for p, j in zip(judge_paths, judges)))
        lessons.setdefault(_pair_prefix(path), {})[ckpt.config.kind] = (ckpt, datasets[source], judge_paths)
    print(f"n={args.n} test images / prior samples, seed={args.seed}, IWAE k={args.iwae_k} on {args.iwae_images} "
          f"images, {args.pairs} paths of {args.steps} steps (even share {1 / args.steps:.3f}), "
          f"threshold {args.threshold}")
    print(format_table(columns))
    for note in notes:
        print(f"  {note}")
    for prefix, members in lessons.items():
        if {"ae", "vae"} <= set(members):
            print()
            print(format_lesson(prefix, members))
    return 0


def _pair_prefix(path) -> str:
    stem = Path(path).stem
    for suffix in ("-ae", "-vae"):
        if stem.endswith(suffix):
            return str(Path(path).with_name(stem.removesuffix(suffix)))
    return str(Path(path).with_suffix(""))


def format_lesson(prefix: str, members: dict) -> str:
    """The pair's lesson figures on the Grid decoder's opening view, judged by every judge."""
    from .lesson import claims, default_view, pair_lesson

    ckpts = {k: members[k][0] for k in ("ae", "vae")}
    data, judge_paths = members["vae"][1], members["vae"][2]
    judges = {load_classifier(p).name: load_classifier(p) for p in judge_paths}
    view = default_view(ckpts["vae"].config.latent_dim)
    lesson = pair_lesson({k: c.model for k, c in ckpts.items()}, judges, data.test, data.classes, view)
    where = ("the prior's 15x15 quantile grid in each model's own coordinates" if view.gaussian else
             f"a 15x15 grid over the aligned {view.method.upper()} map of 2,000 test images")
    lines = [f"The lesson of {Path(prefix).name}: the Grid decoder's opening view ({where}) and 2,000 prior samples",
             f"{'':44s}{'AE':>8s}{'VAE':>8s}{'VAE-AE':>8s}"]
    labels = {"grid_recognised": "grid cells recognised", "grid_entropy": "grid class entropy (nats)",
              "prior_recognised": "prior samples recognised", "prior_entropy": "prior class entropy (nats)"}
    for judge, figs in lesson.items():
        for key, label in labels.items():
            a, v = figs["ae"][key], figs["vae"][key]
            lines.append(f"{label + ' [' + judge.split(' (')[0] + ']':44s}{a:8.3f}{v:8.3f}{v - a:+8.3f}")
    shown = [k for k, ok in claims(lesson).items() if ok]
    lines.append("differences every judge sees: " + (", ".join(shown) if shown else "none"))
    return "\n".join(lines)


def format_table(columns: dict[str, dict[str, float]]) -> str:
    """Rows of ROWS that at least one column has; '-' where a figure is undefined for a model."""
    rows = [(label, [_fmt(col.get(key), fmt) for col in columns.values()])
            for key, label, fmt in ROWS if any(key in col for col in columns.values())]
    width = max(len(label) for label, _ in rows)
    widths = [max(len(name), 8) for name in columns]
    lines = [" " * width + "  " + "  ".join(f"{name:>{w}}" for name, w in zip(columns, widths))]
    lines += [f"{label:<{width}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(values, widths)) for label, values in rows]
    return "\n".join(lines)


def _fmt(value: float | None, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


if __name__ == "__main__":
    raise SystemExit(main())
