"""Images as the browser receives them, encoded once per content and shared by every visitor.

`st.image` turns an array or PNG bytes into a file on every run: it decodes the bytes, resizes
them to the given width and, for an image without alpha, re-encodes them as JPEG (PIL: 2-5 ms
per image, a third of a Grid decoder run before this module). A `data:` URL string goes through
`st.image` untouched, and the browser's message cache then receives only its hash on the
session's next run. So the pages encode each picture once, under a key that names its content
(the same key as the cached array it shows), and hand out the URL.

Photos (decoded digits, the maps painted with them) go as JPEG at quality 90, as `st.image`
sent them before; drawings (class names, ticks, legends) go as PNG, where JPEG would blur text.
"""
from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import streamlit as st
from PIL import Image

PHOTO, DRAWING = "JPEG", "PNG"
_SIGNATURES = {PHOTO: b"\xff\xd8", DRAWING: b"\x89PNG"}


def encode(image, fmt: str = DRAWING) -> bytes:
    """An RGB or grey image (uint8 array, PIL image, or PNG/JPEG bytes already made) as `fmt` bytes."""
    if isinstance(image, bytes):
        if image.startswith(_SIGNATURES[fmt]):  # already in that format
            return image
        image = Image.open(io.BytesIO(image))
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image)
    buf = io.BytesIO()
    if fmt == PHOTO:
        image.convert("RGB").save(buf, format="JPEG", quality=90)
    else:
        image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def to_data_url(data: bytes, fmt: str) -> str:
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(data).decode()


@st.cache_resource(show_spinner=False, max_entries=256)
def data_url(key: str, _image: Callable[[], object] | object, fmt: str = DRAWING) -> str:
    """The image named `key` as a data URL for `st.image`, encoded on the first call only.

    `_image` is the image, or a function that makes it (then nothing is drawn on later runs);
    `key` must change whenever its content does (callers use their cached arrays' keys)."""
    return to_data_url(encode(_image() if callable(_image) else _image, fmt), fmt)


@st.cache_resource(show_spinner=False, max_entries=4096)
def thumbnail_url(key: str, _image: Callable[[], object] | object, fmt: str = DRAWING) -> str:
    """`data_url` for small pictures (a test image, one decoded code: 1-5 kB each), kept apart so
    that a class's many clicks do not push the large pictures out of `data_url`'s cache."""
    return to_data_url(encode(_image() if callable(_image) else _image, fmt), fmt)


class Encoded:
    """Image bytes that components asking for "an object with a save method" (a PIL image)
    write out as they are: streamlit-image-coordinates then encodes nothing per run."""

    def __init__(self, data: bytes, fmt: str):
        self.data, self.format = data, fmt

    def save(self, fp, format: str | None = None, **_ignored) -> None:  # PIL's signature
        if format is not None and format.upper() != self.format:
            raise ValueError(f"these bytes are {self.format}, not {format}")
        fp.write(self.data)


@st.cache_resource(show_spinner=False, max_entries=128)
def encoded(key: str, _image: Callable[[], object] | object, fmt: str = DRAWING) -> Encoded:
    """The image named `key` as `Encoded` bytes, drawn and encoded on the first call only."""
    return Encoded(encode(_image() if callable(_image) else _image, fmt), fmt)


@dataclass(frozen=True)
class Pictures:
    """One `st.image` call's pictures as the browser receives them (data URLs), with their captions
    and, for a download button, the same pictures as one PNG file."""

    urls: tuple[str, ...]
    captions: tuple[str, ...] | None = None
    png: bytes = b""


def encode_pictures(arrays, captions=None, png: bytes = b"") -> Pictures:
    """uint8 pictures (as `ui.scores.tiles` makes them) encoded as `st.image` would send them (JPEG)."""
    urls = tuple(to_data_url(encode(a, PHOTO), PHOTO) for a in arrays)
    return Pictures(urls, tuple(captions) if captions is not None else None, png)


@st.cache_resource(show_spinner=False, max_entries=128)  # a section's pictures: 10 kB to 0.9 MB
def made_once(*, key: str, _make: Callable[[], object]) -> object:
    """What `_make()` returns (a section's pictures, a figure), made on the first call per `key` and
    shared, read-only, by every visitor: a page run then costs one lookup instead of encoding 37
    pictures and building two plotly figures (the Reconstructions page; bench/README.md). `key` names
    everything the result depends on; both arguments go by keyword, which spares Streamlit an
    `inspect.signature` per call."""
    return _make()
