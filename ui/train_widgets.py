"""Widgets and figures of the Train page: the data-set chooser, the hyper-parameter form and the
live view of a training job. The job itself runs in `vae.jobs`; everything here only reads
`JobView`s (the worker threads never call streamlit)."""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from vae.data import EMBEDDED
from vae.device import has_fast_bfloat16, pick_device
from vae.errors import ConfigError, DatasetError
from vae.jobs import (ACTIVE_STATES, HostedLimits, JobRegistry, JobSpec, JobView, LatentSnapshot, compatible_presets,
                      torchrun_devices)
from vae.presets import PRESETS
from vae.uploads import UploadLimits, prune_uploads, store_upload, upload_of

from .style import MODEL_LABELS, MODEL_COLORS
from . import state
from .settings import Settings

CLASS_COLORS = qualitative.T10
DATASETS = {
    "mnist": "MNIST (downloads 11 MB once)",
    "fashion-mnist": "Fashion-MNIST (downloads 30 MB once)",
    "cifar10": "CIFAR-10 (downloads 170 MB once)",
    EMBEDDED: "MNIST digits shipped with the app (5,000, no download)",
    "upload": "Upload (.npz or .zip)",
    "path": "A .npz file or image folder on this server",
}
KIND_CHOICES = {("ae", "vae"): "AE and VAE", ("vae",): "VAE only", ("ae",): "AE only", ("sweep",): "β sweep"}
SWEEP_BETAS = (0.0, 0.01, 0.1, 0.3, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0)  # what the sweep's picker offers
SWEEP_DEFAULT = [0.0, 0.1, 1.0, 4.0]
MAX_IMAGES = 60_000  # the largest built-in training split (MNIST)

# st.session_state keys of this page
WATCH = "train_watch"  # the job shown in the live view
OWN_JOBS = "train_own_jobs"  # ids of jobs this visitor started (their pair gets selected when done)
ANNOUNCED = "train_announced"  # own jobs whose finished pair was selected already
SEEN_FINISHED = "train_seen_finished"  # finished jobs the page has re-rendered for
UPLOADED = "train_uploaded"  # (file_id, stored path or None, summary, error) of the last upload checked
FORGED = "train_forged"  # labels of select boxes that were sent a value they never offered, this run


# --- what a modified client sends ----------------------------------------------------------------
def _offered_only(key: str, options: list, label: str) -> None:
    """on_change of a select box. A modified client can send any string; Streamlit (1.67) hands
    it to callbacks as sent and only then resets the widget to its default for the page run, so
    this is the one place the page can see it, and refuse the request rather than act on defaults
    the visitor never chose. (A number outside its input's bounds is reset before any callback
    sees it: the page only ever gets the default; the job registry checks every cap again.)"""
    if st.session_state.get(key) not in options:
        st.session_state.setdefault(FORGED, []).append(label)


def refused_request() -> str | None:
    """The refusal for this run's request if it held a value the page never offered, else None;
    called once per run, before the page acts on a button."""
    labels = st.session_state.pop(FORGED, [])
    if not labels:
        return None
    return (f"This request sent a value the page does not offer ({', '.join(dict.fromkeys(labels))}), so nothing "
            "was started. Choose from the lists on the page.")


# --- choosing what to train ----------------------------------------------------------------------
def dataset_input(settings: Settings) -> str | None:
    """The data source as vae.data.load_dataset takes it, or None until one is given."""
    options = [k for k in DATASETS if k != "path" or settings.allow_local_paths]
    # a value outside `options` from a modified client is refused (`_offered_only`), and the job
    # registry checks the spec again on a hosted server (vae.jobs.HostedLimits)
    choice = st.selectbox("Data set", options, format_func=DATASETS.get, key="train_dataset",
                          on_change=_offered_only, args=("train_dataset", options, "Data set"))
    if choice in ("mnist", "fashion-mnist", "cifar10"):
        st.caption("Without a network the download fails after a few seconds; MNIST and Fashion-MNIST jobs then "
                   "train on the shipped MNIST digits and say so, a CIFAR-10 job stops with an error.")
    if choice == "upload":
        return _uploaded_data(settings)
    if choice == "path":
        path = st.text_input("Path to a .npz (x_train, y_train, x_test, y_test) or a folder with "
                             "train/<class>/ and test/<class>/", key="train_path").strip()
        if not path:
            return None
        if not Path(path).expanduser().exists():
            st.error(f"{path}: no such file or folder on this server. Check the path, or train on the MNIST "
                     "digits shipped with the app (no download).")
            return None
        return path
    return choice


