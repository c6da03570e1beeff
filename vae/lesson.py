"""What a pair really demonstrates, measured: the figures behind every claim the app makes.

Two lessons, each true on its own kind of pair (issue 11's probe, and `checkpoints/README.md`):

- **Holes** (latents above 2-D, e.g. the 16-D pair): on the plane of the first two principal
  components, the AE's decoder makes smeared blends between its groups, where the VAE's still
  draws digits; codes from the prior N(0, I) decode to smudges for the AE and digits for the VAE.
- **Who owns the map** (2-D pairs): in 2-D an AE's decoder draws recognisable digits almost
  everywhere in its data's range, so there are few holes to see. What differs is organisation:
  the AE's codes have an arbitrary scale and a few digits own most of the space near its
  origin, so a grid of the prior's quantiles (or samples from the prior) decodes to few classes
  for the AE and to all of them, evenly, for the VAE. The class entropy measures it (ln 10 =
  2.30 nats is perfectly even).

`pair_lesson` computes both lessons' figures for a pair, judged by every reference classifier
given (the app and `python -m vae.evaluate` use two of different families); `claims` turns them
into the sentences the pages may say, so a page never claims what its pair does not show.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .data import ImageSplit
from .errors import ConfigError
from .grids import gaussian_grid_2d
from .latent import decode_codes, decode_points, encode_means, evaluating, posteriors, sample_codes
from .maps import GridSpec, LatentMap, build_latent_map
from .models import Autoencoder

RECOGNISED = 0.9  # a judge this sure of one class "recognises" an image (vae.evaluate's threshold)
GRID_N = 15  # the Grid decoder's default grid: 15 x 15 cells
MAP_SAMPLE = 2000  # test images on the default map
PRIOR_SAMPLES = 2000
# a difference the pages may call a difference: both judges must see at least this much
HOLES_MARGIN = 0.15  # VAE's recognised share of grid cells above the AE's
EVEN_MARGIN = 0.2  # VAE's class entropy above the AE's (nats)


@dataclass(frozen=True)
class View:
    """The Grid decoder's opening view of a pair: what `pair_lesson` measures and the page shows."""

    method: str  # "identity" (2-D) or "pca"
    aligned: bool  # AE rotated and rescaled onto the VAE's frame, or each model's own coordinates
    gaussian: bool  # grid nodes at the prior's quantiles (equal N(0, I) mass per cell)
    n: int = GRID_N


def default_view(latent_dim: int) -> View:
    """2-D: each model's own coordinates and the prior's grid — what "sample from the prior"
    means for each model, the view where the 2-D difference (organisation) shows. Above 2-D:
    the aligned PCA plane with an even grid — where the AE's holes show."""
    if latent_dim == 2:
        return View("identity", aligned=False, gaussian=True)
    return View("pca", aligned=True, gaussian=False)


@dataclass(frozen=True)
class Verdict:
    """One set of decoded images as a judge sees them."""

    predicted: np.ndarray  # class per image [M]
    confidence: np.ndarray  # top-class probability per image [M]
    num_classes: int
    threshold: float = RECOGNISED

    @property
    def recognised(self) -> float:
        """Share of images the judge names with at least `threshold` confidence."""
        return float((self.confidence >= self.threshold).mean()) if len(self.confidence) else math.nan

    @property
    def shares(self) -> np.ndarray:
        """Share of images per predicted class [num_classes] (every image counts)."""
        return np.bincount(self.predicted, minlength=self.num_classes) / max(len(self.predicted), 1)

    @property
    def entropy(self) -> float:
        """Class entropy in nats of the predicted-class histogram: ln K when even, 0 for one class."""
        return class_entropy(self.shares)


def class_entropy(shares) -> float:
    p = np.asarray(shares, dtype=np.float64)
    p = p[p > 0]
    return max(0.0, float(-(p * np.log(p)).sum()))


