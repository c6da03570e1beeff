"""The lesson each page may state about the pair it shows, from figures measured on that pair.

Pages never hard-code "the AE has holes": they ask `prior_claims` / `grid_verdicts` what every
judge sees (`vae.lesson.claims`) and say that. Also the pictures of the 2-D lesson, "who owns
the map": a territory mosaic (each grid cell coloured by the class the judge names) and the
share of cells per class, with its entropy.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image, ImageDraw

from vae import lesson as L
from vae.classifier import Classifier
from vae.errors import ConfigError
from vae.evaluate import dataset_key

from . import map_render, maps, state
from .scores import load_judge, load_judge_file, pair_judges
from .style import MODEL_COLORS, MODEL_LABELS

UNSURE_RGB = (222, 222, 222)  # cells no class is named for with RECOGNISED confidence


def noun(pair, plural: bool = False) -> str:
    """What the pair's images are: "digit", "piece of clothing", "object" (a CIFAR-10 picture)."""
    try:
        word = maps.HOLE_NOUNS.get(dataset_key(str(pair.dataset), pair.image_shape), "image")
    except ConfigError:  # an unknown data set: say nothing more specific than "image"
        word = "image"
    if not plural:
        return word
    return "pieces of clothing" if word == "piece of clothing" else word + "s"


def judge_paths(pair) -> list[Path]:
    """Every judge of the pair's data set: the primary CNN first, then independent ones (-mlp)."""
    return pair_judges(pair)[0]  # unreadable ones are left out (the sidebar names them)


def judges(pair) -> dict[str, Classifier]:
    """name -> loaded judge ("CNN (99.5% on test images)", "MLP on pixels (98.6% ...)")."""
    loaded = [load_judge_file(p) for p in judge_paths(pair)]
    return {j.name: j for j in loaded}


@st.cache_data(show_spinner="Asking the judges about 2,000 prior samples per model…", max_entries=16)
def _prior_verdicts(versions: tuple, judge_path: str, judge_mtime_ns: int, _models: dict) -> dict:
    judge = load_judge(judge_path, judge_mtime_ns)
    return {kind: L.judge_images(judge, L.prior_sample_images(m)) for kind, m in _models.items()}


def prior_verdicts(pair, judge_path: Path) -> dict[str, L.Verdict]:
    """kind -> one judge's verdict on the same 2,000 prior codes decoded by each model (cached
    per checkpoint and judge file version, shared by every visitor)."""
    ckpts = state.load_pair_models(pair)
    versions = tuple(sorted((k, str(c.path), Path(c.path).stat().st_mtime_ns) for k, c in ckpts.items()))
    return _prior_verdicts(versions, str(judge_path), judge_path.stat().st_mtime_ns,
                           {k: c.model for k, c in ckpts.items()})


def prior_lesson(pair) -> dict:
    """{judge name: {kind: {prior_recognised, prior_entropy}}} for the pair; {} without judges."""
    if len(pair.paths) < 2:
        return {}
    out = {}
    for path in judge_paths(pair):
        name = load_judge_file(path).name
        out[name] = {k: L.figures(v, "prior") for k, v in prior_verdicts(pair, path).items()}
    return out


@st.cache_data(show_spinner=False, max_entries=64)
def grid_verdicts(grid_key: str, kind: str, judge_path: str, judge_mtime_ns: int, _tiles: np.ndarray) -> L.Verdict:
    """One judge's verdict on one model's decoded grid, once per grid and judge file version."""
    return L.judge_images(load_judge(judge_path, judge_mtime_ns), _tiles)


def figures_line(lesson: dict, key: str, fmt: str = ".0%") -> str:
    """"AE 8% vs VAE 65% (CNN); AE 5% vs VAE 69% (MLP on pixels)" for one figure."""
    parts = []
    for name, by_kind in lesson.items():
        if "ae" in by_kind and "vae" in by_kind:
            parts.append(f"AE {format(by_kind['ae'][key], fmt)} vs VAE {format(by_kind['vae'][key], fmt)} "
                         f"({name.split(' (')[0]})")
    return "; ".join(parts)


# --- the territory map: who owns the map ---------------------------------------------------------
def class_rgb(label: int) -> tuple[int, int, int]:
    return map_render.rgb(map_render.class_color(label))


