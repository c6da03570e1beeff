"""Latent Explorer: the pages, and the home page (what the app shows, which model pairs there are).

The pages live in pages/; `st.navigation` lists them here so the sidebar reads "Home", not
the entry file's name, and each keeps its address (/Train, /Latent_map, ...)."""
from __future__ import annotations

import streamlit as st

from ui import state

st.set_page_config(page_title="Latent Explorer", page_icon="🧭", layout="wide")


def home() -> None:
    st.title("Latent Explorer")
    st.markdown(
        """
    An **autoencoder (AE)** squeezes each image into a short code and rebuilds the image from it.
    A **variational autoencoder (VAE)** does the same, but encodes each image as a small *cloud*
    of codes and is pushed to keep all clouds close to one standard bell curve, the *prior*.

    That one change makes the VAE's code space **continuous** (nearby codes decode to similar
    images) and **complete** (any code drawn from the prior decodes to something meaningful).
    The AE's code space has neither: between and around its codes there are *holes* that decode to
    garbage. Every page here shows the AE and the VAE side by side, on the same images, so you can
    see the difference, and measures it.
    """
    )

    pair = state.pair_picker()
    pairs, _ = state.list_pairs()

    st.subheader("Available model pairs")
    if not pairs:
        st.info("No models yet. Open **Train** in the sidebar to train an AE/VAE pair.")
    else:
        def fig(value, digits=2):
            return None if value is None else round(float(value), digits)

        rows = []
        for p in pairs:
            vae_m, ae_m = p.metrics.get("vae", {}), p.metrics.get("ae", {})
            rows.append({
                "pair": p.name, "data set": p.dataset, "preset": p.preset, "latent": p.latent_dim,
                "epochs": p.epochs, "AE recon (nats)": fig(ae_m.get("recon")), "VAE -ELBO (nats)": fig(vae_m.get("neg_elbo")),
                "VAE KL (nats)": fig(vae_m.get("kl")), "bits/dim": fig(vae_m.get("bits_per_dim"), 3),
                "source": "shipped" if p.folder == str(state.settings().shipped_dir) else "trained here",
            })
        st.dataframe(rows, hide_index=True, width="stretch")
        st.caption("Test-set figures per image. -ELBO bounds the negative log-likelihood from above: lower is "
                   "better. The AE has no KL term and no ELBO, only its reconstruction error.")

    if pair is not None:
        st.success(f"Every page now shows **{pair.label}**. Change it from the sidebar at any time.")

    st.subheader("Where to go")
    st.markdown(
        """
    - **Train**: train your own AE/VAE pair in the background and watch the latent map form.
    - **Latent map**: every test image as a point, AE beside VAE.
    - **Grid decoder**: click anywhere on the map and see what that code decodes to.
    - **Reconstructions**: reconstructions, interpolations and samples from the prior, with scores.
    - **Draw**: draw a digit and see where each model puts it.
    """
    )


PAGES = [
    st.Page(home, title="Home", default=True),
    st.Page("pages/1_Train.py", title="Train", url_path="Train"),
    st.Page("pages/2_Latent_map.py", title="Latent map", url_path="Latent_map"),
    st.Page("pages/3_Grid_decoder.py", title="Grid decoder", url_path="Grid_decoder"),
    st.Page("pages/4_Reconstructions.py", title="Reconstructions", url_path="Reconstructions"),
    st.Page("pages/5_Draw.py", title="Draw", url_path="Draw"),
]
st.navigation(PAGES).run()
