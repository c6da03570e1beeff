"""The 2-D maps of the Latent map, Grid decoder and Draw pages: cached maps (`vae.maps`), plotly
figures, and the clickable map image of the grid decoder.

One `LatentMap` holds a fixed sample of test images encoded by both models, each model's
projection to 2-D, and the AE's map aligned onto the VAE's (Procrustes on the same images), so
a region of digits sits at the same place on both maps. It is computed once per checkpoint
version, data set, sample size, method and seed: in memory (`st.cache_resource`, shared by all
visitors) and on disk (`ProjectionCache`), so a second visit or a restarted server is instant.

The grid decoder's map is a PNG drawn with PIL (`ui.map_render`, no Streamlit there) and shown
as a clickable image: plotly selections report only trace points, never empty space, and the
empty space (the AE's holes) is what a student must be able to click. A click then costs one
inverse projection and one decoder pass. Its *hole map* tints each grid cell by how unsure the
reference classifier is about the cell's decoded image. This module caches what is drawn there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from vae.data import ImageSplit
from vae.errors import ConfigError, LatentExplorerError
from vae.grids import image_grid
from vae.maps import (DEFAULT_SAMPLE, SLOW_METHODS, UMAP_INVERSE_GRID, GridSpec, LatentMap, build_latent_map, data_id,
                      decode_map_points, largest_gap, map_csv, map_key, projection_key, recognised_share,
                      sample_indices, zoomed_limits)
from vae.models import Autoencoder
from vae.projections import ProjectionCache, available_methods, file_sha256

from .images import Encoded
from .map_render import (CONFIDENT, MapCanvas, class_color, click_to_data, draw_click_marker,  # noqa: F401
                         enlarge, grid_png, hole_legend_image, hole_shade, render_map_image, tint_tiles)
from .style import MODEL_LABELS
from . import map_fits, state
from .scores import judge_confidence, load_judge

METHOD_NAMES = {"identity": "Latent axes (the 2-D code itself)", "pca": "PCA (linear, exact inverse)",
                "umap": "UMAP (non-linear, slow first time)", "tsne": "t-SNE (non-linear, slow first time)"}
SAMPLE_SIZES = (500, 1000, 2000, 5000)

# st.session_state keys shared by the map pages (plain keys: they survive page switches)
METHOD_CHOICE, SAMPLE_CHOICE, COORDS_CHOICE = "maps_method", "maps_sample", "maps_coords"


# --- identities for cache keys -------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=64)
def model_id(path: str, mtime_ns: int) -> str:
    """sha256 of a checkpoint file, computed once per file version (mtime in the key)."""
    return file_sha256(path)






# --- the map -------------------------------------------------------------------------------


















class MapTooLarge(ConfigError):
    """A UMAP / t-SNE map, not prebuilt, larger than a hosted server fits for one visitor."""


class MapPending(Exception):
    """A slow map is being fitted off the page run (`ui.map_fits`): show its progress, not the page."""

    def __init__(self, fit: map_fits.MapFit):
        super().__init__(fit.what)
        self.fit = fit


class MapFitFailed(LatentExplorerError):
    """A slow map's fit failed; it is not tried again until a visitor asks (`map_fits.queue().retry`)."""

    def __init__(self, fit: map_fits.MapFit):
        super().__init__(fit.error)
        self.fit = fit


@st.cache_resource(show_spinner=False, max_entries=16)
def _cached_map(key: str, _build: Callable[[], LatentMap]) -> LatentMap:
    return _build()


