"""The Reconstructions page's sections, one function each; `app_pages/4_Reconstructions.py` calls
them in order. Pictures first; the figures measured on request fill placeholders at the end of the
run, so the pictures show while they are measured."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from vae.catalog import PairInfo
from vae.data import ImageDataset
from vae.errors import DatasetError, LatentExplorerError
from vae.evaluate import ROWS

from . import lesson, state
from . import scores as sc
from .images import encode_pictures, made_once
from .style import MODEL_COLORS, MODEL_LABELS

# the page's choices, in plain session keys (widget state is dropped when a visitor opens another page)
KEYS = {"pick": "recon_pick_seed", "a": "recon_index_a", "b": "recon_index_b", "pair": "recon_pair_seed",
        "samples": "recon_sample_seed"}
MEASURE = "recon_measure"


@dataclass
class Page:
    """What every section reads: the pair, its checkpoints and test data, its judge, stored scores."""

    pair: PairInfo
    checkpoints: dict
    data: ImageDataset | None
    kinds: list = field(default_factory=list)
    paths: dict = field(default_factory=dict)  # kind -> checkpoint path, as text (the caches' key)
    versions: dict = field(default_factory=dict)  # kind -> the file's version (a new file: new pictures)
    data_id: str = ""
    judge_path: object = None
    judge: object = None
    stored: dict = field(default_factory=dict)  # kind -> its stored scores record, or None

    @property
    def scale(self) -> int:
        return sc.display_scale(self.pair.image_shape)

    @property
    def models_key(self) -> str:
        """Names the checkpoint files and their versions: part of every cached picture's key."""
        return ";".join(f"{k}:{self.paths[k]}:{self.versions[k]}" for k in self.kinds)

    @property
    def have_all(self) -> bool:
        return self.data is not None and all(self.stored.get(k) for k in self.kinds)

    def class_name(self, index: int) -> str:
        classes = list(self.data.classes)
        label = int(self.data.test.labels[index])
        return classes[label] if label < len(classes) else str(label)


@dataclass
class Shown:
    """What a section leaves for the end of the run: where its measured figures go (and which),
    and its pictures as (label, PNG, file name) download buttons."""

    slot: object = None
    figures: tuple = ()
    downloads: list = field(default_factory=list)


@dataclass
class Panel:
    """The scores panel's placeholders and whether Measure was clicked in this run."""

    measure_clicked: bool
    status: object
    spinner: object
    table: object


def load(pair: PairInfo) -> Page:
    """The pair's checkpoints, test data (or an error that says why there is none), judge and stored scores."""
    for key in ("pick", "pair", "samples"):
        st.session_state.setdefault(KEYS[key], 0)
    checkpoints = state.pair_models_or_stop(pair)
    kinds = [k for k in ("ae", "vae") if k in checkpoints]
    paths = {k: str(checkpoints[k].path) for k in kinds}
    page = Page(pair, checkpoints, None, kinds, paths, {k: sc.file_version(paths[k]) for k in kinds})
    page.data = _test_data(pair)
    page.data_id = sc.data_key(page.data) if page.data is not None else ""
    page.judge_path = sc.find_judge(pair)
    if page.judge_path:
        page.judge = sc.load_judge(str(page.judge_path), page.judge_path.stat().st_mtime_ns)
    if page.data is not None:
        page.stored = {k: sc.stored_scores(page.paths[k], page.judge_path, page.data_id) for k in page.kinds}
    return page


def _test_data(pair: PairInfo) -> ImageDataset | None:
    data = None
    try:
        data = state.load_pair_data(pair)
    except DatasetError as err:
        state.show_error(err, "No test images for this pair")
        st.caption("Without test images the page can only show samples from the prior.")
    except LatentExplorerError as err:
        state.show_error(err, "No test images for this pair")
    if data is not None:
        for note in data.notes:
            st.info(note)
        if len(data.test) < 2:
            st.warning(f"The test split of {data.name} holds {len(data.test)} image(s): two are needed.")
            data = None
    return data


