"""Cached pictures and scores of the Reconstructions page, and the small helpers that show them.

Pictures (reconstructions, interpolations, samples) are cheap and cached per checkpoint file
version with `st.cache_data`. The scores of `vae.evaluate` take seconds to a minute, so they
are computed only when a visitor asks, then kept twice: in `st.cache_data` (this server
process) and as one small JSON file per checkpoint under `settings.cache_dir / "scores"`, so a
restart or a second visitor reads them instead of measuring again.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import streamlit as st
import torch

from vae import metrics
from vae.atomic import SHARED, write_json
from vae.classifier import Classifier, load_classifier
from vae.data import ImageDataset
from vae.evaluate import evaluate_checkpoint, judges_for
from vae.grids import image_grid
from vae.latent import encode_means, interpolate, sample_box, sample_prior
from vae.lesson import rebuild

from .style import MODEL_LABELS
from . import state


# modest settings: seconds per model on a 2-core CPU for the MNIST MLPs
EVAL_SETTINGS = {"n": 1000, "seed": 0, "iwae_k": 50, "iwae_images": 500, "n_pairs": 100, "steps": 16,
                 "threshold": 0.9}
SCORES_FORMAT = 1  # bump when the stored figures change meaning
ACTIVE_THRESHOLD = 0.01  # Burda et al. (2016): a unit is active if Cov_x(E_q[u|x]) > 0.01

# key -> (label, number format, one line in plain words)
SCORES = {
    "recon": ("Reconstruction error (nats)", ".1f",
              "how badly a test image is rebuilt from its code; lower is better."),
    "kl": ("KL (nats)", ".1f",
           "how far the codes stray from the bell curve N(0, I) the VAE samples from; the AE pays none."),
    "neg_elbo": ("-ELBO (nats)", ".1f",
                 "reconstruction error + KL: the VAE's upper bound on how surprised it is by a test image."),
    "iwae_nll": ("IWAE NLL (nats)", ".1f",
                 f"a tighter estimate of that surprise, from {EVAL_SETTINGS['iwae_k']} guesses per image; "
                 "lower is better."),
    "bits_per_dim": ("bits per colour value", ".3f",
                     "-ELBO per pixel and channel, in bits: the unit CIFAR-10 papers use; lower is better."),
    "max_step_share_mean": ("Biggest jump along a path", ".3f",
                            f"the share of a morph done in its single largest step: "
                            f"{1 / EVAL_SETTINGS['steps']:.3f} is perfectly even, 1 is one sudden jump."),
    "min_confidence_mean": ("Worst frame along a path", ".0%",
                            "how sure the classifier is about the least recognisable image on a path "
                            "(mean over paths); higher is better."),
    "prior_confident_share": ("Prior samples that look real", ".0%",
                              "codes drawn at random from N(0, I) whose image the classifier names "
                              f"with at least {EVAL_SETTINGS['threshold']:.0%} confidence."),
    "box_confident_share": ("Box samples that look real", ".0%",
                            "the same for random codes inside the box the test codes span (fairer to the AE)."),
    "real_confident_share": ("Real test images, for comparison", ".0%",
                             "the same share for real images: the most a model can hope for."),
    "prior_class_evenness": ("Variety of prior samples", ".2f",
                             "1: every class appears equally often; 0: the same class every time."),
    "frechet_distance": ("Fréchet distance", ".1f",
                         "how different prior samples look from real test images overall, "
                         "in the classifier's eyes; lower is better."),
    "active_units": ("Active units", ".0f",
                     "code dimensions that change with the image; the rest carry nothing."),
}
INSTANT = ("recon", "kl", "neg_elbo")  # in every checkpoint's metadata


def file_version(path: str) -> int:
    """The cache key part that changes when a checkpoint is retrained to the same path."""
    return Path(path).stat().st_mtime_ns


def data_key(data: ImageDataset) -> str:
    """What identifies the test images a figure was computed on (the data itself is not hashed)."""
    return f"{data.name}|{data.source}|{len(data.test)}"


def _model(path: str, mtime_ns: int):
    return state.load_model(path, mtime_ns).model


def as_display(images: torch.Tensor) -> np.ndarray:
    """[B, C, H, W] in [0, 1] -> float32 [B, H, W, C] (as vae.latent returns)."""
    return images.permute(0, 2, 3, 1).float().cpu().numpy()


# --- pictures -------------------------------------------------------------------------------------
def pick_indices(n_images: int, count: int, seed: int) -> tuple[int, ...]:
    """A seeded pick of distinct test indices, in increasing order."""
    rng = np.random.default_rng(seed)
    return tuple(sorted(int(i) for i in rng.choice(n_images, min(count, n_images), replace=False)))


@st.cache_data(show_spinner=False, max_entries=64)
def reconstructions(path: str, mtime_ns: int, indices: tuple[int, ...], data_id: str,
                    _data: ImageDataset) -> tuple[np.ndarray, np.ndarray]:
    """Images [M, H, W, C] decoded from each test image's code (the posterior mean) and their
    reconstruction NLL -log p(x|z) in nats [M], the model's own training loss term."""
    return rebuild(_model(path, mtime_ns), _data.test.images[list(indices)])