def judge_images(judge, images: np.ndarray | torch.Tensor, threshold: float = RECOGNISED) -> Verdict:
    """Images [M, H, W, C] in [0, 1] (numpy, as decoders give them) or [M, C, H, W] tensors."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2) if isinstance(images, np.ndarray) \
        else images
    probs = judge.probs(x.float())
    confidence, predicted = probs.max(1)
    return Verdict(predicted.numpy(), confidence.numpy(), probs.shape[1], threshold)


def grid_codes(lmap: LatentMap, kind: str, view: View, xlim=None, ylim=None) -> np.ndarray:
    """The codes of a view's grid cells for one model, in the tiles' order (top row first)."""
    spec = GridSpec(view.n, xlim or lmap.xlim, ylim or lmap.ylim, view.gaussian)
    return lmap.to_latent(kind, spec.points())


def prior_grid_codes(n: int = GRID_N) -> np.ndarray:
    """The prior's quantile grid in a 2-D model's own coordinates (needs no data)."""
    return gaussian_grid_2d(n, eps=0.5 / n)


def prior_sample_images(model: Autoencoder, n: int = PRIOR_SAMPLES, seed: int = 0) -> torch.Tensor:
    """n codes z ~ N(0, I), decoded (the same codes for every model of the same latent size)."""
    return decode_codes(model, sample_codes(model.config.latent_dim, n, seed))


def default_map(models: dict[str, Autoencoder], test: ImageSplit, classes, view: View) -> LatentMap:
    return build_latent_map(models, test, classes, view.method, min(MAP_SAMPLE, len(test)), 0,
                            model_ids={k: k for k in models}, data_key="lesson", aligned=view.aligned)


def pair_lesson(models: dict[str, Autoencoder], judges: dict, test: ImageSplit | None = None, classes=None,
                view: View | None = None) -> dict:
    """{judge name: {kind: {grid_recognised, grid_entropy, prior_recognised, prior_entropy}}} on the
    pair's default view. A 2-D pair's default grid needs no data; a PCA map needs the test split."""
    dim = next(iter(models.values())).config.latent_dim
    view = view or default_view(dim)
    data_free = view.method == "identity" and not view.aligned and view.gaussian  # the prior's grid, own axes
    if test is None and not data_free:
        raise ConfigError(f"the {view.method} view of a {dim}-D pair needs test images to build its map")
    lmap = None if data_free else default_map(models, test, classes or [], view)
    grids = {kind: decode_points(model, prior_grid_codes(view.n) if lmap is None else grid_codes(lmap, kind, view))
             for kind, model in models.items()}
    out = prior_lesson(models, judges)
    for name, judge in judges.items():
        for kind, images in grids.items():
            out[name][kind].update(figures(judge_images(judge, images), "grid"))
    return out


def prior_lesson(models: dict[str, Autoencoder], judges: dict, n: int = PRIOR_SAMPLES, seed: int = 0) -> dict:
    """{judge name: {kind: {prior_recognised, prior_entropy}}}: the same n prior codes per model."""
    images = {kind: prior_sample_images(model, n, seed) for kind, model in models.items()}
    return {name: {kind: figures(judge_images(judge, x), "prior") for kind, x in images.items()}
            for name, judge in judges.items()}


def figures(verdict: Verdict, prefix: str) -> dict[str, float]:
    return {f"{prefix}_recognised": verdict.recognised, f"{prefix}_entropy": verdict.entropy}


def claims(lesson: dict) -> dict[str, bool]:
    """Which differences every judge sees (the pages say only these); only the claims whose
    figures the lesson holds:

    holes: the VAE's grid is recognised clearly more often than the AE's (HOLES_MARGIN);
    prior_holes: prior samples are recognised clearly more often for the VAE;
    even_grid / even_prior: the VAE's grid / prior samples spread over the classes more evenly
    (EVEN_MARGIN nats of class entropy);
    grid_alike / prior_alike: both models' images are mostly recognised, about equally often."""
    pairs = [(j["ae"], j["vae"]) for j in lesson.values() if "ae" in j and "vae" in j]
    tests = {"holes": ("grid_recognised", HOLES_MARGIN), "prior_holes": ("prior_recognised", HOLES_MARGIN),
             "even_grid": ("grid_entropy", EVEN_MARGIN), "even_prior": ("prior_entropy", EVEN_MARGIN)}
    out = {name: all(v[key] >= a[key] + margin for a, v in pairs)
           for name, (key, margin) in tests.items() if pairs and all(key in a and key in v for a, v in pairs)}
    for where in ("grid", "prior"):  # both models' images recognised, about equally often
        key = f"{where}_recognised"
        if pairs and all(key in a and key in v for a, v in pairs):
            out[f"{where}_alike"] = all(abs(v[key] - a[key]) < HOLES_MARGIN and min(a[key], v[key]) >= 0.5
                                        for a, v in pairs)
    return out


# --- capacity: memorising vs generalising (the tutorial's "encode N points as 1, 2, ..., N") ---------
def memorisation(model: Autoencoder, train: ImageSplit, test: ImageSplit, judge=None, n: int = 1000,
                 seed: int = 0) -> dict[str, float]:
    """How a model does on images it trained on against images it never saw: the reconstruction
    error (nats per image, decoding the code mean) on up to n of each, and, with a judge, the share
    of reconstructions the judge still names as the right class."""
    out = {}
    for name, split in (("train", train.subset(n, seed)), ("test", test.subset(n, seed))):
        out[f"{name}_recon"] = reconstruction_nll(model, split.images).mean().item()
        if judge is not None:
            rebuilt = decode_codes(model, encode_means(model, split.images))
            out[f"{name}_judged"] = float((judge.probs(rebuilt).argmax(1) == split.labels).double().mean())
    return out


@torch.no_grad()
def rebuild(model: Autoencoder, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images -> what the model rebuilds from each code mean ([N, H, W, C] in [0, 1]) and
    its reconstruction error -log p(x|z) in nats [N], from one encode and one decode."""
    with evaluating(model):
        x = model.preprocess(images.to(next(model.parameters()).device))
        output = model.decode(model.encode(x).mode())
        pictures = model.to_image(output).permute(0, 2, 3, 1).float().cpu().numpy()
        return pictures, model.reconstruction_nll(output, x).double().cpu().numpy()


def reconstruction_nll(model: Autoencoder, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """-log p(x|z) per image [N] in nats, z the code mean (no sampling): the AE's and the VAE's
    reconstruction error on equal terms."""
    out = [model.reconstruction_nll(model.decode(q.mode()), x).cpu() for x, q in posteriors(model, images, batch_size)]
    return torch.cat(out) if out else torch.empty(0)
