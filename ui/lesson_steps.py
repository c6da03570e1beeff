"""The Lesson page's steps: the tutorial's argument, one figure and one measured sentence each.

Every step is built from the pair shown (`build_steps`), so each number in a sentence is computed
on those models; `vae.lesson.claims` decides which sentences may be said. The same steps render
on the page (`ui` widgets) and into one self-contained HTML file (`lesson_html`) a class can take
home: images inlined as PNG, Plotly's own JavaScript inlined once, formulas as MathML, nothing fetched.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from vae import lesson as L
from vae.grids import image_grid
from vae.latent import decode_points, encode_means, interpolate, sample_prior

from . import lesson, maps
from .style import MODEL_COLORS, MODEL_LABELS


# The tutorial's equations, one per step (LaTeX: st.latex on the page, MathML in the HTML file)
FORMULAS = {
    "autoencoder": r"\hat x = \mathrm{dec}(\mathrm{enc}(x)),\qquad \text{AE loss} = -\log p(x \mid z = \mathrm{enc}(x))",
    "reconstruction": r"-\log p(x\mid z) = -\sum_i \left[x_i \log \hat x_i + (1-x_i)\log(1-\hat x_i)\right]",
    "prior_sample": r"z \sim \mathcal{N}(0, I) \;\Rightarrow\; \hat x = \mathrm{dec}(z)",
    "interpolation": r"z(t) = (1-t)\,z_a + t\,z_b,\quad t \in [0, 1]",
    "kl": r"\mathrm{KL}\big(\mathcal{N}(\mu,\sigma^2)\,\|\,\mathcal{N}(0,1)\big) = "
          r"\tfrac12\left(\mu^2 + \sigma^2 - \log\sigma^2 - 1\right)",
    "beta_loss": r"\mathcal{L}_\beta = \mathbb{E}_{q(z|x)}[-\log p(x|z)] + \beta\,\mathrm{KL}(q(z|x)\,\|\,p(z))",
    # \underset, not \underbrace: the brace stretches only with a math font, which the HTML file cannot count on
    "rate_distortion": r"-\mathrm{ELBO} = \underset{\text{distortion}}{\mathbb{E}[-\log p(x|z)]} + "
                       r"\underset{\text{rate}}{\mathrm{KL}(q\|p)}",
}


@dataclass
class Step:
    title: str
    sentence: str  # markdown; every number in it computed on the models shown
    images: list = field(default_factory=list)  # (caption, uint8 image or PIL image)
    chart: go.Figure | None = None
    formula: str = ""  # LaTeX, for the expander
    question: tuple = ()  # (prompt, options, index of the true answer) for a predict-then-reveal step


def steps_for(pair, models: dict, data, family=None) -> list[Step]:
    """build_steps once per pair, checkpoint versions and sweep: a page rerun (Next, Previous, a
    prediction) only shows one step and should not redraw all seven."""
    from pathlib import Path

    from .beta import panels

    files = [str(c.path) for c in models.values()] + ([p for _, p in family.members] if family else [])
    key = (pair.name, tuple((f, Path(f).stat().st_mtime_ns) for f in files))
    return _steps(key, pair, models, data, family and panels(family))


@st.cache_resource(show_spinner="Preparing the lesson's figures…", max_entries=8)
def _steps(key: tuple, _pair, _models: dict, _data, _panels) -> list[Step]:
    return build_steps(_pair, _models, _data, _panels)


def _picture(images: np.ndarray, nrow: int, size: int) -> Image.Image:
    return maps.enlarge(image_grid(images, nrow=nrow, separator=2), size)


def build_steps(pair, models: dict, data, family_panels=None) -> list[Step]:
    """The lesson's steps for a pair with an AE and a VAE (models: kind -> Checkpoint)."""
    ae, vae = models["ae"].model, models["vae"].model
    word, words = lesson.noun(pair), lesson.noun(pair, plural=True)
    test = data.test
    picked = [int(i) for i in np.random.default_rng(0).choice(len(test), 8, replace=False)]
    x = test.images[picked]
    originals = x.permute(0, 2, 3, 1).float().numpy() / 255.0
    rebuilt = {k: decode_points(m, encode_means(m, x).numpy()) for k, m in (("ae", ae), ("vae", vae))}
    errors = {k: models[k].metrics.get("recon") for k in ("ae", "vae")}
    steps = [Step(
        "1. What an autoencoder does",
        f"An encoder squeezes each {pair.image_shape[1]}×{pair.image_shape[2]} image ({int(np.prod(pair.image_shape))} "
        f"numbers) into a code of **{pair.latent_dim} numbers**; a decoder rebuilds the image from the code alone. "
        "Top: test images the models never trained on. Below: what the AE and the VAE rebuild.",
        [("test images", _picture(originals, 8, 640)), ("AE", _picture(rebuilt["ae"], 8, 640)),
         ("VAE", _picture(rebuilt["vae"], 8, 640))],
        formula=FORMULAS["autoencoder"])]
    if None not in errors.values():
        better = "AE" if errors["ae"] < errors["vae"] else "VAE"
        steps.append(Step(
            "2. Both rebuild well",
            f"Reconstruction error on the whole test split: **AE {errors['ae']:.1f}** and **VAE {errors['vae']:.1f}** "
            f"nats per image; the {better} is a little sharper. On reconstructions alone you could not tell which "
            "model has the usable code space.",
            [("AE", _picture(rebuilt["ae"], 8, 640)), ("VAE", _picture(rebuilt["vae"], 8, 640))],
            formula=FORMULAS["reconstruction"]))
    steps.append(_predict_step(pair, ae, vae, words))
    steps.append(_continuity_step(ae, vae, test, word))
    steps.append(_completeness_step(pair, models, words))
    if family_panels:
        steps += _beta_steps(family_panels, errors)
    return steps


