"""Train: an AE and a VAE on the same batches, in the background, with live curves and maps."""
from __future__ import annotations

import streamlit as st

from ui import state
from ui import train_widgets as tw
from vae.errors import ConfigError
from vae.jobs import JobSpec, guess_image_shape

st.set_page_config(page_title="Train · Latent Explorer", page_icon="🧭", layout="wide")
settings, registry = state.settings(), state.registry()
tw.select_finished_pair(registry)  # before the picker: a pair this visitor just trained becomes the choice
state.pair_picker()

st.title("Train an AE/VAE pair")
st.markdown(
    """
Both models see **the same batches in the same order**; the only difference is the VAE's
noisy codes and its KL term. Training runs on the server in the background: you can leave this
page, open it in another tab, or close the browser, and come back to the same job. When it is
done, the pair appears in the model picker of every page. A **β sweep** trains one model per
value of the KL weight instead (0 is the AE), on the same batches; the β dial page shows it.
"""
)

st.subheader("1. Data and architecture")
refusal = tw.refused_request()  # values a modified client sent that the page never offered
source = tw.dataset_input(settings)
preset = tw.preset_input(guess_image_shape(source) if source else None)

st.subheader("2. Hyper-parameters")
chosen = tw.hyperparameter_form(preset, source, settings)
if refusal:
    st.error(refusal)
elif chosen is not None:
    try:
        tw.start_job(registry, JobSpec(**chosen))
    except ConfigError as err:
        st.error(state.public(f"Cannot start this job: {err}"))

st.subheader("3. Training jobs on this server")
job_id = tw.watch_picker(registry)
if job_id is not None:
    tw.job_monitor(registry, job_id)
