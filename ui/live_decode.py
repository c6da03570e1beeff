"""Glide to decode: the Grid decoder's maps decoded under the pointer, in the browser.

A components-v2 component (HTML, JS and CSS in `ui/components/live_decode/`, no build step)
receives both maps' images and each map's exact inverse as one affine map (map point -> code;
`vae.export.affine_inverse`), and decodes in JavaScript on every pointer move: no rerun, no
server work while the pointer glides. A click sends the map point back, and the page decodes
it on the server as a click on its own maps does (nearest real images, the hole map).

The decoders' weights (`vae.export.decoder_payload`, 0.9-2.9 MB of JSON per model) are not
part of every run's data: the browser keeps them (IndexedDB, by content id) and asks, with the
trigger "need", only for those it lacks; the run that answers carries them, no other does. A
first visit therefore costs one extra rerun, a returning one none, and an ordinary rerun of the
page (a click, a slider) costs the component a few hundred kB of JSON (the two map images),
which Streamlit's message cache then sends as a hash.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from vae.export import ExportError, affine_inverse, decoder_payload, export_decoder

from . import maps
from .style import MODEL_COLORS, MODEL_LABELS

ASSETS = Path(__file__).parent / "components" / "live_decode"
TITLE = "Glide to decode (live, in your browser)"


def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


# decoder.js and cache.js hold plain functions (no module syntax) so the browser test can load
# the decoder alone; the component's module is the three files joined
_component = st.components.v2.component(
    "latent_explorer.live_decode", html=_asset("live_decode.html"), css=_asset("live_decode.css"),
    js="\n".join(_asset(name) for name in ("decoder.js", "cache.js", "component.js")))


@st.cache_resource(show_spinner=False, max_entries=16)
def decoder_json(path: str, mtime_ns: int, _model) -> dict:
    """One model's decoder payload with its content id, once per checkpoint file version.
    Raises ExportError for decoders that are not dense chains (conv, ResNet)."""
    payload = decoder_payload(export_decoder(_model))
    payload["id"] = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]
    return payload


def _png_data_url(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@st.cache_resource(show_spinner=False, max_entries=16)
def view_data(map_key: str, decoder_ids: tuple, _lmap: maps.LatentMap, _shapes: dict) -> dict:
    """Everything the component needs for one map of one pair (plain JSON): built once, the
    same object on every rerun. The maps are drawn by `maps.render_map_image` on the map's own
    square view (dots, the prior's circle on the VAE's), not on the page's zoomed one, so a
    zoom or a grid setting leaves the element unchanged (Streamlit then sends only its hash)."""
    canvas = maps.MapCanvas(_lmap.xlim, _lmap.ylim)
    center = _lmap.prior_center()
    images, inverse = {}, {}
    for kind in _lmap.kinds:
        image = maps.render_map_image(canvas, _lmap.points[kind], _lmap.labels,
                                      prior_center=center if kind == "vae" else None,
                                      axis_titles=_lmap.axis_titles(kind))
        images[kind] = _png_data_url(image)
        inv = affine_inverse(_lmap.projections[kind], _lmap.alignments[kind])
        inverse[kind] = {"weight": inv.weight.tolist(), "offset": inv.offset.tolist()}
    return {
        "id": hashlib.sha256(f"{map_key}|{decoder_ids}".encode()).hexdigest()[:20],
        "kinds": list(_lmap.kinds),
        "titles": {k: f"{MODEL_LABELS[k]}" + (" — dashed: the prior's 2σ circle" if k == "vae" and center is not None
                                            else "") for k in _lmap.kinds},
        "labels": {k: MODEL_LABELS[k] for k in _lmap.kinds},
        "colors": {k: MODEL_COLORS[k] for k in _lmap.kinds},
        "canvas": {"xlim": list(map(float, canvas.xlim)), "ylim": list(map(float, canvas.ylim)), "size": canvas.size,
                   "left": canvas.left, "top": canvas.top, "width": canvas.width, "height": canvas.height},
        "maps": images, "inverse": inverse,
        "decoders": {k: {"id": i, "height": _shapes[k][1], "width": _shapes[k][2]} for k, i in zip(_lmap.kinds, decoder_ids)},
        "status": "Move the pointer over either map: both decoders run in your browser on every move. "
                  "Click to decode that place on the server too (nearest real images, the hole map).",
    }


def payload_bytes(data: dict) -> int:
    """A payload as JSON, in bytes: what crosses the network."""
    return len(json.dumps(data).encode())


def unavailable_reason(models: dict, lmap: maps.LatentMap) -> str | None:
    """Why this pair and map cannot glide (None when they can)."""
    if not lmap.transform_is_exact:
        return (f"Live decoding needs a map with an exact, linear inverse (latent axes or PCA); the {lmap.method} map "
                "has none. Click the maps above instead, or pick PCA in the sidebar.")
    family = next(iter(models.values())).config.family
    if family not in ("mlp", "tutorial-mlp"):
        return (f"Live decoding runs the MLP decoders of the MNIST pairs in your browser; this pair's {family} decoder "
                "(convolutions: about 9 times an MLP's work per image, and a kernel plain JavaScript does not have) "
                "would not keep up with the pointer. Click the maps above instead.")
    return None


def section(models: dict, lmap: maps.LatentMap, click_key: str) -> None:
    """The page's live-decode section. A click stores {"map", "kind", "point"} in
    st.session_state[click_key] (a callback: the page reads it on the rerun it starts)."""
    st.subheader(TITLE)
    reason = unavailable_reason(models, lmap)
    if reason is not None:
        st.info(reason)
        return
    try:
        decoders = {kind: decoder_json(str(ckpt.path), Path(ckpt.path).stat().st_mtime_ns, ckpt.model)
                    for kind, ckpt in models.items() if kind in lmap.kinds}
    except (ExportError, OSError) as err:
        st.info(f"Live decoding is not available for this pair: {err}. Click the maps above instead.")
        return
    view = view_data(lmap.key, tuple(decoders[k]["id"] for k in lmap.kinds), lmap,
                     {k: decoders[k]["image_shape"] for k in lmap.kinds})
    asked = set(st.session_state.pop(ASKED, None) or ())
    weights = {d["id"]: d for d in decoders.values() if d["id"] in asked}
    size = sum(payload_bytes_cached(d["id"], d) for d in decoders.values())
    st.caption(f"Both decoders' weights ({size / 1e6:.1f} MB) travel to your browser once and stay there; from "
               "then on every pointer move is decoded on your computer, with nothing sent to the server.")
    _component(key=KEY, data={**view, "weights": weights} if weights else view,
               on_click_change=lambda: _store_click(click_key, lmap.key), on_need_change=_store_need)


KEY, ASKED = "live_decode", "live_decode_asked"  # the component; the decoder ids its browser asked for


@st.cache_data(show_spinner=False, max_entries=32)
def payload_bytes_cached(decoder_id: str, _payload: dict) -> int:
    return payload_bytes(_payload)


def _trigger(name: str):
    state = st.session_state.get(KEY)
    return state.get(name) if isinstance(state, dict) else None


def _store_need() -> None:
    ids = _trigger("need")
    if isinstance(ids, list):
        st.session_state[ASKED] = [str(i) for i in ids]


def _store_click(click_key: str, map_key: str) -> None:
    value = _trigger("click")
    if isinstance(value, dict) and "x" in value and "y" in value:
        st.session_state[click_key] = {"map": map_key, "kind": value.get("kind", "vae"),
                                       "point": (float(value["x"]), float(value["y"]))}
