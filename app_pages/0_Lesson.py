"""Lesson: the tutorial's argument for a class, one step at a time, predict then reveal."""
from __future__ import annotations

import streamlit as st

from ui import beta as B
from ui import lesson_steps, state
from vae.errors import LatentExplorerError

st.set_page_config(page_title="Lesson · Latent Explorer", page_icon="🧭", layout="wide")
pair = state.pair_picker()
# made to be projected (1280x720): large type for the sentence each figure backs, and a short head,
# so the step's title, sentence and figure are on screen together without scrolling
st.markdown("<style>.lesson-sentence p,.lesson-question p{font-size:1.45rem;line-height:1.5}"
            "[data-testid=stMainBlockContainer]{padding-top:2.5rem}"
            "h1{font-size:1.9rem !important;padding-bottom:0.25rem !important}"
            "[data-testid=stRadio] label p{font-size:1.2rem}</style>", unsafe_allow_html=True)

st.title("Lesson: why a VAE's code space is usable and an AE's is not")
if pair is None:
    st.stop()
models = state.pair_models_or_stop(pair)
if set(models) != {"ae", "vae"}:
    st.info("The lesson compares an AE with a VAE: pick a pair that has both in the sidebar.")
    st.stop()
try:
    data = state.load_pair_data(pair)
except LatentExplorerError as err:
    state.show_error(err, "The lesson needs this pair's test images")
    st.stop()

family = next((f for f in B.families() if f.latent_dim == pair.latent_dim and f.dataset == pair.dataset), None)
steps = lesson_steps.steps_for(pair, models, data, family)

def _wide(image) -> bool:
    w, h = image.size if hasattr(image, "size") and not hasattr(image, "shape") else image.shape[1::-1]
    return w > 2.5 * h


# the step lives in the address (?step=3), so a teacher can link to it
try:
    index = min(max(int(st.query_params.get("step", 1)), 1), len(steps)) - 1
except ValueError:
    index = 0
step = steps[index]


def navigation(where: str, widths: list) -> None:
    """Previous / Next, above the step (a teacher never scrolls to move on) and below it."""
    prev, *_, nxt = st.columns(widths)
    if prev.button("← Previous", disabled=index == 0, width="stretch", key=f"lesson_prev_{where}"):
        st.query_params["step"] = str(index)
        st.rerun()
    if nxt.button("Next →", disabled=index == len(steps) - 1, width="stretch", key=f"lesson_next_{where}"):
        st.query_params["step"] = str(index + 2)
        st.rerun()


title, nav = st.columns([3, 1], vertical_alignment="bottom")
title.subheader(step.title)
title.caption(f"Step {index + 1} of {len(steps)} · pair **{pair.label}**")
with nav:
    navigation("top", [1, 1])
revealed = True
if step.question:
    prompt, options, truth = step.question
    st.markdown(f"<div class='lesson-question'>\n\n**{prompt}**\n\n</div>", unsafe_allow_html=True)
    guess = st.radio("Your class's prediction", options, index=None, key=f"lesson_guess_{pair.name}")
    revealed = st.toggle("Reveal", key=f"lesson_reveal_{pair.name}", disabled=guess is None,
                         help="Take the class's answer first.")
    if revealed:
        if truth is None:
            st.info("The two judges disagree about these samples: see their figures below.")
        elif options.index(guess) == truth:
            st.success("That is what the judges measured.")
        else:
            st.warning(f"The judges measured: **{options[truth]}**.")
if revealed:
    with st.container(key="lesson-sentence", border=False):
        st.markdown(f"<div class='lesson-sentence'>\n\n{step.sentence}\n\n</div>", unsafe_allow_html=True)
    strips = [(c, im) for c, im in step.images if _wide(im)]  # rows of images: one under the other
    tiles = [(c, im) for c, im in step.images if not _wide(im)]
    for caption, image in strips:
        st.image(image, caption=caption, width="stretch")
    if tiles:
        for col, (caption, image) in zip(st.columns(len(tiles)), tiles):
            col.image(image, caption=caption, width="stretch")
    if step.chart is not None:
        st.plotly_chart(step.chart, key=f"lesson_chart_{index}", config={"displaylogo": False})
    if step.formula:
        with st.expander("The formula"):
            st.latex(step.formula)

if revealed:  # below a figure; an unanswered question is short enough for the buttons above
    navigation("bottom", [1, 4, 1])

st.divider()
st.download_button("Download the whole lesson (one HTML file, opens offline)",
                   lambda: lesson_steps.lesson_html(f"Latent Explorer lesson · {pair.label}", steps),
                   file_name=f"latent-explorer-lesson-{pair.name}.html", mime="text/html", on_click="ignore")