def _uploaded_data(settings: Settings) -> str | None:
    """A visitor's own data set: checked by vae.uploads (caps, zip bomb, zip slip, shapes), stored
    under the state folder by content hash; its path is the job's data source."""
    if settings.hosted:
        st.caption(f"Your upload, and the pairs trained on it, are shown only in this browser session (other visitors "
                   f"do not see them; reloading the page starts a new session). Uploads unused for "
                   f"{settings.uploads_max_age_h:g} h are deleted from the server.")
    upload = st.file_uploader("A .npz with uint8 x_train, x_test (N×H×W or N×H×W×C) and integer y_train, y_test, "
                              "or a .zip of a folder with train/<class>/<image> and test/<class>/<image>",
                              type=["npz", "zip"], key="train_upload")
    if upload is None:
        return None
    checked = st.session_state.get(UPLOADED)
    if checked is None or checked[0] != upload.file_id:  # check each file once, not on every rerun
        try:
            with st.spinner(f"Checking {upload.name}…"):
                stored = store_upload(upload.name, upload.getvalue(), settings.uploads_dir,
                                      UploadLimits.from_mb(settings.max_upload_mb))
                state.my_uploads().add(upload_of(stored.path, settings.uploads_dir))
                in_use = {upload_of(j.spec.dataset, settings.uploads_dir) for j in state.registry().list() if j.active}
                prune_uploads(settings.uploads_dir, settings.uploads_max_age_h * 3600,
                              settings.uploads_max_total_mb * 2**20, in_use | {upload_of(stored.path, settings.uploads_dir)})
            checked = (upload.file_id, str(stored.path), stored.describe(), "")
        except DatasetError as err:
            checked = (upload.file_id, None, "", str(err))
        st.session_state[UPLOADED] = checked
    _, path, summary, error = checked
    if error:
        st.error(f"{error}\n\nOr train on the MNIST digits shipped with the app (no upload, no download).")
        return None
    st.caption(f"Uploaded **{upload.name}**: {summary}.")
    return path


def preset_input(image_shape) -> str:
    names = compatible_presets(image_shape)
    label = "Preset (architecture and likelihood)"
    preset = st.selectbox(label, names, key="train_preset", on_change=_offered_only, args=("train_preset", names, label))
    st.caption(PRESETS[preset].description)
    return preset