def _predict_step(pair, ae, vae, words) -> Step:
    figures = lesson.prior_lesson(pair)
    said = L.claims(figures) if figures else {}
    options = [f"{words.capitalize()} for both", f"{words.capitalize()} for the VAE, smudges for the AE",
               "Smudges for both", f"{words.capitalize()} for both, but the AE's repeat a few classes"]
    # the answer the judges back, or None where they do not agree on one
    truth = (1 if said.get("prior_holes") else 3 if said.get("even_prior") and said.get("prior_alike")
             else 0 if said.get("prior_alike") else None)
    samples = {k: sample_prior(m, 16, seed=0)[1] for k, m in (("ae", ae), ("vae", vae))}
    sentence = (f"The judges on 2,000 random codes: recognised {lesson.figures_line(figures, 'prior_recognised')}; "
                f"class entropy {lesson.figures_line(figures, 'prior_entropy', '.2f')} nats "
                f"(ln 10 = 2.30 is perfectly even).") if figures else "No judge ships for this data set."
    return Step("3. Predict: pick a random code, decode it", sentence,
                [(f"{MODEL_LABELS[k]}: 16 codes from N(0, I)", _picture(v, 4, 300)) for k, v in samples.items()],
                formula=FORMULAS["prior_sample"],
                question=("We draw random codes z ~ N(0, I) and decode them with each model. What do we get?",
                          options, truth))


def _continuity_step(ae, vae, test, word) -> Step:
    a, b = 0, 1
    while int(test.labels[b]) == int(test.labels[a]):
        b += 1  # two different classes
    strips, biggest = {}, {}
    for k, m in (("ae", ae), ("vae", vae)):
        z = encode_means(m, test.images[[a, b]]).numpy()
        strips[k] = interpolate(m, z[0], z[1], 10)
        flat = strips[k].reshape(10, -1).astype(np.float64)
        steps = np.sqrt(((flat[1:] - flat[:-1]) ** 2).mean(axis=1))
        biggest[k] = float(steps.max() / steps.sum())
    smoother = min(biggest, key=biggest.get)
    chart = go.Figure([go.Bar(x=[MODEL_LABELS[k]], y=[v], marker_color=MODEL_COLORS[k], name=MODEL_LABELS[k])
                       for k, v in biggest.items()])
    chart.update_layout(height=280, yaxis=dict(tickformat=".0%", title="largest step / whole path"),
                        showlegend=False, margin=dict(l=10, r=10, t=10, b=10))
    return Step("4. Continuity: walk from one code to another",
                f"Ten codes on the straight line between two test images' codes, decoded. The largest single step "
                f"is **{biggest['ae']:.0%}** of the whole change for the AE and **{biggest['vae']:.0%}** for the VAE "
                f"(10% would be perfectly even): on this path the {MODEL_LABELS[smoother]} morphs more evenly.",
                [(MODEL_LABELS[k], _picture(v, 10, 800)) for k, v in strips.items()], chart,
                formula=FORMULAS["interpolation"])