def latent_map(pair, method: str, n: int, seed: int = 0, aligned: bool = True) -> LatentMap:
    """The pair's LatentMap, shared by every visitor. A UMAP / t-SNE map not on disk yet is fitted
    in the server's map queue and MapPending raised meanwhile (one fit per map, whoever asks).

    Raises vae.errors.DatasetError when the pair's data cannot be found; MapTooLarge past the
    hosted cap; MapFitFailed when the map's fit failed (until `map_fits.queue().retry`)."""
    models = {kind: ckpt.model for kind, ckpt in state.load_pair_models(pair).items()}
    data = state.load_pair_data(pair)
    ids = {kind: model_id(p, Path(p).stat().st_mtime_ns) for kind, p in pair.paths.items()}
    dkey = data_id(data.name, data.test)
    n_used = min(n, len(data.test))
    cache = ProjectionCache(Path(state.settings().cache_dir) / "projections")

    def build() -> LatentMap:
        return build_latent_map(models, data.test, data.classes, method, n_used, seed, model_ids=ids,
                                data_key=dkey, cache=cache, aligned=aligned)

    key = map_key(ids, dkey, n_used, method, seed, aligned)

    def on_disk_now() -> bool:
        return all(cache.path_for(projection_key(i, dkey, n_used, method, seed)).is_file() for i in ids.values())

    if method in SLOW_METHODS and not on_disk_now():
        name = METHOD_NAMES[method].split(" (")[0]
        cap = state.settings().max_slow_map_points
        if cap is not None and n_used > cap:
            raise MapTooLarge(f"a new {name} map of {n_used:,} images would hold this server's one map-fitting slot "
                              f"for minutes: choose {cap:,} images or fewer (maps prebuilt for the shipped pairs are "
                              "served at any size)")
        fit_key = map_key(ids, dkey, n_used, method, seed)  # both frames come from the same two fits
        fit = map_fits.queue().submit(fit_key, f"the {name} map of {n_used:,} images", lambda f: map_fits.fit_into_cache(
            f, models, data.test, method, n_used, seed, ids, dkey, cache.directory))
        if fit.finished and not fit.error and not on_disk_now():
            fit.error = f"{fit.what}: the fit ended but its result is not in the cache"  # never refit in a page run
        if fit.error:
            raise MapFitFailed(fit)
        if not fit.finished:
            raise MapPending(fit)
    return _cached_map(key, build)


# --- sidebar controls shared by the map pages -----------------------------------------------
@dataclass(frozen=True)
class PageMap:
    data: object  # the pair's ImageDataset
    method: str
    n_points: int
    lmap: LatentMap

    @property
    def aligned(self) -> bool:
        return self.lmap.aligned


def page_map(pair, models: dict, missing_data: str = "This pair's test images are not available",
             prior_samples_if_missing: bool = True) -> PageMap:
    """What every map page starts with: the pair's data (with its notes), the projection controls
    and the cached map. Stops the page with a clear message when the data or the map is missing."""
    try:
        data = state.load_pair_data(pair)
    except LatentExplorerError as err:
        state.show_error(err, missing_data)
        if prior_samples_if_missing:
            show_prior_samples(models)  # what still works without any data
        st.stop()
    for note in data.notes:
        st.info(note)
    method, n_points = map_controls(pair.latent_dim, len(data.test))
    aligned = coordinates_control(pair.latent_dim, method, "ae" in pair.paths and "vae" in pair.paths)
    try:
        try:
            lmap = latent_map(pair, method, n_points, aligned=aligned)
        except MapTooLarge as err:  # hosted: a slow map over the size cap (any client value reaches here)
            cap = state.settings().max_slow_map_points
            st.info(f"Showing {cap:,} images: {err}.")
            lmap, n_points = latent_map(pair, method, cap, aligned=aligned), cap
    except MapPending as pending:
        show_pending(pending.fit)
        st.stop()
    except MapFitFailed as failed:
        show_failed_fit(failed.fit)
        st.stop()
    except LatentExplorerError as err:
        state.show_error(err, f"Could not compute the {method} map")
        st.stop()
    return PageMap(data, method, n_points, lmap)


def show_pending(fit: map_fits.MapFit) -> None:
    """The page in place of a map being fitted: what happens, and its progress (live)."""
    st.info(f"{fit.what[:1].upper()}{fit.what[1:]} of this pair is not on the server yet, so it is being fitted "
            "now, in the background (often 20-90 s). It appears here when it is ready, and later visits, by anyone, "
            "load it at once. Meanwhile you can pick PCA in the sidebar or open another page.")
    map_fits.fit_progress(fit.key)