def measured_note(page: Page) -> str:
    found = [page.stored[k] for k in page.kinds]
    kept = "kept for every visitor" if all(r.get("stored", True) for r in found) else "not stored: cache not writable"
    return (f"Measured {found[0]['measured_at']} on {sc.EVAL_SETTINGS['n']:,} test images and "
            f"{sc.EVAL_SETTINGS['n']:,} samples per model (seed {sc.EVAL_SETTINGS['seed']}) in "
            f"{sum(r['seconds'] for r in found):.0f} s; {kept}.")


def measured_slot(page: Page, needs_judge: bool):
    """A placeholder for measured scores, filled at the end of the run (after the pictures)."""
    slot = st.empty()
    if needs_judge and page.judge_path is None:
        slot.caption(f"Measuring this needs a reference classifier for {page.pair.dataset}.")
    elif page.data is not None and not page.have_all:
        slot.caption("More scores appear here after **Measure** at the top of the page.")
    return slot


# --- the sections, in the page's order ------------------------------------------------------------------
def scores_panel(page: Page) -> Panel:
    st.subheader("Scores")
    with st.container():
        st.markdown("Beside each section: figures stored in the checkpoint files, and figures a reference classifier "
                    "measures (how often random codes give a recognisable image, how smooth the paths are).")
        if page.judge_path is None:
            st.caption(f"No reference classifier for {page.pair.dataset} (classifier-*.safetensors in the checkpoints "
                       "folder): only likelihood figures and active units can be measured.")
        clicked = False
        status = st.empty()
        if page.data is None:
            status.caption("Measuring needs the test images, which could not be loaded.")
        elif page.have_all:
            status.caption(measured_note(page))
        else:
            with status.container():
                label = "Measure continuity and completeness" if page.judge_path else "Measure likelihood and active units"
                clicked = st.button(label, key=MEASURE, type="primary",
                                    help="Runs once per model version; everyone then sees the stored result.")
                st.caption(f"Decodes {sc.EVAL_SETTINGS['n']:,} random codes, {sc.EVAL_SETTINGS['n_pairs']} straight "
                           "paths and an importance-sampled likelihood per model: about half a minute on a small CPU.")
        return Panel(clicked, status, st.empty(), st.empty())


def reconstructions(page: Page) -> Shown:
    st.subheader("1. Reconstructions")
    pictures, numbers = st.columns([5, 2], gap="large")
    shown = Shown(figures=("iwae_nll", "bits_per_dim"))
    with pictures:
        if page.data is None:
            st.info("Reconstructions need test images.")
        else:
            shown.downloads = _reconstruction_pictures(page)
    with numbers:
        st.markdown(lesson.recon_note(page.checkpoints))
        instant = {k: page.checkpoints[k].metrics for k in page.kinds}
        st.markdown(sc.score_lines(sc.INSTANT, instant, page.kinds) or "The checkpoints record no test figures.")
        st.caption("From the checkpoint files: test-set means per image at the end of training.")
        shown.slot = measured_slot(page, needs_judge=False)
    return shown