def _completeness_step(pair, models: dict, words) -> Step:
    figures = lesson.prior_lesson(pair)
    said = L.claims(figures) if figures else {}
    view = L.default_view(pair.latent_dim)
    lmap = maps.latent_map(pair, view.method, L.MAP_SAMPLE, aligned=view.aligned)
    tiles = {k: maps.decoded_grid(lmap.key, k, view.n, lmap.xlim, lmap.ylim, view.gaussian, lmap, models[k].model)
             for k in lmap.kinds}
    judge = next(iter(lesson.judge_paths(pair)), None)
    verdicts = {k: lesson.grid_verdicts(f"lesson|{lmap.key}", k, str(judge), judge.stat().st_mtime_ns, tiles[k])
                for k in lmap.kinds} if judge else {}
    where = "the prior's grid (equal N(0, I) mass per cell)" if view.gaussian else "a grid over the PCA plane"
    if said.get("prior_holes") and verdicts:
        sentence = (f"**Holes.** Decoded over {where}, red where the judge recognises no {lesson.noun(pair)}: "
                    f"{', '.join(f'{MODEL_LABELS[k]} {v.recognised:.0%}' for k, v in verdicts.items())} of cells "
                    f"recognised. Random codes: {lesson.figures_line(figures, 'prior_recognised')} recognisable "
                    f"{words}. The VAE was trained to fill the prior; the AE never was.")
        images = [(MODEL_LABELS[k], Image.open(io.BytesIO(maps.grid_png(tiles[k], view.n, maps.hole_shade(v.confidence)))))
                  for k, v in verdicts.items()]
    elif said.get("even_prior") and verdicts:
        sentence = (f"**Who owns the space.** Each cell of {where} coloured by the class its image shows: "
                    + ", ".join(f"{MODEL_LABELS[k]} class entropy {v.entropy:.2f} nats" for k, v in verdicts.items())
                    + f". Random codes: {lesson.prior_classes_sentence(pair, figures, said)}.")
        images = [(MODEL_LABELS[k], lesson.territory_image(v, view.n, lmap.classes)) for k, v in verdicts.items()]
    else:
        sentence = "On this pair the judges see no clear difference in completeness."
        images = [(MODEL_LABELS[k], Image.open(io.BytesIO(maps.grid_png(t, view.n)))) for k, t in tiles.items()]
    return Step("5. Completeness: is every code meaningful?", sentence, images,
                formula=FORMULAS["kl"])


def _beta_steps(panels, errors) -> list[Step]:
    from .beta import rate_distortion, trends

    ends = [panels[0], panels[len(panels) // 2], panels[-1]]
    pics = [(f"β = {p.member.beta:g}", p.map_image) for p in ends]
    steps = [Step("6. The KL term's role: the β dial",
                  "The loss is *reconstruction + β × KL*. Same nets, data and seed; only β differs. "
                  + " ".join(trends(panels)), pics,
                  formula=FORMULAS["beta_loss"])]
    recon = [p.member.figures.get("recon") for p in panels]
    steps.append(Step("7. What the VAE gives up",
                      f"Each β > 0 is one point: more KL (a more informative code) buys less reconstruction error. From "
                      f"β = {panels[0].member.beta:g} to β = {panels[-1].member.beta:g} the error goes from "
                      f"**{recon[0]:.0f}** to **{recon[-1]:.0f}** nats: the price of a usable code space is blur.",
                      chart=rate_distortion(panels, panels[len(panels) // 2].member.beta),
                      formula=FORMULAS["rate_distortion"]))
    return steps


# --- one self-contained HTML file ------------------------------------------------------------------
def _png(image) -> str:
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def lesson_html(title: str, steps: list[Step]) -> str:
    """The whole lesson as one HTML page that opens offline (Plotly's JS inlined once, formulas as MathML)."""
    parts, plotly_inlined = [], False
    for s in steps:
        body = [f"<h2>{html.escape(s.title)}</h2>", f"<p class='s'>{_md(s.sentence)}</p>"]
        if s.question:
            prompt, options, truth = s.question
            body.append(f"<p><b>{html.escape(prompt)}</b></p><ol>" + "".join(
                f"<li>{html.escape(o)}{' ✔ (what the judges measured)' if i == truth else ''}</li>"
                for i, o in enumerate(options)) + "</ol>")
        for caption, image in s.images:
            body.append(f"<figure><img src='data:image/png;base64,{_png(image)}'><figcaption>"
                        f"{html.escape(caption)}</figcaption></figure>")
        if s.chart is not None:
            body.append(s.chart.to_html(full_html=False, include_plotlyjs=not plotly_inlined))
            plotly_inlined = True
        if s.formula:
            body.append(f"<div class='f'>{mathml(s.formula)}</div>")
        parts.append("<section>" + "\n".join(body) + "</section>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto;font-size:20px}"
             ".s{font-size:24px}figure{display:inline-block;margin:8px}img{image-rendering:pixelated}"
             "section{border-bottom:1px solid #ccc;padding:12px 0}.f{color:#333;font-size:24px;margin:12px 0}math{font-family:math}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{''.join(parts)}</body></html>")


def mathml(latex: str) -> str:
    """A formula as MathML, which browsers draw themselves (Chromium and Firefox: MathML Core):
    the file needs no script and no network to show it."""
    from latex2mathml.converter import convert

    return convert(latex, display="block")


def _md(text: str) -> str:
    """The few markdown marks the sentences use (**bold**, *italic*) as HTML."""
    import re

    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"\*(.+?)\*", r"<i>\1</i>", out)