def hyperparameter_form(preset_name: str, source: str | None, settings: Settings) -> dict | None:
    """The form; returns JobSpec keyword arguments when 'Start training' is pressed.

    Widget keys end with the preset's name, so choosing another preset brings its defaults."""
    p = PRESETS[preset_name]
    k = f"_{preset_name}"
    max_images = settings.max_train_images or MAX_IMAGES
    with st.form("train_form", border=True):
        c1, c2, c3 = st.columns(3)
        latent_dim = c1.number_input("Latent size", 1, settings.max_latent_dim, min(p.base.latent_dim, settings.max_latent_dim), key="train_latent" + k,
                                     help="Dimensions of the code z. With 2 the latent map is the code itself.")
        beta = c2.number_input("β (KL weight, VAE only)", 0.0, 50.0, float(p.base.beta), 0.1, format="%.2f",
                               key="train_beta" + k, help="1 is the plain VAE; larger pulls codes harder to the prior.")
        kinds = c3.radio("Models", list(KIND_CHOICES), format_func=KIND_CHOICES.get, horizontal=True,
                         key="train_kinds" + k, help="All train on the same batches in the same order.")
        cap = HostedLimits.max_sweep_values if settings.hosted else None  # the registry checks it too
        betas = st.multiselect("β values of a sweep (with *β sweep*: one model per value, 0 is the AE)", SWEEP_BETAS,
                               SWEEP_DEFAULT, format_func=lambda b: f"{b:g}", max_selections=cap, key="train_betas" + k,
                               help="A family from the AE to past posterior collapse; when it is done, the β dial "
                                    "page shows it.")
        c1, c2, c3 = st.columns(3)
        epochs = c1.number_input("Epochs", 1, settings.max_epochs, min(p.epochs, settings.max_epochs),
                                 key="train_epochs" + k)
        batch_size = c2.number_input("Batch size", 8, settings.max_batch_size, min(p.batch_size, settings.max_batch_size), key="train_batch" + k)
        lr = c3.number_input("Learning rate", 1e-5, 0.1, p.lr, 1e-4, format="%.5f", key="train_lr" + k)
        c1, c2, c3 = st.columns(3)
        limit = c1.number_input("Training images (at most)", 64, max_images, max_images, 1000,
                                key="train_limit" + k, help="A fixed random sample: fewer images, shorter epochs.")
        seed = c2.number_input("Seed", 0, 2**31 - 1, 0, key="train_seed" + k,
                               help="Same settings and seed: the same job. Change the seed to train a fresh copy.")
        precision = "float32"
        if has_fast_bfloat16(pick_device()):
            mixed = c3.checkbox("Mixed precision", value=True, key="train_bf16" + k,
                                help="Matrix products in bfloat16, which this machine runs natively: up to "
                                     "about 1.4x faster epochs for the larger presets. Weights and every "
                                     "reported figure stay float32; the trained model differs slightly from "
                                     "a float32 run.")
            precision = "bfloat16" if mixed else "float32"
        processes = _processes_input(settings, k)
        if settings.hosted:
            st.caption(f"On this shared server a job has at most {settings.max_epochs} epochs and "
                       f"{max_images:,} training images, and jobs run {settings.max_running_jobs} at a time.")
        submitted = st.form_submit_button("Start training", type="primary", disabled=source is None)
    if not submitted or source is None:
        return None
    sweep = kinds == ("sweep",)
    return dict(dataset=source, preset=preset_name, kinds=("ae", "vae") if sweep else kinds, latent_dim=int(latent_dim),
                beta=float(beta), epochs=int(epochs), batch_size=int(batch_size), lr=float(lr), seed=int(seed),
                limit_train=int(limit), precision=precision, betas=tuple(betas) if sweep else (), processes=processes)


def _processes_input(settings: Settings, k: str) -> int:
    """torchrun with one process per GPU, offered only where there are several GPUs, never on a
    shared server (the registry refuses it there too)."""
    gpus = torchrun_devices()
    if settings.hosted or gpus < 2:
        return 1
    return int(st.number_input("GPU processes (torchrun)", 1, gpus, 1, key="train_processes" + k,
                               help="Data-parallel training, one process per GPU; the batch size is that of all "
                                    "of them together, so it must divide by this number."))


def start_job(registry: JobRegistry, spec: JobSpec) -> None:
    """Submit; show which job the page now follows (an existing one for a repeated spec)."""
    job, created = registry.submit(spec, owner=state.session_owner())
    st.session_state[WATCH] = job.id
    own = st.session_state.setdefault(OWN_JOBS, [])
    if job.id not in own:
        own.append(job.id)
    if not created:
        st.info(f"These settings are already {job.state} on this server, so the page shows that job instead of "
                "training them again. Change the seed to train a fresh copy.")


def select_finished_pair(registry: JobRegistry) -> None:
    """Before the sidebar picker is drawn: the pair of a job this visitor started and that has
    just finished becomes the chosen pair, so every page shows it."""
    announced = st.session_state.setdefault(ANNOUNCED, [])
    for job_id in st.session_state.get(OWN_JOBS, []):
        job = registry.get(job_id)
        if job_id in announced or job is None:
            continue
        view = job.view()
        if view.state in ("done", "stopped") and view.checkpoints:
            announced.append(job_id)
            if view.spec.is_sweep:  # a family, not a pair: the β dial lists it
                st.toast(f"The sweep {view.name} is now on the β dial page")
                continue
            st.session_state[state.PAIR_KEY] = view.name
            st.toast(f"{view.name} is now in the model picker")


