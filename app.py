"""Latent Explorer: the pages, and the home page (what the app shows, which model pairs there are).

The pages live in app_pages/, listed here by `st.navigation` so the sidebar reads "Home", not the
entry file's name, and each keeps its address (/Train, /Latent_map, ...). Not in pages/: Streamlit
lists a folder of that name on its own, before app.py has run, for a first visitor who opens a
page's address directly, and the sidebar then read "app"."""
from __future__ import annotations

import streamlit as st

from ui import lesson, maps, state
from ui.style import MODEL_LABELS
from vae.grids import image_grid
from vae.latent import sample_prior
from vae.lesson import claims

st.set_page_config(page_title="Latent Explorer", page_icon="🧭", layout="wide")
if state.settings().hosted:  # visitors read messages, never tracebacks (the server log keeps them)
    st.set_option("client.showErrorDetails", "none")


def home() -> None:
    st.title("Latent Explorer")
    st.markdown(
        """
    An **autoencoder (AE)** squeezes each image into a short code and rebuilds the image from it.
    A **variational autoencoder (VAE)** does the same, but encodes each image as a small *cloud*
    of codes and is pushed to keep all clouds close to one standard bell curve, the *prior* N(0, I).

    That one change is meant to make the VAE's code space **continuous** (nearby codes decode to
    similar images) and **complete** (any code drawn from the prior decodes to something
    meaningful). Nothing asks the same of the AE. Every page shows the AE and the VAE side by side,
    on the same images, and two independent judges (classifiers trained on real images) measure
    what each picture claims.
    """
    )

    pair = state.pair_picker()
    if pair is not None:
        at_a_glance(pair)

    pairs, _ = state.list_pairs()
    st.subheader("Available model pairs")
    if not pairs:
        st.info("No models yet. Open **Train** in the sidebar to train an AE/VAE pair.")
    else:
        st.dataframe(pair_rows(pairs), hide_index=True, width="stretch")
        st.caption("Test-set figures per image. -ELBO bounds the negative log-likelihood from above: lower is "
                   "better. The AE has no KL term and no ELBO, only its reconstruction error.")

    st.subheader("Where to go")
    st.markdown(
        """
    - **Lesson**: the argument step by step for a class, predict then reveal, made to be projected.
    - **Grid decoder**: decode any location of the map; the judges say what each pair really shows.
    - **Latent map**: every test image as a point, AE beside VAE.
    - **Reconstructions**: reconstructions, interpolations and samples from the prior, with scores; and
      what a model trained on only 1,000 images does with images it has never seen.
    - **Draw**: draw a digit and see where each model puts it.
    - **β dial**: one family of models from the AE (β = 0) to VAEs past posterior collapse, on one slider.
    - **Train**: train your own AE/VAE pair in the background and watch the latent map form.
    """
    )


def at_a_glance(pair) -> None:
    """The same 16 codes from the prior, decoded by each model, and what the judges make of 2,000."""
    st.subheader(f"At a glance: {pair.label}")
    models = state.pair_models_or_stop(pair)
    if set(models) != {"ae", "vae"}:
        st.caption("This pair has one model only: pick a pair with an AE and a VAE to compare them.")
        return
    figures = lesson.prior_lesson(pair)
    said = claims(figures) if figures else {}
    words = lesson.noun(pair, plural=True)
    cols = st.columns([1, 1, 1.3], gap="large")
    for col, kind in zip(cols, ("ae", "vae")):
        _, images = sample_prior(models[kind].model, 16, seed=0)
        col.image(maps.enlarge(image_grid(images, nrow=4, separator=2), 300), width=300,
                  caption=f"{MODEL_LABELS[kind]}: 16 codes drawn from the prior N(0, I), decoded")
    with cols[2]:
        if not figures:
            st.markdown("The same 16 random codes, decoded by each model. (No judge ships for this data set, so "
                        "nothing is measured here.)")
        elif said.get("prior_holes"):
            st.markdown(f"**The VAE's prior samples are {words}; the AE's mostly are not.** Of 2,000 codes drawn "
                        f"from N(0, I), the judges recognise: {lesson.figures_line(figures, 'prior_recognised')}. "
                        "The AE was never asked to use the prior's space, so most of it decodes to smudges: "
                        "*holes*. The **Grid decoder** shows where they are.")
        elif said.get("even_prior"):
            sentence = lesson.prior_classes_sentence(pair, figures, said)
            st.markdown(f"**{sentence[0].upper() + sentence[1:]}** (ln {lesson.num_classes(pair)} = "
                        f"{lesson.even_nats(lesson.num_classes(pair)):.2f} would be perfectly even)."
                        + (" In 2-D an AE has few holes; what differs is who owns its map. The **Grid decoder** "
                           "colours each cell by its class." if pair.latent_dim == 2 else ""))
        else:
            st.markdown("On this pair the judges see no clear difference between the two models' prior samples "
                        f"({lesson.figures_line(figures, 'prior_recognised')} recognised). Try the 16-D MNIST pair.")


def pair_rows(pairs) -> list[dict]:
    def fig(value, digits=2):  # "–" where a pair has no figure (an epoch-0 or one-model pair)
        return "–" if value is None else f"{float(value):.{digits}f}"

    rows = []
    for p in pairs:
        vae_m, ae_m = p.metrics.get("vae", {}), p.metrics.get("ae", {})
        rows.append({
            "pair": p.name, "data set": p.dataset, "preset": p.preset, "latent": p.latent_dim,
            "epochs": p.epochs, "AE recon (nats)": fig(ae_m.get("recon")), "VAE -ELBO (nats)": fig(vae_m.get("neg_elbo")),
            "VAE KL (nats)": fig(vae_m.get("kl")), "bits/dim": fig(vae_m.get("bits_per_dim"), 3),
            "source": "shipped" if p.folder == str(state.settings().shipped_dir) else "trained here",
        })
    return rows


PAGES = [
    st.Page(home, title="Home", default=True),
    st.Page("app_pages/0_Lesson.py", title="Lesson", url_path="Lesson"),
    st.Page("app_pages/1_Train.py", title="Train", url_path="Train"),
    st.Page("app_pages/2_Latent_map.py", title="Latent map", url_path="Latent_map"),
    st.Page("app_pages/3_Grid_decoder.py", title="Grid decoder", url_path="Grid_decoder"),
    st.Page("app_pages/4_Reconstructions.py", title="Reconstructions", url_path="Reconstructions"),
    st.Page("app_pages/5_Draw.py", title="Draw", url_path="Draw"),
    st.Page("app_pages/6_Beta_dial.py", title="β dial", url_path="Beta_dial"),
]
st.navigation(PAGES).run()