def show_failed_fit(fit: map_fits.MapFit) -> None:
    """The fit's failure as a visitor may read it (the process's own words only locally), and a retry."""
    st.error(state.public(fit.error or ""))
    if fit.detail and not state.settings().hosted:
        with st.expander("What the fitting process said"):
            st.code(fit.detail)
    if st.button("Try again", key="map_fit_retry"):
        map_fits.queue().retry(fit.key)
        st.rerun()


def map_controls(latent_dim: int, n_test: int | None = None) -> tuple[str, int]:
    """Projection and sample size, in the sidebar; the choice follows the visitor across pages."""
    methods = available_methods(latent_dim)
    saved = st.session_state.get(METHOD_CHOICE)
    method = st.sidebar.selectbox(
        "Map projection", methods, index=methods.index(saved) if saved in methods else 0,
        format_func=METHOD_NAMES.get, key=f"{METHOD_CHOICE}_widget_{latent_dim}",
        help="How the codes are flattened to 2-D. With a 2-D latent space the map is the code itself. "
             "PCA is linear and has an exact inverse (the grid decoder needs one); UMAP and t-SNE keep "
             "neighbours together but bend distances, and their inverse is approximate or missing.")
    st.session_state[METHOD_CHOICE] = method
    sizes = [s for s in SAMPLE_SIZES if n_test is None or s < n_test]
    if n_test is not None and n_test <= SAMPLE_SIZES[-1]:
        sizes.append(n_test)  # "all of them" when the test split is small
    saved_n = st.session_state.get(SAMPLE_CHOICE, DEFAULT_SAMPLE)
    closest = min(sizes, key=lambda s: abs(s - saved_n))
    if len(sizes) == 1:
        return method, sizes[0]
    n = st.sidebar.select_slider("Test images on the map", sizes, value=closest, key=f"{SAMPLE_CHOICE}_widget_{n_test}",
                                 format_func=lambda s: f"{s:,}",
                                 help="A fixed random sample of the test split; more points take longer the first time.")
    st.session_state[SAMPLE_CHOICE] = n
    return method, n


def default_aligned(latent_dim: int) -> bool:
    """2-D pairs open in each model's own coordinates: the 2-D lesson is the AE's arbitrary scale
    and uneven layout against the prior, which the alignment (a rescaling) would hide. Larger
    latents open aligned, where the same digits sit in the same place on both maps."""
    return latent_dim != 2


def coordinates_control(latent_dim: int, method: str, both: bool) -> bool:
    """Aligned frame or each model's own coordinates (sidebar); True means aligned."""
    if not both or method not in ("identity", "pca"):
        return True  # a non-linear map has no units to compare; a single model has nothing to align to
    saved = st.session_state.setdefault(COORDS_CHOICE, {})
    key = "2d" if latent_dim == 2 else "nd"
    choice = st.sidebar.radio(
        "Coordinates", ["own", "aligned"], index=0 if not saved.get(key, default_aligned(latent_dim)) else 1,
        format_func={"own": "Each model's own (true scale)", "aligned": "AE aligned onto the VAE"}.get,
        key=f"{COORDS_CHOICE}_widget_{key}",
        help="Own: every code where the encoder put it, on shared axes, with the prior N(0, I) drawn at its true "
             "size on both maps. Aligned: the AE's map rotated and rescaled onto the VAE's so the same classes sit "
             "in the same place (its scale is then no longer its own).")
    saved[key] = choice == "aligned"
    return saved[key]