# --- watching jobs -------------------------------------------------------------------------------
def job_label(job_id: str, registry: JobRegistry) -> str:
    """Never changes during a job's life (a select box must keep its option labels)."""
    job = registry.get(job_id)
    if job is None:
        return job_id
    spec = job.spec
    when = time.strftime("%H:%M:%S", time.localtime(job.submitted_at))
    sweep = f", β sweep {', '.join(f'{b:g}' for b in spec.betas)}" if spec.is_sweep else ""
    return f"{spec.preset} on {dataset_name(spec)}, latent {spec.latent_dim}{sweep}, seed {spec.seed} (submitted {when})"


def member_label(member: str) -> str:
    """AE, VAE, or a sweep member's β (`beta-0.1` -> "β = 0.1"; β = 0 is the AE)."""
    if member in MODEL_LABELS:
        return MODEL_LABELS[member]
    beta = member.removeprefix("beta-")
    return "β = 0 (AE)" if float(beta) == 0 else f"β = {beta}"


def member_color(member: str, members: list) -> str:
    if member in MODEL_COLORS:
        return MODEL_COLORS[member]
    return qualitative.Plotly[members.index(member) % len(qualitative.Plotly)] if member in members else "#888"


def models_text(spec: JobSpec) -> str:
    if spec.is_sweep:
        return "β sweep " + ", ".join(f"{b:g}" for b in spec.betas)
    return " + ".join(MODEL_LABELS[k] for k in spec.kinds)


def dataset_name(spec: JobSpec) -> str:
    return spec.dataset if spec.dataset in DATASETS else Path(spec.dataset).name


def ago(t: float) -> str:
    s = max(0, time.time() - t)
    return f"{s:.0f} s ago" if s < 60 else f"{s / 60:.0f} min ago" if s < 3600 else f"{s / 3600:.1f} h ago"


def duration(s: float) -> str:
    if not math.isfinite(s):
        return "…"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def visible_jobs(registry: JobRegistry) -> list:
    """The jobs this visitor may see: all of them, except (hosted) those on another visitor's upload."""
    return [j for j in registry.list() if state.visible_data(j.spec.dataset)]


def watch_picker(registry: JobRegistry) -> str | None:
    jobs = visible_jobs(registry)
    if not jobs:
        st.info("No training jobs on this server yet. Start one above.")
        return None
    ids = [j.id for j in jobs]
    if st.session_state.get(WATCH) not in ids:
        followed = registry.get(st.session_state.get(WATCH, ""))  # a stopped run continued under a new id
        running = [j.id for j in jobs if j.state in ACTIVE_STATES]
        st.session_state[WATCH] = followed.id if followed is not None and followed.id in ids else (running or ids)[0]
    return st.selectbox("Show job", ids, key=WATCH, format_func=lambda i: job_label(i, registry))


def job_monitor(registry: JobRegistry, job_id: str) -> None:
    """The live view: re-runs itself every second while any job is queued or running."""
    live = any(j.state in ACTIVE_STATES for j in registry.list())
    st.fragment(run_every=1.0 if live else None)(_monitor)(registry, job_id, live)


def _monitor(registry: JobRegistry, job_id: str, live: bool) -> None:
    jobs_table(registry)
    job = registry.get(job_id)
    if job is None:
        st.warning("That job is gone (the server restarted). Its checkpoints, if any, are still in the model picker.")
        return
    view = job.view()
    job_status(registry, view)
    if view.curves and any(view.curves.values()):
        st.plotly_chart(loss_figure(view), key=f"train_losses_{view.id}", config={"displayModeBar": False})
        st.caption("Running means over the current epoch (so each epoch starts afresh), per image in nats; "
                   "dots: the test split after each epoch. The AE has no KL term: its total is its reconstruction.")
    if view.snapshots:
        latent_maps(view)
    _rerun_when_a_job_finishes(registry, live)