def _reconstruction_pictures(page: Page) -> list[tuple[str, bytes, str]]:
    data, kinds = page.data, page.kinds
    count = min(10, len(data.test))
    picked = sc.pick_indices(len(data.test), count, st.session_state[KEYS["pick"]])
    small = max(1, page.scale - 1)
    rows = made_once(key=f"recon|{page.models_key}|{page.data_id}|{picked}|{small}",
                     _make=lambda: _reconstruction_rows(page, picked, small))
    st.markdown("**Test images** (class below each)")
    st.image(list(rows["test"].urls), caption=list(rows["test"].captions))
    downloads = []
    for k in kinds:
        st.markdown(f"**{MODEL_LABELS[k]} reconstructions** (error below each)")
        st.image(list(rows[k].urls), caption=list(rows[k].captions))
        downloads.append((f"{MODEL_LABELS[k]} reconstructions", rows[k].png, f"{page.pair.name}-{k}-reconstructions.png"))
    likelihood = page.checkpoints[kinds[0]].config.likelihood
    what = "binary cross-entropy summed over pixels" if likelihood == "bernoulli" else "Gaussian NLL over pixels"
    st.caption("Error: the model's reconstruction NLL, -log p(x|z) in nats (" + what + "), decoding each "
               "image's code mean (no sampling); lower is better. Mean over these "
               + ", ".join(f"{MODEL_LABELS[k]} {rows['mean_error'][k]:.1f}" for k in kinds) + ".")
    st.button("New images", key="recon_new_images",
              on_click=lambda: st.session_state.update({KEYS["pick"]: st.session_state[KEYS["pick"]] + 1}))
    return downloads


def _reconstruction_rows(page: Page, picked: tuple[int, ...], small: int) -> dict:
    """The picked test images and each model's reconstructions, encoded, with their captions."""
    originals = sc.test_images(page.data, picked)
    rows = {"test": encode_pictures(sc.single_tiles(originals, small), [page.class_name(i) for i in picked]),
            "mean_error": {}}
    for k in page.kinds:
        images, errors = sc.reconstructions(page.paths[k], page.versions[k], picked, page.data_id, page.data)
        rows[k] = encode_pictures(sc.single_tiles(images, small), [f"{e:.1f}" for e in errors],
                           png=sc.png_bytes(np.concatenate([originals, images]), len(picked)))
        rows["mean_error"][k] = float(errors.mean())
    return rows


def continuity(page: Page) -> Shown:
    st.subheader("2. Continuity: a straight line between two codes")
    pictures, numbers = st.columns([5, 2], gap="large")
    shown = Shown(figures=("max_step_share_mean", "min_confidence_mean"))
    with pictures:
        if page.data is None:
            st.info("Paths between test images need test images.")
        else:
            shown.downloads = _paths(page)
    with numbers:
        st.markdown("Every frame is decoded from a code on the straight line between the two images' codes.")
        shown.slot = measured_slot(page, needs_judge=True)
    return shown


def _paths(page: Page) -> list[tuple[str, bytes, str]]:
    index_a, index_b, steps = _path_ends(len(page.data.test), page.data.test.labels.numpy())
    judge = page.judge.file_version if page.judge is not None else None
    shown = made_once(key=f"path|{page.models_key}|{page.data_id}|{index_a}|{index_b}|{steps}|{page.scale}|{judge}",
                      _make=lambda: _path_pictures(page, index_a, index_b, steps))
    st.image(list(shown["ends"].urls), caption=list(shown["ends"].captions))
    downloads = []
    for k in page.kinds:
        st.markdown(f"**{MODEL_LABELS[k]}**: from the code of #{index_a} to the code of #{index_b}")
        st.image(shown[k].urls[0])
        downloads.append((f"{MODEL_LABELS[k]} path #{index_a} → #{index_b}", shown[k].png,
                          f"{page.pair.name}-{k}-path-{index_a}-{index_b}.png"))
    st.plotly_chart(shown["chart"], key="recon_path_chart")
    st.caption("A continuous space morphs in small, even steps through images that still look like something; "
               "a spike on the left or a dip on the right is a jump or a hole on the way.")
    return downloads