# --- plotly figures -------------------------------------------------------------------------
def scatter_figure(lmap: LatentMap, kind: str, *, highlight_row: int | None = None,
                   marks: list[tuple[np.ndarray, str]] = (), ellipses: int = 0, prior_sigmas=(),
                   height: int = 520) -> go.Figure:
    """`build_scatter_figure`, shared by every visitor when there are no marks: building 2,000
    points' traces with plotly costs ~20 ms per map, half of a Latent map page run. The figure is
    shared, so callers must not change it (st.plotly_chart only reads it). With marks (a drawing
    on the Draw page, new each time) it is built afresh."""
    build = partial(build_scatter_figure, lmap, kind, highlight_row=highlight_row, marks=marks, ellipses=ellipses,
                    prior_sigmas=prior_sigmas, height=height)
    if len(marks):
        return build()
    return _cached_figure(f"{lmap.key}|{kind}|{highlight_row}|{ellipses}|{tuple(prior_sigmas)}|{height}", build)


@st.cache_resource(show_spinner=False, max_entries=64)
def _cached_figure(key: str, _build: Callable[[], go.Figure]) -> go.Figure:
    return _build()


def build_scatter_figure(lmap: LatentMap, kind: str, *, highlight_row: int | None = None,
                         marks: list[tuple[np.ndarray, str]] = (), ellipses: int = 0, prior_sigmas=(),
                         height: int = 520) -> go.Figure:
    """The kind's map: one trace per class (legend = classes), hover shows class and test index.

    customdata = (test index, class name, sample row): selections come back with the row.
    highlight_row rings one image; marks are extra points (e.g. a drawing) drawn as stars;
    ellipses draws that many posterior 1-sigma ellipses (2-D VAE, identity map only);
    prior_sigmas draws the prior's k-sigma circles where the map shows the prior faithfully.
    """
    pts, labels = lmap.points[kind], lmap.labels
    fig = go.Figure()
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        name = lmap.classes[c] if c < len(lmap.classes) else str(c)
        custom = np.stack([lmap.indices[rows].astype(object), np.full(len(rows), name, object), rows.astype(object)], 1)
        fig.add_trace(go.Scatter(
            x=pts[rows, 0], y=pts[rows, 1], mode="markers", name=name, customdata=custom,
            marker=dict(size=5, color=class_color(c), opacity=0.75, line=dict(width=0)),
            hovertemplate="class %{customdata[1]}<br>test index %{customdata[0]}<extra></extra>"))
    if ellipses and kind == "vae" and lmap.method == "identity" and lmap.codes[kind].std is not None:
        _add_posterior_ellipses(fig, lmap, ellipses)
    center = lmap.prior_center(kind)
    if center is not None:
        for k in prior_sigmas:
            t = np.linspace(0, 2 * np.pi, 121)
            fig.add_trace(go.Scatter(x=center[0] + k * np.cos(t), y=center[1] + k * np.sin(t), mode="lines",
                                     line=dict(color="black", width=1.2, dash="dash"), hoverinfo="skip",
                                     name="prior " + ", ".join(map(str, prior_sigmas)) + "σ",
                                     showlegend=k == prior_sigmas[0],
                                     legendgroup="prior"))
            fig.add_annotation(x=center[0] + k * 0.7071, y=center[1] + k * 0.7071, text=f"{k}σ",
                               showarrow=False, font=dict(size=11), bgcolor="rgba(255,255,255,0.7)")
    if highlight_row is not None:
        p = pts[highlight_row]
        fig.add_trace(go.Scatter(x=[p[0]], y=[p[1]], mode="markers", name="selected", hoverinfo="skip",
                                 marker=dict(size=18, color="rgba(0,0,0,0)", line=dict(color="black", width=3))))
    for point, text in marks:
        fig.add_trace(go.Scatter(x=[point[0]], y=[point[1]], mode="markers+text", name=text, text=[text],
                                 textposition="top center", hoverinfo="skip",
                                 marker=dict(symbol="star", size=22, color="#e03131", line=dict(color="black", width=1.5))))
    xt, yt = lmap.axis_titles(kind)
    fig.update_layout(
        height=height, margin=dict(l=10, r=10, t=50, b=10),
        legend=dict(itemsizing="constant", orientation="h", yanchor="bottom", y=1.0, x=0, font=dict(size=11)),
        xaxis=dict(range=list(lmap.xlim), title=xt, zeroline=False, constrain="domain"),
        yaxis=dict(range=list(lmap.ylim), title=yt, zeroline=False, scaleanchor="x", scaleratio=1,
                   constrain="domain"),
        dragmode="pan", clickmode="event+select")
    return fig