def _rerun_when_a_job_finishes(registry: JobRegistry, live: bool) -> None:
    """A job that ends while the page polls: one full rerun, so the model picker lists its pair
    and the page stops polling when nothing else runs."""
    seen = st.session_state.setdefault(SEEN_FINISHED, set())
    finished = {j.id for j in registry.list() if j.state not in ACTIVE_STATES}
    new = finished - seen
    seen |= finished
    if new and live:
        st.rerun()


def jobs_table(registry: JobRegistry) -> None:
    rows = []
    for job in visible_jobs(registry)[:20]:
        v = job.view()
        waiting = " (loading data)" if v.state == "running" else ""
        rows.append({"pair": v.name or f"{v.spec.preset} on {dataset_name(v.spec)}{waiting}", "state": v.state,
                     "progress": round(100 * v.fraction), "latent": v.spec.latent_dim, "epochs": v.spec.epochs,
                     "models": models_text(v.spec), "started": ago(v.submitted_at)})
    st.dataframe(rows, hide_index=True, width="stretch", key="train_jobs_table",
                 column_config={"pair": st.column_config.TextColumn("pair", width="large"),
                                "progress": st.column_config.ProgressColumn("progress", format="%d%%",
                                                                            min_value=0, max_value=100)})


def job_status(registry: JobRegistry, v: JobView) -> None:
    models = models_text(v.spec) if v.spec.is_sweep else " and ".join(MODEL_LABELS[k] for k in v.spec.kinds)
    beta = "" if v.spec.is_sweep else f" · β {v.spec.beta:g}"
    st.markdown(f"#### {v.name or v.spec.preset}\n{models} · {dataset_name(v.spec)} · latent {v.spec.latent_dim}"
                f"{beta} · {v.spec.epochs} epochs · batch {v.spec.batch_size} · lr {v.spec.lr:g}"
                + (" · bfloat16 matmuls" if v.spec.precision == "bfloat16" else "")
                + (f" · {v.spec.processes} processes (torchrun)" if v.spec.processes > 1 else ""))
    for note in v.notes:
        st.warning(state.public(note))
    if v.active:
        if v.state == "queued" and not v.local:
            st.info("Waiting for a free training slot in another app process on this server's state folder.")
        elif v.state == "queued":
            st.info(f"Waiting for a free training slot: number {registry.queue_position(v.id) or '?'} in the queue "
                    f"(this server trains {registry.max_running} job(s) at a time).")
        elif v.progress is None:
            st.info("Loading the data set…" if not v.name else "Building the models…")
        else:
            st.progress(v.fraction, text=progress_text(v))
            if v.spec.is_sweep:
                members_table(v)
        if not registry.may_stop(v.id, state.session_owner()):
            st.caption("Started by another visitor: only they can stop it. You can watch it, and its pair appears "
                       "in the model picker when it is done.")
        elif st.button("Stop", key=f"train_stop_{v.id}", help="Ends within a second and keeps the checkpoint."):
            try:
                registry.stop(v.id, owner=state.session_owner())
            except ConfigError as err:
                st.error(str(err))
                return
            registry.get(v.id).join(2.0)
            st.rerun()
    elif v.state == "interrupted":
        why = "the server stopped while it trained" if not v.error else state.public(v.error)
        st.warning(f"Interrupted after {v.epochs_done} of {v.spec.epochs} epochs: {why}. "
                   + ("The checkpoint of the last finished epoch is saved; Resume continues from it."
                      if v.checkpoints else "No epoch had finished; Resume starts it again."))
        _resume_button(registry, v)
    elif v.state == "done" and v.spec.is_sweep:
        members_table(v)
        st.success(f"Done in {duration(v.finished_at - (v.started_at or v.finished_at))}: the sweep **{v.name}** is now "
                   "on the **β dial** page.")
    elif v.state == "done":
        st.success(f"Done in {duration(v.finished_at - (v.started_at or v.finished_at))}: **{v.name}** is now in the "
                   "model picker (sidebar), and every page shows it.")
    elif v.state == "stopped":
        if v.checkpoints:
            st.warning(f"Stopped after {v.epochs_done} of {v.spec.epochs} epochs. The partly trained pair **{v.name}** "
                       "is saved and in the model picker. Starting the same settings again continues from it.")
            _resume_button(registry, v)
        else:
            st.info("Stopped before training began: nothing was saved.")
    elif v.state == "failed":
        st.error(state.public(f"Training failed: {v.error}"))
        _offer_other_data(registry, v)


