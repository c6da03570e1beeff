"""Draw: a student's own digit, encoded by both models and marked on both maps."""
from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from ui import drawing, maps, state
from ui.style import MODEL_LABELS
from vae.latent import decode_points

st.set_page_config(page_title="Draw · Latent Explorer", page_icon="🧭", layout="wide")
pair = state.pair_picker()

st.title("Draw a digit")
st.markdown(
    """
Draw a digit with the mouse in the black box. Both models encode your drawing: the **red star**
shows where it lands on each model's map, among the real test digits, and the images show what
each model rebuilds from that code. Try an unusual digit, or a scribble, and see where it goes.
"""
)
if pair is None:
    st.stop()
if tuple(pair.image_shape) != (1, 28, 28):
    c, h, w = pair.image_shape
    st.info(f"Drawing works with 28×28 grey-scale pairs (MNIST-like). **{pair.name}** uses {c}×{h}×{w} "
            f"{'colour ' if c == 3 else ''}images: pick an MNIST pair in the sidebar.")
    st.stop()

from streamlit_drawable_canvas import st_canvas  # noqa: E402  (only for pairs that can use it)

models = state.pair_models_or_stop(pair)
kinds = [k for k in ("ae", "vae") if k in models]

left, right = st.columns([1, 2])
with left:
    drawn = st_canvas(stroke_width=20, stroke_color="#FFFFFF", background_color="#000000", height=280, width=280,
                      drawing_mode="freedraw", display_toolbar=True, key="draw_canvas")
    st.caption("Draw large, in one or a few strokes. The bin icon under the box clears it.")
digit = drawing.mnist_style(drawn.image_data) if drawn.image_data is not None else None

codes, recons = {}, {}
if digit is not None:
    batch = torch.from_numpy(digit)[None, None]  # [1, 1, 28, 28] uint8
    for kind in kinds:
        model = models[kind].model
        with torch.no_grad():
            codes[kind] = model.encode(model.preprocess(batch)).mode().float().numpy()
        recons[kind] = decode_points(model, codes[kind])[0]

with right:
    if digit is None:
        st.markdown("#### What the models see")
        st.caption("Nothing drawn yet.")
    else:
        shown = st.columns(1 + len(kinds))
        shown[0].image(maps.enlarge(digit[..., None], 168), width=168,
                       caption="What the models see: cropped, scaled to 20×20 and centred in 28×28, like MNIST")
        for col, kind in zip(shown[1:], kinds):
            col.image(maps.enlarge(recons[kind], 168), width=168, caption=f"{MODEL_LABELS[kind]} reconstruction")

# --- where the drawing lands on the maps --------------------------------------------------------
page = maps.page_map(pair, models, "This pair's test images are not available, so there is no map to mark",
                     prior_samples_if_missing=False)
method, lmap = page.method, page.lmap

st.subheader("Where your drawing lands")
where = {kind: lmap.to_map(kind, codes[kind])[0] for kind in codes}
cols = st.columns(len(lmap.kinds))
for col, kind in zip(cols, lmap.kinds):
    marks = [(where[kind], "you")] if kind in where else []
    col.markdown(f"**{MODEL_LABELS[kind]}**")
    col.plotly_chart(maps.scatter_figure(lmap, kind, marks=marks, prior_sigmas=(2,) if kind == "vae" else (),
                                         height=480),
                     key=f"draw_map_{kind}", on_select="ignore", config={"displaylogo": False})
if codes:
    if lmap.transform_is_exact:
        st.caption("The star is exactly where the code lands on this map." +
                   (" The AE map is aligned onto the VAE's, so the star is moved with it." if "ae" in codes else ""))
    else:
        st.caption(f"Approximate position: {maps.METHOD_NAMES[method].split(' (')[0]} cannot place a new code "
                   "exactly, so the star sits at the weighted average of the 5 test images with the most similar "
                   "codes. Use PCA for an exact position.")
    if "vae" in codes:
        z = codes["vae"][0]
        st.caption(f"The VAE's code is {np.linalg.norm(z):.2f} units from the prior's centre; a typical code drawn "
                   f"from N(0, I) in {lmap.latent_dim}-D is about {np.sqrt(lmap.latent_dim):.1f} units away.")
