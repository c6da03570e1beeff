"""β dial: one family of models from the AE (β = 0) to VAEs past posterior collapse, on one slider."""
from __future__ import annotations

import streamlit as st

from ui import beta as B
from ui import state

st.set_page_config(page_title="β dial · Latent Explorer", page_icon="🧭", layout="wide")
pair = state.pair_picker()  # the dial opens on the sweep of the same latent size as the sidebar's pair

st.title("β dial: from AE to VAE")
st.markdown(
    """
A VAE's loss is *reconstruction error + β × KL*: the KL term pulls every code towards the prior
N(0, I). With **β = 0** there is no pull at all: that model is the plain **AE**. The models below
share everything (network, data, seed, epochs, batches) except β. Slide it and watch the map,
the decoded grid, the prior samples and the reconstructions change; every panel uses the same
axes for every β. What this sweep measurably shows is listed under the rate–distortion curve.
"""
)

found = B.families()
if not found:
    st.info("No β sweep here yet: train one with `python -m vae.train --preset mnist-2d --beta 0,0.1,1,4`.")
    st.stop()
by_name = {f.name: f for f in found}
names = list(by_name)
same = [n for n in names if pair is not None and by_name[n].latent_dim == pair.latent_dim]
name = st.selectbox("Sweep", names, index=names.index(same[0]) if same else 0, format_func=lambda n: f"{n} ({by_name[n].latent_dim}-D latent, "
                    f"{len(by_name[n].members)} values of β)", key="beta_family")
family = by_name[name]
panels = B.panels(family)
betas = [p.member.beta for p in panels]
beta = st.select_slider("β, the weight of the KL term", betas, value=betas[0], format_func=lambda b: f"{b:g}",
                        key=f"beta_value_{name}")
panel = panels[betas.index(beta)]
f = panel.member.figures

cols = st.columns([1.25, 1, 0.75, 0.6])
cols[0].image(panel.map_image, caption="1,000 test codes" + (" (the 2-D code itself)" if family.latent_dim == 2
                                                               else " on their own PCA plane") + "; dashed: prior 1, 2, 3σ")
cols[1].image(panel.grid_image, caption=f"Decoded grid over [-{B.sweep.VIEW:g}, {B.sweep.VIEW:g}]², same axes")
cols[2].image(panel.samples_image, caption="16 codes from N(0, I), decoded")
cols[3].image(panel.recons_image, caption="Two test images, rebuilt")
judges = [k.split("[")[1].rstrip("]") for k in f if k.startswith("prior_recognised")]
st.markdown(
    f"**β = {beta:g}**" + (" (the AE)" if beta == 0 else "") + f": reconstruction error **{f.get('recon', 0):.1f}** "
    f"nats, KL **{f.get('kl', 0):.1f}** nats, **{f['active_units']:.0f} of {f['latent_dim']:.0f}** code dimensions "
    "active" + ("; prior samples recognised " + ", ".join(f"**{f[f'prior_recognised [{j}]']:.0%}** ({j})"
                                                         for j in judges) if judges else
                " (no judge ships for this data set, so prior samples are not scored)") + ".")

left, right = st.columns([1, 1.3])
left.plotly_chart(B.rate_distortion(panels, beta), key="beta_rd", config={"displaylogo": False})
with right:
    st.dataframe(B.figures_table(panels), hide_index=True, width="stretch")
    for sentence in B.trends(panels):
        st.markdown("- " + sentence)
st.caption("Test split; recon and KL per image in nats (from training); active: a code dimension whose mean varies "
           "across test images (variance > 0.01, Burda et al. 2016); prior samples: 2,000 codes from N(0, I), "
           "recognised when a judge names one class with at least 90% confidence.")
