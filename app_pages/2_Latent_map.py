"""Latent map: every test image as a dot where each model's encoder puts it, AE beside VAE."""
from __future__ import annotations

import streamlit as st

from ui import maps, state
from ui.style import MODEL_LABELS
from vae.latent import decode_points

st.set_page_config(page_title="Latent map · Latent Explorer", page_icon="🧭", layout="wide")
pair = state.pair_picker()

st.title("Latent map")
st.markdown(
    """
Each dot is one test image, placed where the encoder puts its code and coloured by the class it
really is. Compare the shapes and the scales: nothing tells the **AE** where to put its codes,
while the **VAE** is pushed to keep them in the round cloud of its prior N(0, I) around 0 (dashed
circles, on maps that can show it). **Click a dot** to see that image and what each model rebuilds from its code.
"""
)
if pair is None:
    st.stop()

SELECTED = "latent_map_selected"  # (map key, sample row) of the clicked dot
models = state.pair_models_or_stop(pair)
page = maps.page_map(pair, models)
data, method, lmap = page.data, page.method, page.lmap

if pair.latent_dim > 2:
    st.caption(f"The codes have {pair.latent_dim} numbers each, so the map is a 2-D projection of them "
               f"({maps.METHOD_NAMES[method]}): nearby dots have similar codes, but some distances are squeezed.")

# --- options ---------------------------------------------------------------------------------
center = lmap.prior_center()
opt = st.columns(3)
show_prior = opt[0].toggle("Prior N(0, I): 1, 2, 3σ circles", value=center is not None, disabled=center is None,
                           help="Where the VAE is trained to put its codes. Drawn only where the map shows it "
                                "faithfully: the 2-D latent space itself or a PCA (linear) map.")
can_ellipse = method == "identity" and "vae" in lmap.codes and lmap.codes["vae"].std is not None
n_ellipses = 150 if opt[1].toggle("Posterior 1σ ellipses (150 images)", value=False, disabled=not can_ellipse,
                                  help="The VAE encodes each image as a small cloud of codes, not a point: "
                                       "each ellipse is one image's cloud. Only for a 2-D VAE on its own axes.") else 0


def remember_selection(chart_key: str, map_key: str) -> None:
    """on_select callback: keep the clicked dot's sample row (customdata[2]) for this map."""
    points = st.session_state[chart_key].selection.get("points", [])
    dots = [p for p in points if len(p.get("customdata") or []) == 3]  # not the ring, circles or ellipses
    if dots:
        st.session_state[SELECTED] = (map_key, int(dots[0]["customdata"][2]))
    elif not points:  # a click on empty space (or a double-click) clears the selection
        st.session_state[SELECTED] = None


selected = st.session_state.get(SELECTED)
row = selected[1] if selected and selected[0] == lmap.key else None

# --- the two maps ----------------------------------------------------------------------------
cols = st.columns(len(lmap.kinds))
for col, kind in zip(cols, lmap.kinds):
    fig = maps.scatter_figure(lmap, kind, highlight_row=row, ellipses=n_ellipses,
                              prior_sigmas=(1, 2, 3) if show_prior else ())
    key = f"latent_map_chart_{kind}"
    col.markdown(f"**{MODEL_LABELS[kind]}**")
    col.plotly_chart(fig, key=key, on_select=lambda key=key, mk=lmap.key: remember_selection(key, mk),
                     selection_mode="points", config={"scrollZoom": False, "displaylogo": False})

spread = {k: float(lmap.codes[k].mean.std(axis=0).mean()) for k in lmap.kinds}
if set(spread) == {"ae", "vae"}:
    st.markdown(f"**Measured on this map:** the codes' spread (standard deviation per code dimension, averaged over "
                f"the {lmap.latent_dim} dimensions) is **AE {spread['ae']:.2g}** and **VAE {spread['vae']:.2g}**; the "
                "prior's is 1. " + ("The AE's codes live on a scale of their own: drawing a code from N(0, I) "
                                    "for it means little." if spread["ae"] > 2 * max(spread["vae"], 1) else ""))
info = [f"{lmap.label}; {len(lmap.indices):,} test images"]
align = lmap.alignments.get("ae")
if align is not None:
    info.append(f"the AE's map is rotated{' and mirrored' if align.reflects else ''} onto the VAE's (Procrustes on "
                f"the same images) so that the same classes sit in the same place, and scaled ×{align.scale:.3g} to "
                f"the same spread")
if method == "identity" and "ae" in lmap.codes:
    ae = lmap.codes["ae"].mean
    info.append(f"the AE's own codes span z1 ∈ [{ae[:, 0].min():.3g}, {ae[:, 0].max():.3g}], "
                f"z2 ∈ [{ae[:, 1].min():.3g}, {ae[:, 1].max():.3g}]: nothing keeps them near 0")
if method == "pca":
    kept = ", ".join(f"{MODEL_LABELS[k]} {lmap.projections[k].explained_variance_ratio_.sum():.0%}"
                     for k in lmap.kinds)
    info.append(f"the 2 PCA axes keep this share of the codes' variance: {kept}")
info.append("loaded from the disk cache" if lmap.from_disk else f"computed in {lmap.seconds:.1f} s")
st.caption("; ".join(info) + ".")

# --- the selected image ----------------------------------------------------------------------
st.subheader("The selected image and its reconstructions")
if row is None:
    st.caption("Click a dot on either map (hover shows its class and test index).")
else:
    index = int(lmap.indices[row])
    label = lmap.classes[lmap.labels[row]] if lmap.labels[row] < len(lmap.classes) else str(lmap.labels[row])
    shown = st.columns(1 + len(lmap.kinds))
    shown[0].image(maps.enlarge(maps.split_images(data.test, [index])[0], 168), width=168,
                   caption=f"Input: test image {index}, class {label}")
    for col, kind in zip(shown[1:], lmap.kinds):
        code = lmap.codes[kind].mean[row]
        recon = decode_points(models[kind].model, code)[0]
        x, y = lmap.points[kind][row]
        col.image(maps.enlarge(recon, 168), width=168, caption=f"{MODEL_LABELS[kind]} reconstruction "
                                                    f"(map position {x:.2f}, {y:.2f})")
    st.caption("Each reconstruction decodes the posterior mean, the code at the dot (the ringed dot on both maps).")

st.download_button("Download the map coordinates (CSV)", maps.map_csv(lmap),
                   file_name=f"latent-map-{pair.name}-{method}.csv", mime="text/csv")