def _path_pictures(page: Page, index_a: int, index_b: int, steps: int) -> dict:
    """The two ends, each model's decoded path (encoded, and as a PNG) and the chart of both."""
    ends, scale = sc.test_images(page.data, [index_a, index_b]), page.scale
    shown = {"ends": encode_pictures([sc.tiles(ends[:1], 1, scale), sc.tiles(ends[1:], 1, scale)],
                              [f"start: #{index_a}, {page.class_name(index_a)}",
                               f"end: #{index_b}, {page.class_name(index_b)}"])}
    strips = {}
    for k in page.kinds:
        strips[k] = sc.interpolation(page.paths[k], page.versions[k], index_a, index_b, steps, page.data_id, page.data)
        shown[k] = encode_pictures([sc.tiles(strips[k], steps, scale)], png=sc.png_bytes(strips[k], steps))
    shown["chart"] = _path_chart(strips, steps, page.judge)
    return shown


def _path_ends(n_test: int, labels: np.ndarray) -> tuple[int, int, int]:
    """The start and end test indices (typed, or drawn by "Random pair") and the number of steps."""
    if KEYS["a"] not in st.session_state or st.session_state[KEYS["a"]] >= n_test:
        st.session_state[KEYS["a"]] = 0
    if KEYS["b"] not in st.session_state or st.session_state[KEYS["b"]] >= n_test:
        other = np.flatnonzero(labels != labels[0])  # by default the end shows another class
        st.session_state[KEYS["b"]] = int(other[0]) if len(other) else min(1, n_test - 1)

    def random_pair():
        st.session_state[KEYS["pair"]] += 1
        rng = np.random.default_rng(1000 + st.session_state[KEYS["pair"]])
        a, b = rng.choice(n_test, 2, replace=False)
        st.session_state[KEYS["a"]], st.session_state[KEYS["b"]] = int(a), int(b)

    def index_input(column, label: str, which: str) -> int:
        # the widget's key follows the plain session key, so "Random pair" can set it
        current = st.session_state[KEYS[which]]
        widget_key = f"_{KEYS[which]}:{current}"
        column.number_input(label, 0, n_test - 1, value=current, step=1, key=widget_key,
                            on_change=lambda: st.session_state.update({KEYS[which]: st.session_state[widget_key]}))
        return int(st.session_state[KEYS[which]])

    c1, c2, c3, c4 = st.columns([1, 1, 1, 1], vertical_alignment="bottom")
    index_a = index_input(c1, "Start image (test index)", "a")
    index_b = index_input(c2, "End image (test index)", "b")
    steps = c3.slider("Steps", 5, 20, 10, key="recon_steps")
    c4.button("Random pair", key="recon_random_pair", on_click=random_pair)
    return index_a, index_b, steps


def _path_chart(strips: dict, steps: int, judge) -> go.Figure:
    """Pixel change per step, and (given a judge) its confidence per frame, AE beside VAE."""
    panels = 2 if judge is not None else 1
    fig = make_subplots(rows=1, cols=panels, horizontal_spacing=0.12, subplot_titles=(
        ["Pixel change from one frame to the next"]
        + (["Classifier's confidence in each frame"] if judge is not None else [])))
    for k, strip in strips.items():
        line = dict(color=MODEL_COLORS[k])
        fig.add_trace(go.Scatter(x=np.arange(1, steps), y=sc.step_sizes(strip), name=MODEL_LABELS[k],
                                 mode="lines+markers", line=line), row=1, col=1)
        if judge is not None:
            fig.add_trace(go.Scatter(x=np.arange(steps), y=sc.judge_confidence(judge, strip), name=MODEL_LABELS[k],
                                     mode="lines+markers", line=line, showlegend=False), row=1, col=2)
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="RMS change", rangemode="tozero", row=1, col=1)
    if judge is not None:
        fig.update_yaxes(title_text="top-class probability", range=[0, 1.05], row=1, col=2)
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.3))
    return fig


def completeness(page: Page) -> Shown:
    st.subheader("3. Completeness: decoding random codes")
    pictures, numbers = st.columns([5, 2], gap="large")
    shown = Shown(figures=("prior_confident_share", "box_confident_share", "real_confident_share",
                           "prior_class_evenness", "frechet_distance"))
    with pictures:
        shown.downloads = _samples(page)
    with numbers:
        st.markdown("A complete space has no holes: wherever you draw a code, you get a real-looking image.")
        shown.slot = measured_slot(page, needs_judge=True)
    return shown