def test_images(data: ImageDataset, indices) -> np.ndarray:
    """Test images as float [M, H, W, C] in [0, 1]."""
    return as_display(data.test.images[list(indices)].float() / 255.0)


@st.cache_data(show_spinner=False, max_entries=64)
def interpolation(path: str, mtime_ns: int, index_a: int, index_b: int, steps: int, data_id: str,
                  _data: ImageDataset) -> np.ndarray:
    """The straight line between the codes (posterior means) of two test images, decoded: [steps, H, W, C]."""
    model = _model(path, mtime_ns)
    with torch.no_grad():
        z = model.encode(model.preprocess(_data.test.images[[index_a, index_b]])).mode().cpu().numpy()
    return interpolate(model, z[0], z[1], steps)


@st.cache_data(show_spinner=False, max_entries=64)
def prior_samples(path: str, mtime_ns: int, n: int, seed: int) -> np.ndarray:
    """n codes from the prior N(0, I), decoded: [n, H, W, C]."""
    return sample_prior(_model(path, mtime_ns), n, seed)[1]


@st.cache_data(show_spinner=False, max_entries=16)
def test_codes(path: str, mtime_ns: int, data_id: str, _data: ImageDataset) -> np.ndarray:
    """Posterior means of the evaluation's test images (the first n of a seeded shuffle)."""
    test = _data.test.subset(EVAL_SETTINGS["n"], EVAL_SETTINGS["seed"])
    return encode_means(_model(path, mtime_ns), test.images).numpy()


@st.cache_data(show_spinner=False, max_entries=64)
def box_samples(path: str, mtime_ns: int, n: int, seed: int, data_id: str, _data: ImageDataset) -> np.ndarray:
    """n codes uniform in the box the test codes span, decoded: [n, H, W, C]."""
    return sample_box(_model(path, mtime_ns), test_codes(path, mtime_ns, data_id, _data), n, seed)[1]


@st.cache_data(show_spinner=False, max_entries=16)
def latent_usage(path: str, mtime_ns: int, data_id: str, _data: ImageDataset) -> dict:
    """Per dimension: mean KL(q(z_j|x) || N(0, 1)) (all 0 for the AE) and the variance of the
    posterior means over test images (active if > 0.01), on the evaluation's test images."""
    model = _model(path, mtime_ns)
    test = _data.test.subset(EVAL_SETTINGS["n"], EVAL_SETTINGS["seed"])
    kl = metrics.kl_per_dimension(model, test)
    activity = test_codes(path, mtime_ns, data_id, _data).astype(np.float64).var(axis=0, ddof=1)
    return {"kl": [kl[f"z{j}"] for j in range(len(kl))], "activity": activity.tolist(),
            "active": int((activity > ACTIVE_THRESHOLD).sum()), "beta": float(model.config.beta)}