def _add_posterior_ellipses(fig: go.Figure, lmap: LatentMap, count: int, seed: int = 0) -> None:
    """1-sigma ellipses of q(z|x) = N(mu, diag sigma^2) for a sample of points, as one trace."""
    codes = lmap.codes["vae"]
    rows = np.random.default_rng(seed).choice(len(codes), size=min(count, len(codes)), replace=False)
    t = np.append(np.linspace(0, 2 * np.pi, 33), np.nan)  # NaN ends one ellipse, plotly breaks the line
    xs = (codes.mean[rows, 0:1] + codes.std[rows, 0:1] * np.cos(t)).ravel()
    ys = (codes.mean[rows, 1:2] + codes.std[rows, 1:2] * np.sin(t)).ravel()
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="rgba(60,60,60,0.45)", width=1),
                             hoverinfo="skip", name=f"posterior 1σ ({len(rows)} images)"))


def clickable_map(image: Encoded, key: str) -> dict | None:
    """Show the map image; returns the last click {x, y, width, height, unix_time} or None.

    The image travels as a data URL on every rerun; it comes encoded (`ui.images.encoded`: JPEG
    for a map painted with decoded tiles, PNG for a plain one), so that nothing is encoded per run."""
    from streamlit_image_coordinates import streamlit_image_coordinates

    return streamlit_image_coordinates(image, key=key, cursor="crosshair", width="content",
                                       image_format=image.format)


# --- decoded grids ---------------------------------------------------------------------------
# A grid's cells are shaded by render_map_image's cell_shade: the Grid decoder's hole map uses the
# reference classifier's confidence (`grid_confidence`, then `hole_shade`).


@st.cache_resource(show_spinner=False, max_entries=32)
def decoded_grid(map_key: str, kind: str, n: int, xlim: tuple, ylim: tuple, gaussian: bool,
                 _lmap: LatentMap, _model: Autoencoder) -> np.ndarray:
    """The decoded grid [n*n, H, W, C], once per map, model and grid."""
    return decode_map_points(_lmap, kind, _model, GridSpec(n, xlim, ylim, gaussian).points())


@st.cache_resource(show_spinner=False, max_entries=256)
def decoded_point(map_key: str, kind: str, point: tuple, _lmap: LatentMap, _model: Autoencoder) -> np.ndarray:
    """One clicked map location decoded [H, W, C], once per map, model and place."""
    return decode_map_points(_lmap, kind, _model, [point])[0]


@st.cache_resource(show_spinner=False, max_entries=32)
def map_image(map_key: str, kind: str, n: int, xlim: tuple, ylim: tuple, gaussian: bool, tiles_shown: bool,
              prior_shown: bool, _lmap: LatentMap, _tiles: np.ndarray | None, shade_key: str = "",
              _shade: np.ndarray | None = None) -> np.ndarray:
    """The clickable map image of one model, without the click marker (drawn per click).

    _shade: per-cell cell_shade (the hole map), identified in the cache key by shade_key."""
    spec = GridSpec(n, xlim, ylim, gaussian)
    canvas = MapCanvas(xlim, ylim)
    center = _lmap.prior_center(kind) if prior_shown else None
    image = render_map_image(canvas, _lmap.points[kind], _lmap.labels, tiles=_tiles if tiles_shown else None,
                             grid_nodes=None if tiles_shown else spec.points(), prior_center=center,
                             cell_shade=_shade, cell_bounds=spec.cell_bounds() if _shade is not None else None,
                             axis_titles=_lmap.axis_titles(kind))
    image.setflags(write=False)  # shared by every visitor: nobody draws on it in place
    return image


