"""Reconstructions, interpolations and prior samples of the AE beside the VAE, with scores:
is each latent space continuous (a straight line morphs smoothly) and complete (random codes
decode to real-looking images)? Each section is a function of ui/reconstructions.py."""
from __future__ import annotations

import streamlit as st

from ui import capacity, state
from ui import reconstructions as recon

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

page = recon.load(pair)
panel = recon.scores_panel(page)
sections = [recon.reconstructions(page), recon.continuity(page), recon.completeness(page)]
recon.code_usage(page)
capacity.section(pair, page.checkpoints, page.data)  # 5. what the models remember of their training images
recon.downloads(sections)
recon.measure_if_asked(page, panel)
recon.show_measured(page, panel, sections)