def step_sizes(images: np.ndarray) -> np.ndarray:
    """Root-mean-square pixel change between neighbouring frames of a path: [steps - 1]."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    return np.sqrt(((flat[1:] - flat[:-1]) ** 2).mean(axis=1))


# --- the reference classifier (the judge) ---------------------------------------------------------
def find_judge(pair) -> Path | None:
    """classifier-<data set>.safetensors in the shipped checkpoints folder or beside the pair, or None."""
    return next(iter(pair_judges(pair)[0]), None)


def pair_judges(pair) -> tuple[list[Path], list[str]]:
    """The judge files of the pair's data set that load (the primary CNN first), and one message
    per file that does not (the sidebar names it; the pages run on without it)."""
    return judges_for(pair.dataset, pair.image_shape, [state.settings().shipped_dir, pair.folder], load_judge_file)


def load_judge_file(path: Path) -> Classifier:
    return load_judge(str(path), path.stat().st_mtime_ns)  # a good file read once per version


@st.cache_resource(show_spinner=False, max_entries=4)
def load_judge(path: str, mtime_ns: int) -> Classifier:
    judge = load_classifier(path)
    judge.file_version = f"{path}|{mtime_ns}"  # names this judge in judge_confidence's cache
    return judge


def judge_confidence(judge: Classifier, images: np.ndarray) -> np.ndarray:
    """The classifier's top-class probability for each float image [M, H, W, C], computed once per
    judge file version and images and shared (read-only): the Reconstructions page asks again
    about the same path's frames on every run, and the CNN's pass was a third of its run."""
    images = np.ascontiguousarray(images)
    version = getattr(judge, "file_version", None)
    if version is None:  # a judge not loaded by load_judge: nothing names it, so no cache
        return _confidence(judge, images)
    digest = hashlib.blake2b(images.tobytes(), digest_size=16).hexdigest()
    return _cached_confidence(version, f"{images.shape}|{images.dtype}|{digest}", judge, images)


@st.cache_resource(show_spinner=False, max_entries=256)
def _cached_confidence(judge_version: str, images_key: str, _judge: Classifier, _images: np.ndarray) -> np.ndarray:
    confidence = _confidence(_judge, _images)
    confidence.setflags(write=False)
    return confidence


def _confidence(judge: Classifier, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    return judge.probs(x).max(dim=1).values.double().numpy()


# --- scores: computed on request, cached in memory and on disk -------------------------------------
def _score_key(path: str, judge: Path | None, data_id: str) -> dict:
    ckpt = Path(path).resolve()
    stat = ckpt.stat()
    return {"format": SCORES_FORMAT, "checkpoint": str(ckpt), "mtime_ns": stat.st_mtime_ns, "size": stat.st_size,
            "classifier": str(judge.resolve()) if judge else None,
            "classifier_mtime_ns": judge.stat().st_mtime_ns if judge else None,
            "data": data_id, "settings": EVAL_SETTINGS}


def _score_file(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(state.settings().cache_dir) / "scores" / f"{Path(key['checkpoint']).stem}-{digest}.json"


def stored_scores(path: str, judge: Path | None, data_id: str) -> dict | None:
    """The scores measured before for this checkpoint version, classifier and data, or None.
    A small file read: cheap enough for every page run."""
    key = _score_key(path, judge, data_id)
    try:
        record = json.loads(_score_file(key).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("key") == key else None


@st.cache_data(show_spinner=False, max_entries=64)
def measure(path: str, mtime_ns: int, judge_path: str | None, judge_mtime_ns: int | None, data_id: str,
            _data: ImageDataset) -> dict:
    """Measure one checkpoint (seconds to a minute) and store the record on disk.

    With a classifier: every figure of `vae.evaluate.evaluate_checkpoint`. Without one: the
    likelihood figures (IWAE) and active units only, which need no judge.
    """
    judge = Path(judge_path) if judge_path else None
    found = stored_scores(path, judge, data_id)  # another process may have measured it meanwhile
    if found is not None:
        return found
    ckpt = state.load_model(path, mtime_ns)
    start = time.perf_counter()
    settings = dict(EVAL_SETTINGS)
    if judge is not None:
        scores = evaluate_checkpoint(ckpt, _data, load_judge(str(judge), judge_mtime_ns), **settings)
    else:
        test = _data.test.subset(settings["n"], settings["seed"])
        scores = dict(metrics.likelihood_metrics(ckpt.model, test, seed=settings["seed"]))
        scores.update(metrics.iwae_nll(ckpt.model, test, k=settings["iwae_k"], seed=settings["seed"],
                                       n_images=settings["iwae_images"]))
        scores.update(metrics.active_units(ckpt.model, test))
    key = _score_key(path, judge, data_id)
    record = {"key": key, "scores": {k: float(v) for k, v in scores.items()},
              "seconds": round(time.perf_counter() - start, 1), "measured_at": time.strftime("%Y-%m-%d %H:%M")}
    try:
        write_json(_score_file(key), record, SHARED, indent=1)
    except OSError:
        record["stored"] = False  # still shown, and kept in this process by st.cache_data
    return record


# --- display helpers ------------------------------------------------------------------------------
def tiles(images: np.ndarray, nrow: int, scale: int = 3) -> np.ndarray:
    """A uint8 tile picture of images [M, H, W, C], blown up `scale` times with sharp pixels
    (grey pictures as [H, W], which st.image and PIL take as greyscale)."""
    grid = image_grid(images, nrow)
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid[..., 0] if grid.shape[-1] == 1 else grid


def single_tiles(images: np.ndarray, scale: int = 2) -> list[np.ndarray]:
    """One blown-up picture per image, for st.image lists with a caption under each."""
    return [tiles(image[None], 1, scale) for image in images]


def png_bytes(images: np.ndarray, nrow: int, scale: int = 2) -> bytes:
    """The tile picture as a PNG file, for download buttons."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(tiles(images, nrow, scale)).save(buf, format="PNG")
    return buf.getvalue()


def display_scale(image_shape) -> int:
    """Blow-up factor so one tile is about 84 screen pixels (28-pixel digits: 3x)."""
    return max(1, round(84 / max(image_shape[1:])))


def format_score(key: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, SCORES[key][1])


def score_lines(keys, by_kind: dict[str, dict], kinds) -> str:
    """Markdown: one bullet per score present in any model, the values per model, and its line."""
    lines = []
    for key in keys:
        if not any(key in by_kind.get(k, {}) for k in kinds):
            continue
        label, _, meaning = SCORES[key]
        values = " · ".join(f"{MODEL_LABELS[k]} **{format_score(key, by_kind.get(k, {}).get(key))}**" for k in kinds)
        lines.append(f"- {label}: {values}  \n  :small[:gray[{meaning}]]")
    return "\n".join(lines)