def territory_image(verdict: L.Verdict, n: int, classes, cell: int = 26) -> np.ndarray:
    """An n x n mosaic (top row first, as the decoded grid): each cell in the colour of the class
    the judge names, with its name; grey where the judge is not RECOGNISED-sure of any class."""
    img = Image.new("RGB", (n * cell + 1, n * cell + 1), "white")
    draw = ImageDraw.Draw(img)
    for i, (label, conf) in enumerate(zip(verdict.predicted, verdict.confidence)):
        r, c = divmod(i, n)
        sure = conf >= verdict.threshold
        fill = class_rgb(label) if sure else UNSURE_RGB
        box = [c * cell, r * cell, (c + 1) * cell, (r + 1) * cell]
        draw.rectangle(box, fill=fill, outline="white")
        name = classes[label] if label < len(classes) else str(label)
        draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), name[:2], anchor="mm",
                  fill="white" if sure else (120, 120, 120))
    return np.asarray(img)


@st.cache_resource(show_spinner=False, max_entries=64)
def shares_figure(key: str, _verdicts: dict, classes: tuple, title: str, height: int = 260) -> go.Figure:
    """Share of images per class, AE beside VAE, with each model's class entropy in the legend;
    built once per key (plotly's figure building is a large share of a page run; bench/README.md).
    Callers must not change the figure: it is shared."""
    names = [str(c) for c in classes]
    bars = [go.Bar(x=names[: v.num_classes], y=v.shares, name=f"{MODEL_LABELS[kind]}: entropy {v.entropy:.2f} nats",
                   marker_color=MODEL_COLORS[kind]) for kind, v in _verdicts.items()]
    even = 1 / max(len(classes), 1)
    layout = dict(title=dict(text=title, font=dict(size=14)), barmode="group", height=height,
                  margin=dict(l=10, r=10, t=40, b=10), yaxis=dict(tickformat=".0%", title="share"),
                  legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0.35),
                  shapes=[dict(type="line", xref="paper", x0=0, x1=1, y0=even, y1=even,
                               line=dict(dash="dot", color="gray"))],
                  annotations=[dict(xref="paper", x=0, y=even, text="even", showarrow=False, yanchor="bottom",
                                    xanchor="left", font=dict(color="gray"))])
    return go.Figure(data=bars, layout=layout)


def num_classes(pair) -> int:
    """The number of classes the pair's judges tell apart (10 for every shipped data set)."""
    found = judges(pair)
    return next(iter(found.values())).config.num_classes if found else 10


def even_nats(num_classes: int) -> float:
    return math.log(max(num_classes, 1))


# --- sentences for the Reconstructions page -------------------------------------------------------
def completeness_note(pair) -> str:
    """What the prior samples above show on this pair, as the judges measured it."""
    figures = prior_lesson(pair)
    said = L.claims(figures) if figures else {}
    base = "The VAE was trained to put its codes where N(0, I) puts its mass; nothing asks the same of the AE. "
    if said.get("prior_holes"):
        return base + (f"On this pair most prior codes land in the AE's holes: the judges recognise "
                       f"{figures_line(figures, 'prior_recognised')} of 2,000 prior samples.")
    if said.get("even_prior"):
        return base + (prior_classes_sentence(pair, figures, said) + ".")
    if figures:
        return base + (f"On this pair the judges see no clear difference: "
                       f"{figures_line(figures, 'prior_recognised')} of 2,000 prior samples recognised.")
    return base + "No judge ships for this data set, so the difference is not measured here."


def prior_classes_sentence(pair, figures: dict, said: dict) -> str:
    """For pairs whose prior samples differ by class spread (even_prior): what the judges saw."""
    entropy = f"class entropy {figures_line(figures, 'prior_entropy', '.2f')} nats"
    if said.get("prior_alike"):
        return (f"both models draw {noun(pair, plural=True)} from the prior about equally often, but the AE's repeat a "
                f"few classes ({entropy})")
    return f"the judges name far fewer different classes among the AE's prior samples than among the VAE's ({entropy})"


def recon_note(checkpoints: dict) -> str:
    """The reconstruction claim, from the test figures stored in the checkpoints."""
    recon = {k: c.metrics.get("recon") for k, c in checkpoints.items()}
    if set(recon) != {"ae", "vae"} or None in recon.values():
        return "Each model rebuilds the test images from their codes."
    if recon["ae"] < recon["vae"]:
        return (f"The AE rebuilds more faithfully (test error {recon['ae']:.1f} vs {recon['vae']:.1f} nats): it "
                "spends its whole code on the image, while the VAE also keeps its codes close to the bell curve.")
    return (f"Here the VAE rebuilds test images at least as faithfully as the AE ({recon['vae']:.1f} vs "
            f"{recon['ae']:.1f} nats): the AE has memorised its training images rather than learned the data "
            "(section 5).")