def _resume_button(registry: JobRegistry, v: JobView) -> None:
    if st.button("Resume", key=f"train_resume_{v.id}", type="primary",
                 help="Trains the remaining epochs from the saved checkpoint: no finished epoch is lost."):
        try:
            job = registry.resume(v.id, owner=state.session_owner())
        except ConfigError as err:
            st.error(state.public(f"Cannot resume: {err}"))
            return
        st.session_state.setdefault(OWN_JOBS, []).append(job.id)  # the picker follows the old id to it
        st.rerun()


def _offer_other_data(registry: JobRegistry, v: JobView) -> None:
    if not (v.error.startswith("DatasetError") or v.notes):
        return
    st.markdown("The data set could not be used. You can train on the **MNIST digits shipped with the app** "
                "(no download), or choose *A .npz file or image folder on this server* (or an upload) above.")
    if v.spec.dataset != EMBEDDED and v.spec.preset in compatible_presets((1, 28, 28)):
        if st.button("Train these settings on the shipped MNIST digits", key=f"train_fallback_{v.id}"):
            start_job(registry, dataclasses.replace(v.spec, dataset=EMBEDDED))
            st.rerun()


def members_table(v: JobView) -> None:
    """A sweep's members side by side: they train in lockstep, so one step count; each its own losses."""
    losses = v.progress.losses if v.progress else {}
    tests = v.snapshots[-1].test if v.snapshots else {}
    rows = [{"model": member_label(m), "recon (running)": losses.get(m, {}).get("recon"),
             "KL (running)": losses.get(m, {}).get("kl"), "test -ELBO": tests.get(m, {}).get("neg_elbo"),
             "saved": "yes" if m in v.checkpoints else ""} for m in v.spec.members()]
    st.dataframe(rows, hide_index=True, key=f"train_members_{v.id}",
                 column_config={c: st.column_config.NumberColumn(c, format="%.2f")
                                for c in ("recon (running)", "KL (running)", "test -ELBO")})


def progress_text(v: JobView) -> str:
    p = v.progress
    if p.phase == "eval":
        return f"Epoch {p.epoch}/{p.epochs}: scoring the test split…"
    step_in_epoch = p.step - (min(p.epoch, p.epochs) - 1) * p.steps_per_epoch if p.phase == "train" else p.steps_per_epoch
    return (f"Epoch {min(p.epoch, p.epochs)}/{p.epochs} · step {step_in_epoch:,}/{p.steps_per_epoch:,} · "
            f"{p.images_per_s:,.0f} images/s · elapsed {duration(p.elapsed_s)} · ETA {duration(p.eta_s)}")


# --- figures -------------------------------------------------------------------------------------
def loss_figure(v: JobView) -> go.Figure:
    terms = [("recon", "recon", "Reconstruction"), ("kl", "kl", "KL to the prior"), ("total", "loss", "Total loss")]
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t[2] for t in terms], horizontal_spacing=0.06)
    members = list(v.curves)
    for kind, curve in v.curves.items():
        if not curve:
            continue
        label, color = member_label(kind), member_color(kind, members)
        x = [p.epoch for p in curve]
        tests = [s for s in v.snapshots if s.test.get(kind)]
        for col, (field, test_key, _) in enumerate(terms, start=1):
            fig.add_trace(go.Scatter(x=x, y=[getattr(p, field) for p in curve], mode="lines",
                                     name=label, legendgroup=kind, showlegend=col == 1,
                                     line=dict(color=color, width=2)), row=1, col=col)
            if tests:
                fig.add_trace(go.Scatter(x=[s.epoch for s in tests], y=[s.test[kind][test_key] for s in tests],
                                         mode="markers", name=f"{label} test", legendgroup=kind + "-test",
                                         showlegend=col == 1, marker=dict(color=color, size=7,
                                                                          line=dict(color="white", width=1))),
                              row=1, col=col)
    fig.update_xaxes(title_text="epoch", rangemode="tozero")
    fig.update_yaxes(title_text="nats per image", row=1, col=1)
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25),
                      uirevision=v.id)
    return fig