# --- the hole map: the reference classifier's confidence per grid cell ----------------------
HOLE_NOUNS = {"mnist": "digit", "fashion-mnist": "piece of clothing", "cifar10": "object"}


@st.cache_resource(show_spinner=False, max_entries=32)
def grid_confidence(map_key: str, kind: str, n: int, xlim: tuple, ylim: tuple, gaussian: bool, judge_path: str,
                    judge_mtime_ns: int, _tiles: np.ndarray) -> np.ndarray:
    """The reference classifier's top-class probability of each decoded cell [n*n], in the
    tiles' order, once per map, model, grid and classifier file version (as `decoded_grid`)."""
    judge = load_judge(judge_path, judge_mtime_ns)
    c, h, w = judge.config.image_shape
    if tuple(_tiles.shape[1:]) != (h, w, c):
        raise ConfigError(f"the classifier {Path(judge_path).name} reads {h}x{w}x{c} images, the decoders make "
                          f"{'x'.join(map(str, _tiles.shape[1:]))} ones")
    confidence = judge_confidence(judge, _tiles)
    confidence.setflags(write=False)
    return confidence


@st.cache_data(show_spinner=False, max_entries=4)
def hole_legend(on_tiles: bool = True, threshold: float = CONFIDENT, width: int = 300) -> np.ndarray:
    """The hole map's legend (`ui.map_render.hole_legend_image`), drawn once per server."""
    return hole_legend_image(on_tiles, threshold, width)


def split_images(split: ImageSplit, indices) -> np.ndarray:
    """uint8 [M, H, W, C] test images by test-split index."""
    # numpy indexing of the shared tensor's memory: torch's index kernel is far slower for a few rows
    # (bench/README.md, "Figures behind the code")
    return split.images.numpy()[np.asarray(indices, dtype=np.int64)].transpose(0, 2, 3, 1)


def show_prior_samples(models: dict, n: int = 16, seed: int = 0) -> None:
    """What works without data: decode the same n draws z ~ N(0, I) with each model."""
    from vae.latent import sample_prior

    st.markdown("Without data there is no map, but both decoders still work: here are the same "
                f"{n} random codes z ~ N(0, I) decoded by each model.")
    cols = st.columns(len(models))
    for col, (kind, ckpt) in zip(cols, models.items()):
        _, images = sample_prior(ckpt.model, n, seed=seed)
        col.image(enlarge(image_grid(images, nrow=int(math.sqrt(n)) or 1, separator=2), 360), width=360,
                  caption=f"{MODEL_LABELS[kind]}: samples from N(0, I)")




# --- page helpers ---------------------------------------------------------------------------




@st.cache_resource(show_spinner=False, max_entries=32)
def decoded_grid_png(map_key: str, kind: str, n: int, xlim: tuple, ylim: tuple, gaussian: bool,
                     _tiles: np.ndarray, shade_key: str = "", _shade: np.ndarray | None = None) -> bytes:
    """grid_png, once per map, model, grid and hole map (shade_key identifies _shade)."""
    return grid_png(_tiles, n, _shade)


__all__ = [
    "UMAP_INVERSE_GRID", "zoomed_limits", "data_id", "map_key", "projection_key",
    "CONFIDENT", "GridSpec", "LatentMap", "MapCanvas", "build_latent_map", "click_to_data",
    "clickable_map", "decoded_grid_png", "grid_confidence", "hole_legend", "hole_shade", "largest_gap", "map_csv",
    "recognised_share", "tint_tiles",
    "decode_map_points", "decoded_grid", "decoded_point", "draw_click_marker", "enlarge", "grid_png", "latent_map",
    "map_controls", "map_image", "render_map_image", "sample_indices", "build_scatter_figure", "scatter_figure",
    "show_prior_samples", "split_images",
]
