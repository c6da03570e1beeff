"""Reconstructions, interpolations and prior samples of the AE beside the VAE, with scores:
is each latent space continuous (a straight line morphs smoothly) and complete (random codes
decode to real-looking images)?"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from ui import capacity, lesson, state
from ui import scores as sc
from ui.style import MODEL_COLORS, MODEL_LABELS
from vae.errors import DatasetError, LatentExplorerError
from vae.evaluate import ROWS

st.set_page_config(page_title="Reconstructions · Latent Explorer", page_icon="🧭", layout="wide")
pair = state.pair_picker()

st.title("Reconstructions, paths and samples")
st.markdown(
    """
Both models squeeze an image into a code and rebuild it from that code. Here you see what they
rebuild, what they draw **between** two codes (a straight line should morph one image smoothly
into the other: *continuity*) and what they draw from **random** codes (every code from the bell
curve should give a real-looking image: *completeness*). The VAE is built for both; the AE is not.
"""
)

if pair is None:
    st.info("No model pair yet: train one on the **Train** page, then come back.")
    st.stop()

# --- what the page works on ---------------------------------------------------------------------------
S = {"pick": "recon_pick_seed", "a": "recon_index_a", "b": "recon_index_b", "pair": "recon_pair_seed",
     "samples": "recon_sample_seed"}
for key in ("pick", "pair", "samples"):
    st.session_state.setdefault(S[key], 0)

checkpoints = state.pair_models_or_stop(pair)
kinds = [k for k in ("ae", "vae") if k in checkpoints]
paths = {k: str(checkpoints[k].path) for k in kinds}
versions = {k: sc.file_version(paths[k]) for k in kinds}
scale = sc.display_scale(pair.image_shape)

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
data_id = sc.data_key(data) if data is not None else ""
classes = list(data.classes) if data is not None else []

judge_path = sc.find_judge(pair)
judge = sc.load_judge(str(judge_path), judge_path.stat().st_mtime_ns) if judge_path else None
stored = {k: sc.stored_scores(paths[k], judge_path, data_id) for k in kinds} if data is not None else {}
have_all = data is not None and all(stored.get(k) for k in kinds)


def class_name(index: int) -> str:
    label = int(data.test.labels[index])
    return classes[label] if label < len(classes) else str(label)


def measured_note(records: dict) -> str:
    found = [records[k] for k in kinds]
    kept = "kept for every visitor" if all(r.get("stored", True) for r in found) else "not stored: cache not writable"
    return (f"Measured {found[0]['measured_at']} on {sc.EVAL_SETTINGS['n']:,} test images and "
            f"{sc.EVAL_SETTINGS['n']:,} samples per model (seed {sc.EVAL_SETTINGS['seed']}) in "
            f"{sum(r['seconds'] for r in found):.0f} s; {kept}.")


def measured_slot(needs_judge: bool):
    """A placeholder for measured scores, filled at the end of the run (after the pictures)."""
    slot = st.empty()
    if needs_judge and judge_path is None:
        slot.caption(f"Measuring this needs a reference classifier for {pair.dataset}.")
    elif data is not None and not have_all:
        slot.caption("More scores appear here after **Measure** at the top of the page.")
    return slot


# --- scores panel ---------------------------------------------------------------------------------------
st.subheader("Scores")
panel = st.container()
with panel:
    st.markdown("Beside each section: figures stored in the checkpoint files, and figures a reference classifier "
                "measures (how often random codes give a recognisable image, how smooth the paths are).")
    if judge_path is None:
        st.caption(f"No reference classifier for {pair.dataset} (classifier-*.safetensors in the checkpoints "
                   "folder): only likelihood figures and active units can be measured.")
    measure_clicked = False
    status_slot = st.empty()
    if data is None:
        status_slot.caption("Measuring needs the test images, which could not be loaded.")
    elif have_all:
        status_slot.caption(measured_note(stored))
    else:
        with status_slot.container():
            label = "Measure continuity and completeness" if judge_path else "Measure likelihood and active units"
            measure_clicked = st.button(label, key="recon_measure", type="primary",
                                        help="Runs once per model version; everyone then sees the stored result.")
            st.caption(f"Decodes {sc.EVAL_SETTINGS['n']:,} random codes, {sc.EVAL_SETTINGS['n_pairs']} straight "
                       "paths and an importance-sampled likelihood per model: about half a minute on a small CPU.")
    spinner_slot = st.empty()
    table_slot = st.empty()

# --- 1. reconstructions ---------------------------------------------------------------------------------
st.subheader("1. Reconstructions")
pictures, numbers = st.columns([5, 2], gap="large")
recon_slot = None
recon_pngs = {}
with pictures:
    if data is None:
        st.info("Reconstructions need test images.")
    else:
        count = min(10, len(data.test))
        picked = sc.pick_indices(len(data.test), count, st.session_state[S["pick"]])
        originals = sc.test_images(data, picked)
        small = max(1, scale - 1)
        st.markdown("**Test images** (class below each)")
        st.image(sc.single_tiles(originals, small), caption=[class_name(i) for i in picked])
        errors = {}
        for k in kinds:
            images, errors[k] = sc.reconstructions(paths[k], versions[k], picked, data_id, data)
            st.markdown(f"**{MODEL_LABELS[k]} reconstructions** (error below each)")
            st.image(sc.single_tiles(images, small), caption=[f"{e:.1f}" for e in errors[k]])
            recon_pngs[k] = sc.png_bytes(np.concatenate([originals, images]), count)
        likelihood = checkpoints[kinds[0]].config.likelihood
        what = "binary cross-entropy summed over pixels" if likelihood == "bernoulli" else "Gaussian NLL over pixels"
        st.caption("Error: the model's reconstruction NLL, -log p(x|z) in nats (" + what + "), decoding each "
                   "image's code mean (no sampling); lower is better. Mean over these "
                   + ", ".join(f"{MODEL_LABELS[k]} {errors[k].mean():.1f}" for k in kinds) + ".")
        st.button("New images", key="recon_new_images",
                  on_click=lambda: st.session_state.update({S["pick"]: st.session_state[S["pick"]] + 1}))
with numbers:
    st.markdown(lesson.recon_note(checkpoints))
    instant = {k: checkpoints[k].metrics for k in kinds}
    st.markdown(sc.score_lines(sc.INSTANT, instant, kinds) or "The checkpoints record no test figures.")
    st.caption("From the checkpoint files: test-set means per image at the end of training.")
    recon_slot = measured_slot(needs_judge=False)

# --- 2. continuity --------------------------------------------------------------------------------------
st.subheader("2. Continuity: a straight line between two codes")
pictures, numbers = st.columns([5, 2], gap="large")
paths_png = {}
with pictures:
    if data is None:
        st.info("Paths between test images need test images.")
    else:
        n_test = len(data.test)
        if S["a"] not in st.session_state or st.session_state[S["a"]] >= n_test:
            st.session_state[S["a"]] = 0
        if S["b"] not in st.session_state or st.session_state[S["b"]] >= n_test:
            labels = data.test.labels.numpy()
            other = np.flatnonzero(labels != labels[0])
            st.session_state[S["b"]] = int(other[0]) if len(other) else min(1, n_test - 1)

        def random_pair():
            st.session_state[S["pair"]] += 1
            rng = np.random.default_rng(1000 + st.session_state[S["pair"]])
            a, b = rng.choice(n_test, 2, replace=False)
            st.session_state[S["a"]], st.session_state[S["b"]] = int(a), int(b)

        def index_input(column, label: str, which: str) -> int:
            # the choice lives in a plain session key (widget state is dropped when the visitor
            # opens another page); the widget's key follows it, so "Random pair" can set it
            current = st.session_state[S[which]]
            widget_key = f"_{S[which]}:{current}"
            column.number_input(label, 0, n_test - 1, value=current, step=1, key=widget_key,
                                on_change=lambda: st.session_state.update({S[which]: st.session_state[widget_key]}))
            return int(st.session_state[S[which]])

        c1, c2, c3, c4 = st.columns([1, 1, 1, 1], vertical_alignment="bottom")
        index_a = index_input(c1, "Start image (test index)", "a")
        index_b = index_input(c2, "End image (test index)", "b")
        steps = c3.slider("Steps", 5, 20, 10, key="recon_steps")
        c4.button("Random pair", key="recon_random_pair", on_click=random_pair)
        ends = sc.test_images(data, [index_a, index_b])
        st.image([sc.tiles(ends[:1], 1, scale), sc.tiles(ends[1:], 1, scale)],
                 caption=[f"start: #{index_a}, {class_name(index_a)}", f"end: #{index_b}, {class_name(index_b)}"])
        strips = {}
        for k in kinds:
            strips[k] = sc.interpolation(paths[k], versions[k], int(index_a), int(index_b), steps, data_id, data)
            st.markdown(f"**{MODEL_LABELS[k]}**: from the code of #{index_a} to the code of #{index_b}")
            st.image(sc.tiles(strips[k], steps, scale))
            paths_png[k] = sc.png_bytes(strips[k], steps)
        panels = 2 if judge is not None else 1
        fig = make_subplots(rows=1, cols=panels, horizontal_spacing=0.12, subplot_titles=(
            ["Pixel change from one frame to the next"]
            + (["Classifier's confidence in each frame"] if judge is not None else [])))
        for k in kinds:
            line = dict(color=MODEL_COLORS[k])
            fig.add_trace(go.Scatter(x=np.arange(1, steps), y=sc.step_sizes(strips[k]), name=MODEL_LABELS[k],
                                     mode="lines+markers", line=line), row=1, col=1)
            if judge is not None:
                fig.add_trace(go.Scatter(x=np.arange(steps), y=sc.judge_confidence(judge, strips[k]),
                                         name=MODEL_LABELS[k], mode="lines+markers", line=line,
                                         showlegend=False), row=1, col=2)
        fig.update_xaxes(title_text="step")
        fig.update_yaxes(title_text="RMS change", rangemode="tozero", row=1, col=1)
        if judge is not None:
            fig.update_yaxes(title_text="top-class probability", range=[0, 1.05], row=1, col=2)
        fig.update_layout(height=280, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.3))
        st.plotly_chart(fig, key="recon_path_chart")
        st.caption("A continuous space morphs in small, even steps through images that still look like something; "
                   "a spike on the left or a dip on the right is a jump or a hole on the way.")
with numbers:
    st.markdown("Every frame is decoded from a code on the straight line between the two images' codes.")
    continuity_slot = measured_slot(needs_judge=True)

# --- 3. completeness ------------------------------------------------------------------------------------
st.subheader("3. Completeness: decoding random codes")
pictures, numbers = st.columns([5, 2], gap="large")
samples_png = {}
with pictures:
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    n_samples = c1.select_slider("Samples per model", [16, 32, 64], value=32, key="recon_n_samples")
    c2.button("New samples", key="recon_new_samples",
              on_click=lambda: st.session_state.update({S["samples"]: st.session_state[S["samples"]] + 1}))
    seed = st.session_state[S["samples"]]
    nrow = 8
    grids = [(k, "prior", f"{MODEL_LABELS[k]}: codes from the prior N(0, I)") for k in kinds]
    if "ae" in kinds:
        grids.append(("ae", "box", "AE: codes from the box around its test codes"))
    note = f"Sample seed {seed}. " + lesson.completeness_note(pair)
    for row in range(0, len(grids), 2):
        columns = st.columns(2)
        for col, (k, source, title) in zip(columns, grids[row:row + 2]):
            with col:
                st.markdown(f"**{title}**")
                if source == "prior":
                    images = sc.prior_samples(paths[k], versions[k], n_samples, seed)
                elif data is not None:
                    images = sc.box_samples(paths[k], versions[k], n_samples, seed, data_id, data)
                else:
                    st.info("The box needs the AE's codes of test images.")
                    continue
                st.image(sc.tiles(images, nrow, max(1, scale - 1)))
                samples_png[(k, source)] = sc.png_bytes(images, nrow)
        if len(grids[row:row + 2]) == 1:
            columns[1].caption(note)
    if len(grids) % 2 == 0:
        st.caption(note)
with numbers:
    st.markdown("A complete space has no holes: wherever you draw a code, you get a real-looking image.")
    completeness_slot = measured_slot(needs_judge=True)

# --- 4. posterior collapse ------------------------------------------------------------------------------
st.subheader("4. Which code dimensions are used?")
pictures, numbers = st.columns([5, 2], gap="large")
usage = {}
with pictures:
    if data is None:
        st.info("The KL per dimension needs test images.")
    else:
        usage = {k: sc.latent_usage(paths[k], versions[k], data_id, data) for k in kinds}
        if "vae" in usage:
            u = usage["vae"]
            active = np.asarray(u["activity"]) > sc.ACTIVE_THRESHOLD
            fig = go.Figure(go.Bar(x=[f"z{j}" for j in range(len(u["kl"]))], y=u["kl"],
                                   marker_color=np.where(active, MODEL_COLORS["vae"], "#adb5bd").tolist(),
                                   text=[f"{v:.2f}" for v in u["kl"]], textposition="outside", cliponaxis=False,
                                   hovertemplate="%{x}: %{y:.2f} nats<extra></extra>"))
            fig.update_layout(height=300, margin=dict(l=10, r=10, t=40, b=10),
                              title="VAE: KL per code dimension (0.00: collapsed, unused)",
                              yaxis_title="mean KL (nats)", xaxis_title="dimension")
            st.plotly_chart(fig, key="recon_kl_chart")
            st.caption("A dimension with KL near 0 has collapsed to the prior: its value ignores the image, so "
                       "the decoder cannot use it. A larger beta pushes more dimensions there.")
        else:
            st.info("This pair has no VAE: the AE has no KL term.")
with numbers:
    for k in kinds:
        u = usage.get(k)
        line = f"**{MODEL_LABELS[k]}**: " + (f"{u['active']} of {pair.latent_dim} dimensions active" if u else "–")
        if k == "vae":
            line += f", beta = {checkpoints[k].config.beta:g}"
        st.markdown(line)
    st.caption(f"Active: the code mean varies across test images (variance > {sc.ACTIVE_THRESHOLD}). The AE "
               "has no prior to collapse to; its units are all free.")

# --- 5. export ------------------------------------------------------------------------------------------
capacity.section(pair, checkpoints, data)

st.subheader("6. Download the pictures")
buttons = [(f"{MODEL_LABELS[k]} reconstructions", recon_pngs[k], f"{pair.name}-{k}-reconstructions.png")
           for k in recon_pngs]
if data is not None:
    buttons += [(f"{MODEL_LABELS[k]} path #{index_a} → #{index_b}", paths_png[k],
                 f"{pair.name}-{k}-path-{index_a}-{index_b}.png") for k in paths_png]
buttons += [(f"{MODEL_LABELS[k]} {source} samples", png, f"{pair.name}-{k}-{source}-samples-seed{seed}.png")
            for (k, source), png in samples_png.items()]
for row in range(0, len(buttons), 4):
    for col, (label, png, name) in zip(st.columns(4), buttons[row:row + 4]):
        col.download_button(label, png, file_name=name, mime="image/png", icon=":material/download:",
                            key=f"recon_download_{name}", on_click="ignore", width="stretch")

# --- measured scores: after the pictures, so they show while this runs -----------------------------------
if measure_clicked and data is not None:
    n, n_pairs = sc.EVAL_SETTINGS["n"], sc.EVAL_SETTINGS["n_pairs"]
    judge_version = judge_path.stat().st_mtime_ns if judge_path else None
    try:
        for k in [k for k in kinds if stored.get(k) is None]:
            doing = (f"decoding {n:,} random codes and {n_pairs} paths, judged by the classifier" if judge_path
                     else "importance-sampled likelihood and active units")
            with spinner_slot, st.spinner(f"Measuring the {MODEL_LABELS[k]}: {doing}…"):
                stored[k] = sc.measure(paths[k], versions[k], str(judge_path) if judge_path else None,
                                       judge_version, data_id, data)
    except Exception as err:  # the pictures above stay usable whatever goes wrong here
        with spinner_slot:
            state.show_error(err, "Could not measure")

measured = {k: stored[k]["scores"] for k in kinds if stored.get(k)}
if measured:
    if set(measured) == set(kinds):
        status_slot.caption(measured_note(stored))
    measured_kinds = [k for k in kinds if k in measured]
    for slot, keys in ((recon_slot, ("iwae_nll", "bits_per_dim")),
                       (continuity_slot, ("max_step_share_mean", "min_confidence_mean")),
                       (completeness_slot, ("prior_confident_share", "box_confident_share", "real_confident_share",
                                            "prior_class_evenness", "frechet_distance"))):
        text = sc.score_lines(keys, measured, measured_kinds)
        if text:
            slot.markdown(text)
    with table_slot.expander("All measured figures"):
        rows = [(key, label, fmt) for key, label, fmt in ROWS if any(key in measured[k] for k in measured_kinds)]
        st.dataframe({"figure": [label for _, label, _ in rows],
                      **{MODEL_LABELS[k]: [format(measured[k][key], fmt) if key in measured[k] else "–"
                                               for key, _, fmt in rows] for k in measured_kinds}},
                     hide_index=True, width="stretch", height=35 * (len(rows) + 1) + 3)
        if judge is not None:
            acc = judge.test_accuracy
            st.caption(f"Judge: {judge_path.name}" + (f", {acc:.1%} accurate on real test images." if acc else "."))