def latent_maps(v: JobView) -> None:
    st.markdown("##### The latent map as it forms")
    epochs = [s.epoch for s in v.snapshots]
    chosen = epochs[-1]
    if len(epochs) > 1:
        # A new slider (key) per newest epoch, so it follows training without the page writing
        # to a widget's state (which races the browser's copy); a visitor who scrubbed back
        # keeps their epoch when the next map arrives.
        key, memo = f"train_snapshot_{v.id}_{epochs[-1]}", f"train_snapshot_{v.id}_last"
        last_key, last_max = st.session_state.get(memo, (None, None))
        if last_key not in (None, key) and st.session_state.get(last_key, last_max) != last_max:
            chosen = st.session_state[last_key]
        st.session_state[memo] = (key, epochs[-1])
        chosen = st.slider("After epoch (0: the untrained models)", epochs[0], epochs[-1], chosen, key=key)
    snap = [s for s in v.snapshots if s.epoch <= chosen][-1]  # an epoch without a map shows the one before
    st.plotly_chart(latent_figure(snap, v), key=f"train_map_{v.id}", config={"displayModeBar": False})
    n = len(snap.labels)
    how = ("the axes are the two latent coordinates z₁, z₂" if snap.method == "identity" else
           "the axes are the two main directions (PCA) of that epoch's codes, turned to match the previous epoch "
           "(PCA's axes have no fixed sign) but not rescaled, so a growing map shows it")
    st.caption(f"The same {n:,} test images after each epoch, each at its code (the posterior mean); {how}. "
               "Each model has its own scale; the scale is fixed across epochs.")


def latent_figure(snap: LatentSnapshot, v: JobView) -> go.Figure:
    kinds = list(snap.points)
    fig = make_subplots(rows=1, cols=len(kinds), horizontal_spacing=0.08,
                        subplot_titles=[f"{member_label(k)} after epoch {snap.epoch}" for k in kinds])
    classes = list(v.classes) or [str(c) for c in sorted(set(snap.labels.tolist()))]
    for col, kind in enumerate(kinds, start=1):
        pts = snap.points[kind]
        for c, name in enumerate(classes):
            mask = snap.labels == c
            if not mask.any():
                continue
            fig.add_trace(go.Scatter(x=pts[mask, 0], y=pts[mask, 1], mode="markers", name=name, legendgroup=name,
                                     showlegend=col == 1, hovertemplate=f"{name}<extra></extra>",
                                     marker=dict(size=5, color=CLASS_COLORS[c % len(CLASS_COLORS)], opacity=0.8)),
                          row=1, col=col)
        lo, hi = _extent([s.points[kind] for s in v.snapshots if kind in s.points])
        axis = "x" if col == 1 else f"x{col}"
        fig.update_xaxes(range=[lo[0], hi[0]], row=1, col=col, zeroline=True)
        fig.update_yaxes(range=[lo[1], hi[1]], row=1, col=col, zeroline=True, scaleanchor=axis, scaleratio=1)
    fig.update_layout(height=430, margin=dict(l=10, r=10, t=40, b=10), legend=dict(title="class", itemsizing="constant"),
                      uirevision=f"{v.id}-{snap.epoch}")
    return fig


def _extent(maps: list) -> tuple[list[float], list[float]]:
    """Axis limits holding every epoch's points (so scrubbing does not rescale), 5% margin."""
    allpts = np.concatenate(maps)
    allpts = allpts[np.isfinite(allpts).all(axis=1)]
    if len(allpts) == 0:
        return [-1.0, -1.0], [1.0, 1.0]
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    pad = np.maximum((hi - lo) * 0.05, 1e-3)
    return (lo - pad).tolist(), (hi + pad).tolist()