def _samples(page: Page) -> list[tuple[str, bytes, str]]:
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    n_samples = c1.select_slider("Samples per model", [16, 32, 64], value=32, key="recon_n_samples")
    c2.button("New samples", key="recon_new_samples",
              on_click=lambda: st.session_state.update({KEYS["samples"]: st.session_state[KEYS["samples"]] + 1}))
    seed, kinds = st.session_state[KEYS["samples"]], page.kinds
    grids = [(k, "prior", f"{MODEL_LABELS[k]}: codes from the prior N(0, I)") for k in kinds]
    if "ae" in kinds:
        grids.append(("ae", "box", "AE: codes from the box around its test codes"))
    shown = made_once(key=f"samples|{page.models_key}|{page.data_id}|{n_samples}|{seed}|{page.scale}",
                      _make=lambda: _sample_pictures(page, grids, n_samples, seed))
    note = f"Sample seed {seed}. " + lesson.completeness_note(page.pair)
    downloads = []
    for row in range(0, len(grids), 2):
        columns = st.columns(2)
        for col, (k, source, title) in zip(columns, grids[row:row + 2]):
            with col:
                st.markdown(f"**{title}**")
                grid = shown[k, source]
                if grid is None:
                    st.info("The box needs the AE's codes of test images.")
                    continue
                st.image(grid.urls[0])
                downloads.append((f"{MODEL_LABELS[k]} {source} samples", grid.png,
                                  f"{page.pair.name}-{k}-{source}-samples-seed{seed}.png"))
        if len(grids[row:row + 2]) == 1:
            columns[1].caption(note)
    if len(grids) % 2 == 0:
        st.caption(note)
    return downloads


def _sample_pictures(page: Page, grids: list, n_samples: int, seed: int, nrow: int = 8) -> dict:
    """(kind, source) -> the decoded random codes, encoded and as a PNG; None where there is no box."""
    shown = {}
    for k, source, _ in grids:
        if source == "prior":
            images = sc.prior_samples(page.paths[k], page.versions[k], n_samples, seed)
        elif page.data is not None:
            images = sc.box_samples(page.paths[k], page.versions[k], n_samples, seed, page.data_id, page.data)
        else:
            shown[k, source] = None
            continue
        shown[k, source] = encode_pictures([sc.tiles(images, nrow, max(1, page.scale - 1))], png=sc.png_bytes(images, nrow))
    return shown


def code_usage(page: Page) -> None:
    st.subheader("4. Which code dimensions are used?")
    pictures, numbers = st.columns([5, 2], gap="large")
    usage = {}
    with pictures:
        if page.data is None:
            st.info("The KL per dimension needs test images.")
        else:
            usage, chart = made_once(key=f"usage|{page.models_key}|{page.data_id}", _make=lambda: _usage(page))
            if chart is not None:
                st.plotly_chart(chart, key="recon_kl_chart")
                st.caption("A dimension with KL near 0 has collapsed to the prior: its value ignores the image, so "
                           "the decoder cannot use it. A larger beta pushes more dimensions there.")
            else:
                st.info("This pair has no VAE: the AE has no KL term.")
    with numbers:
        for k in page.kinds:
            u = usage.get(k)
            line = f"**{MODEL_LABELS[k]}**: " + (f"{u['active']} of {page.pair.latent_dim} dimensions active" if u else "–")
            if k == "vae":
                line += f", beta = {page.checkpoints[k].config.beta:g}"
            st.markdown(line)
        st.caption(f"Active: the code mean varies across test images (variance > {sc.ACTIVE_THRESHOLD}). The AE "
                   "has no prior to collapse to; its units are all free.")


