"""ui/images.py: pictures encoded once per content key, handed to st.image and the clickable maps."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import streamlit as st
from PIL import Image

from ui import images


@pytest.fixture(autouse=True)
def fresh_caches():
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


def decode_url(url: str) -> tuple[str, np.ndarray]:
    head, data = url.split(",", 1)
    return head, np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def a_picture() -> np.ndarray:
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[5:15, 10:20] = (200, 40, 40)
    return rgb


def test_a_drawing_travels_as_a_lossless_png_and_a_photo_as_jpeg():
    head, back = decode_url(images.data_url("drawing", a_picture()))
    assert head == "data:image/png;base64" and np.array_equal(back, a_picture())
    head, back = decode_url(images.data_url("photo", a_picture(), images.PHOTO))
    assert head == "data:image/jpeg;base64" and back.shape == (20, 30, 3)
    assert np.abs(back.astype(int) - a_picture()).mean() < 8  # quality 90: close, not exact
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)  # [H, W, 1] as the decoders make them
    assert np.array_equal(decode_url(images.data_url("grey", grey))[1], grey[..., 0])


def test_png_bytes_already_made_are_sent_as_they_are():
    buf = io.BytesIO()
    Image.fromarray(a_picture()).save(buf, format="PNG")
    assert images.encode(buf.getvalue(), images.DRAWING) == buf.getvalue()
    jpeg = images.encode(buf.getvalue(), images.PHOTO)  # a PNG shown as a photo is converted
    assert jpeg.startswith(b"\xff\xd8")


def test_a_picture_is_drawn_once_per_key_and_again_for_a_new_key():
    drawn = []

    def draw():
        drawn.append(1)
        return a_picture()

    first = images.data_url("map|a", draw)
    assert images.data_url("map|a", draw) == first and len(drawn) == 1
    images.data_url("map|b", draw)
    assert len(drawn) == 2
    assert images.thumbnail_url("map|a", draw) == first and len(drawn) == 3  # its own cache


def test_encoded_bytes_are_written_as_they_are_by_whoever_saves_them():
    enc = images.encoded("clickable", a_picture(), images.PHOTO)
    out = io.BytesIO()
    enc.save(out, format="JPEG", quality=75)  # what streamlit-image-coordinates calls
    assert out.getvalue() == enc.data and enc.data.startswith(b"\xff\xd8")
    with pytest.raises(ValueError, match="JPEG, not PNG"):
        enc.save(io.BytesIO(), format="PNG")
