"""The one place where shared state lives: models, data, the job registry, settings.

`st.cache_resource` objects are shared by every browser session of this server (one copy of
each model, however many visitors); per-visitor choices live in `st.session_state`.
"""
from __future__ import annotations

import re
import uuid
from pathlib import Path

import streamlit as st

from vae import catalog
from vae.checkpoint import load_checkpoint
from vae.errors import LatentExplorerError

from .settings import Settings, load_settings

PAIR_KEY = "pair_name"
OWNER_KEY = "_session_owner"  # this visitor's token: the jobs they started are theirs to stop
UPLOADS_KEY = "_session_uploads"  # digests of the data sets this visitor uploaded


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    return load_settings()


def model_folders() -> list[Path]:
    s = settings()
    return [s.shipped_dir, s.trained_dir]


@st.cache_data(show_spinner=False, max_entries=32)
def _pairs(signature: tuple) -> tuple[list, list]:
    return catalog.find_pairs(model_folders())


def list_pairs() -> tuple[list[catalog.PairInfo], list[str]]:
    """Shipped and trained pairs; re-read only when a checkpoint file changes. On a hosted server
    a pair trained on an upload is listed only for the visitor who uploaded that data set."""
    pairs, problems = _pairs(catalog.folders_signature(model_folders()))
    return [p for p in pairs if visible_data(p.source)], problems


def my_uploads() -> set:
    return st.session_state.setdefault(UPLOADS_KEY, set())


def visible_data(source: str) -> bool:
    """May this visitor see what was made from this data source? Locally: everything. Hosted:
    built-in data sets, and uploads only to the visitor who uploaded them."""
    from vae.uploads import upload_of

    if not settings().hosted:
        return True
    digest = upload_of(source, settings().uploads_dir) if source else None
    return digest is None or digest in my_uploads()


@st.cache_resource(show_spinner="Loading model…", max_entries=32)
def load_model(path: str, mtime_ns: int):
    """One shared, eval-mode copy per checkpoint file version (mtime in the key)."""
    return load_checkpoint(path)


def load_pair_models(pair: catalog.PairInfo) -> dict:
    """kind -> Checkpoint for the members of a pair."""
    return {kind: load_model(p, Path(p).stat().st_mtime_ns) for kind, p in pair.paths.items()}


def pair_models_or_stop(pair: catalog.PairInfo) -> dict:
    """The pair's models, or a clear message and the end of the page (a header that reads but
    weights that do not load, a file deleted since the listing, ...)."""
    try:
        return load_pair_models(pair)
    except (LatentExplorerError, OSError) as err:
        show_error(err, f"Cannot load the pair {pair.name}")
        st.stop()


@st.cache_resource(show_spinner="Loading data…", max_entries=8)
def _data(name: str, source: str, image_shape: tuple):
    return catalog.data_for({"name": name, "source": source}, image_shape)


def load_pair_data(pair: catalog.PairInfo):
    """The data set the pair was trained on (or the best local stand-in, with notes)."""
    meta = next(iter(load_pair_models(pair).values())).dataset
    return _data(meta.get("name", ""), meta.get("source", ""), tuple(pair.image_shape))


def _stop_jobs(registry) -> None:
    registry.shutdown()


# A cleared cache (the app menu's "Clear cache", st.cache_resource.clear()) releases the registry:
# its jobs stop, so no training thread outlives it and races the next registry's job over the
# same checkpoint files.
@st.cache_resource(show_spinner=False, on_release=_stop_jobs)
def registry():
    """The training-job registry shared by all sessions (one job per configuration)."""
    from vae.jobs import JobRegistry

    from vae.jobs import HostedLimits

    s = settings()
    limits = None
    if s.hosted:  # checked by the registry whatever a (modified) client sends
        limits = HostedLimits(max_epochs=s.max_epochs, max_train_images=s.max_train_images or 20_000,
                              max_batch_size=s.max_batch_size, max_latent_dim=s.max_latent_dim,
                              max_jobs_per_owner=s.max_jobs_per_visitor, data_roots=(str(s.uploads_dir),))
    return JobRegistry(out_dir=s.trained_dir, max_running=s.max_running_jobs, train_threads=s.train_threads,
                       limits=limits)