def _usage(page: Page) -> tuple[dict, go.Figure | None]:
    """kind -> its code dimensions' use (`sc.latent_usage`), and the VAE's KL chart (None without a VAE)."""
    usage = {k: sc.latent_usage(page.paths[k], page.versions[k], page.data_id, page.data) for k in page.kinds}
    return usage, _kl_chart(usage["vae"]) if "vae" in usage else None


def _kl_chart(u: dict) -> go.Figure:
    active = np.asarray(u["activity"]) > sc.ACTIVE_THRESHOLD
    fig = go.Figure(go.Bar(x=[f"z{j}" for j in range(len(u["kl"]))], y=u["kl"],
                           marker_color=np.where(active, MODEL_COLORS["vae"], "#adb5bd").tolist(),
                           text=[f"{v:.2f}" for v in u["kl"]], textposition="outside", cliponaxis=False,
                           hovertemplate="%{x}: %{y:.2f} nats<extra></extra>"))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=40, b=10),
                      title="VAE: KL per code dimension (0.00: collapsed, unused)",
                      yaxis_title="mean KL (nats)", xaxis_title="dimension")
    return fig


def downloads(sections: list[Shown]) -> None:
    st.subheader("6. Download the pictures")
    buttons = [button for shown in sections for button in shown.downloads]
    for row in range(0, len(buttons), 4):
        for col, (label, png, name) in zip(st.columns(4), buttons[row:row + 4]):
            col.download_button(label, png, file_name=name, mime="image/png", icon=":material/download:",
                                key=f"recon_download_{name}", on_click="ignore", width="stretch")


# --- measured scores: after the pictures, so they show while this runs ----------------------------------
def measure_if_asked(page: Page, panel: Panel) -> None:
    if not (panel.measure_clicked and page.data is not None):
        return
    n, n_pairs = sc.EVAL_SETTINGS["n"], sc.EVAL_SETTINGS["n_pairs"]
    judge_path = page.judge_path
    judge_version = judge_path.stat().st_mtime_ns if judge_path else None
    try:
        for k in [k for k in page.kinds if page.stored.get(k) is None]:
            doing = (f"decoding {n:,} random codes and {n_pairs} paths, judged by the classifier" if judge_path
                     else "importance-sampled likelihood and active units")
            with panel.spinner, st.spinner(f"Measuring the {MODEL_LABELS[k]}: {doing}…"):
                page.stored[k] = sc.measure(page.paths[k], page.versions[k], str(judge_path) if judge_path else None,
                                            judge_version, page.data_id, page.data)
    except Exception as err:  # the pictures above stay usable whatever goes wrong here
        with panel.spinner:
            state.show_error(err, "Could not measure")


def show_measured(page: Page, panel: Panel, sections: list[Shown]) -> None:
    """Fill the sections' placeholders and the panel's table with what has been measured."""
    measured = {k: page.stored[k]["scores"] for k in page.kinds if page.stored.get(k)}
    if not measured:
        return
    if set(measured) == set(page.kinds):
        panel.status.caption(measured_note(page))
    kinds = [k for k in page.kinds if k in measured]
    for shown in sections:
        lines = sc.score_lines(shown.figures, measured, kinds)
        if shown.slot is not None and lines:
            shown.slot.markdown(lines)
    with panel.table.expander("All measured figures"):
        rows = [(key, label, fmt) for key, label, fmt in ROWS if any(key in measured[k] for k in kinds)]
        st.dataframe({"figure": [label for _, label, _ in rows],
                      **{MODEL_LABELS[k]: [format(measured[k][key], fmt) if key in measured[k] else "–"
                                           for key, _, fmt in rows] for k in kinds}},
                     hide_index=True, width="stretch", height=35 * (len(rows) + 1) + 3)
        if page.judge is not None:
            acc = page.judge.test_accuracy
            st.caption(f"Judge: {page.judge_path.name}" + (f", {acc:.1%} accurate on real test images." if acc else "."))