def session_owner() -> str:
    """A random token per browser session: who started a job (hosted: who may stop it)."""
    if OWNER_KEY not in st.session_state:
        st.session_state[OWNER_KEY] = uuid.uuid4().hex
    return st.session_state[OWNER_KEY]


def pair_picker() -> catalog.PairInfo | None:
    """Sidebar model picker shown on every page; the choice is kept per visitor."""
    pairs, problems = list_pairs()
    for p in problems:
        st.sidebar.warning(public(f"Skipped an unreadable checkpoint: {p}"))
    if not pairs:
        st.sidebar.info("No trained models yet: train a pair on the **Train** page.")
        return None
    by_name = {p.name: p for p in pairs}
    if st.session_state.get(PAIR_KEY) not in by_name:
        st.session_state[PAIR_KEY] = _default_pair(pairs).name
    _pair_from_link(by_name)
    # Streamlit drops a widget's state when the page that drew it is left, so the choice lives
    # in a plain session key; the widget's key follows it, so code (the Train page) can set it too.
    names, current = list(by_name), st.session_state[PAIR_KEY]
    widget_key = f"_pair_picker:{current}"
    st.sidebar.selectbox("Model pair (AE and VAE)", names, index=names.index(current), key=widget_key,
                         format_func=lambda n: by_name[n].label, on_change=_remember_pair, args=(widget_key,))
    pair = by_name[st.session_state[PAIR_KEY]]
    from .scores import pair_judges  # it imports this module

    for msg in pair_judges(pair)[1]:  # the pages run on without it: their scores say "no judge"
        st.sidebar.warning(public(f"Skipped an unreadable classifier (a judge of the scores): {msg}"))
    return pair


def _pair_from_link(by_name: dict) -> None:
    """`?pair=NAME` in the address chooses that pair (a teacher links to one); applied once per
    value, so the visitor can pick another afterwards. A name that does not exist says so."""
    wanted = st.query_params.get("pair")
    if not wanted:
        return
    if wanted in by_name:
        if st.session_state.get("_pair_link_applied") != wanted:
            st.session_state["_pair_link_applied"] = wanted
            st.session_state[PAIR_KEY] = wanted
    else:
        st.sidebar.warning(f"The link asks for a pair named “{wanted[:80]}”, and there is none on this server: "
                           f"showing {st.session_state[PAIR_KEY]}. Pick one below.")


def _remember_pair(widget_key: str) -> None:
    st.session_state[PAIR_KEY] = st.session_state[widget_key]


DEFAULT_PAIRS = ("mnist-mlp", "mnist-2d")  # the first one shipped is the pair a new visitor sees


def _default_pair(pairs: list[catalog.PairInfo]) -> catalog.PairInfo:
    # The 16-D MNIST pair first: it shows the AE/VAE difference at a glance (its prior samples are
    # smudges vs digits, its PCA grid has holes); in 2-D an AE's decoder draws digits almost
    # everywhere and the difference is subtler (README, "Which pair first").
    for name in DEFAULT_PAIRS:
        for p in pairs:
            if p.name == name and p.preset == name:
                return p
    return pairs[0]


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"]+/)*([^\s/'\"]*)")  # not inside a URL


def public(text: str) -> str:
    """A message as a visitor may read it: on a hosted server absolute paths shrink to their
    last part (no server layout, nothing to probe with)."""
    if not settings().hosted:
        return text
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "…", str(text))


def show_error(err: Exception, what: str) -> None:
    """A clear message for expected failures; anything else shows its type too (locally) or a
    plain sentence (hosted: no internals)."""
    if isinstance(err, LatentExplorerError):
        st.error(public(f"{what}: {err}"))
    elif settings().hosted:
        st.error(f"{what}: something went wrong on the server. Try other settings, or another pair.")
    else:
        st.error(f"{what}: unexpected {type(err).__name__}: {err}")
