"""The PIL renderer of the map pictures: the Grid decoder's clickable map (`MapCanvas` maps a
pixel to map coordinates exactly), the hole map's tint and legend, and the decoded grid as a PNG.

No Streamlit here: `ui.maps` caches what this draws, and the β dial, the lesson and the benchmarks
call it directly. Plotly selections report only trace points, never empty space, and the empty
space (the AE's holes) is what a student must be able to click: hence a picture of our own.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from plotly.colors import qualitative

from vae.errors import ConfigError
from vae.grids import image_grid, to_uint8
from vae.maps import RECOGNISED

CLASS_COLORS = qualitative.T10  # the Train page's palette: a class keeps its colour across pages
CONFIDENT = RECOGNISED  # "recognised", as in the Reconstructions page's completeness
HOLE_RGB, HOLE_ALPHA = (200, 40, 40), 160  # the tint, and its opacity (of 255) on a fully shaded cell


def class_color(label: int) -> str:
    return CLASS_COLORS[int(label) % len(CLASS_COLORS)]


# --- the clickable map image ----------------------------------------------------------------
@dataclass(frozen=True)
class MapCanvas:
    """Pixel <-> map coordinates of the PNG map: a square plot box inside fixed margins.

    Pixel coordinates are continuous, (0, 0) the top-left corner of the image; pixel (i, j)
    covers [i, i+1) x [j, j+1), so a click on pixel i is read at its centre i + 0.5.
    """

    xlim: tuple
    ylim: tuple
    size: int = 440  # the plot box, in pixels, square
    left: int = 46
    top: int = 10
    right: int = 10
    bottom: int = 30

    @property
    def width(self) -> int:
        return self.left + self.size + self.right

    @property
    def height(self) -> int:
        return self.top + self.size + self.bottom

    def to_pixel(self, points) -> np.ndarray:
        p = np.atleast_2d(np.asarray(points, dtype=np.float64))
        (x0, x1), (y0, y1) = self.xlim, self.ylim
        px = self.left + (p[:, 0] - x0) / (x1 - x0) * self.size
        py = self.top + (y1 - p[:, 1]) / (y1 - y0) * self.size  # y grows upwards on the map
        return np.stack([px, py], axis=1)

    def to_data(self, px: float, py: float) -> tuple[float, float]:
        (x0, x1), (y0, y1) = self.xlim, self.ylim
        x = x0 + (px - self.left) / self.size * (x1 - x0)
        y = y1 - (py - self.top) / self.size * (y1 - y0)
        return float(x), float(y)

    def inside(self, px: float, py: float) -> bool:
        return self.left <= px <= self.left + self.size and self.top <= py <= self.top + self.size


def click_to_data(click: dict | None, canvas: MapCanvas) -> tuple[float, float] | None:
    """streamlit-image-coordinates' value -> map coordinates, or None outside the plot box.

    The component reports the pixel under the mouse in the image *as displayed* with the
    displayed width and height; scale back to the PNG's own pixels first."""
    if not click or "x" not in click:
        return None
    sx = canvas.width / float(click.get("width") or canvas.width)
    sy = canvas.height / float(click.get("height") or canvas.height)
    px, py = (click["x"] + 0.5) * sx, (click["y"] + 0.5) * sy
    return canvas.to_data(px, py) if canvas.inside(px, py) else None


def nice_ticks(lo: float, hi: float, target: int = 5) -> np.ndarray:
    """Round tick values (1, 2 or 5 times a power of ten) inside [lo, hi]."""
    raw = (hi - lo) / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return np.arange(math.ceil(lo / step) * step, hi + 1e-9 * step, step)


def _font(size: int = 11):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def rgb(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    return tuple(int(color[i:i + 2], 16) for i in (0, 2, 4))


def render_map_image(canvas: MapCanvas, points: np.ndarray, labels: np.ndarray, *,
                     tiles: np.ndarray | None = None, grid_nodes: np.ndarray | None = None,
                     prior_center=None, prior_sigmas=(2,), cell_shade: np.ndarray | None = None,
                     cell_bounds: tuple | None = None, axis_titles=("", "")) -> np.ndarray:
    """The map as an RGB uint8 image [canvas.height, canvas.width, 3].

    tiles: a decoded uniform grid [n*n, H, W, C] covering the plot box exactly (cell centres),
    drawn under the dots; grid_nodes: [M, 2] frame points drawn as small grey crosses;
    prior_center: draw the prior's k-sigma circles around it; cell_shade: per-cell values in
    [0, 1] (1 = clear, 0 = fully tinted red; see `hole_shade`) in the grid's order (row-major,
    top row = largest y), tinting the tiles or, without tiles, the white plot box;
    cell_bounds: (x edges [n+1], y edges [n+1]), ascending, of non-uniform cells (`GridSpec.cell_bounds`);
    default: an n x n tiling of the view, as the tiles are drawn.
    """
    img = Image.new("RGB", (canvas.width, canvas.height), "white")
    box = (canvas.left, canvas.top, canvas.left + canvas.size, canvas.top + canvas.size)
    dark = tiles is not None
    if dark:
        n = int(round(math.sqrt(len(tiles))))
        mosaic = Image.fromarray(_gray_to_rgb(image_grid(tiles, nrow=n, separator=0)))
        mosaic = mosaic.resize((canvas.size, canvas.size), Image.Resampling.BILINEAR)
        img.paste(mosaic, box[:2])
    if cell_shade is not None:
        plot = img.crop(box)
        img.paste(Image.composite(Image.new("RGB", plot.size, HOLE_RGB), plot,
                                  _cell_alpha(canvas, cell_shade, cell_bounds)), box[:2])
    draw = ImageDraw.Draw(img, "RGBA")
    if grid_nodes is not None and len(grid_nodes):
        for x, y in canvas.to_pixel(grid_nodes):
            if canvas.inside(x, y):
                draw.line([(x - 2, y), (x + 2, y)], fill=(150, 150, 150, 255))
                draw.line([(x, y - 2), (x, y + 2)], fill=(150, 150, 150, 255))
    r = 2.2 if len(points) > 1500 else 2.8
    outline = (255, 255, 255, 150) if dark else None
    for (x, y), c in zip(canvas.to_pixel(points), labels):
        if canvas.inside(x, y):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(*rgb(class_color(c)), 220), outline=outline)
    if prior_center is not None:
        (cx, cy), = canvas.to_pixel([prior_center])
        ink, edge = ((255, 212, 59, 255), (0, 0, 0, 255)) if dark else ((20, 20, 20, 255), (255, 255, 255, 255))
        for k in prior_sigmas:
            rad = k / (canvas.xlim[1] - canvas.xlim[0]) * canvas.size
            _dashed_circle(draw, cx, cy, rad, edge, width=5)
            _dashed_circle(draw, cx, cy, rad, ink, width=3 if dark else 2)
            draw.text((cx + rad * 0.72 + 4, cy - rad * 0.72 - 14), f"prior {k} sd", fill=ink, font=_font(13),
                      stroke_width=2, stroke_fill=edge)
    # frame, ticks and labels (drawn last, over anything spilling into the margins)
    draw.rectangle([0, 0, canvas.width, canvas.top - 1], fill="white")
    draw.rectangle([0, 0, canvas.left - 1, canvas.height], fill="white")
    draw.rectangle([0, box[3] + 1, canvas.width, canvas.height], fill="white")
    draw.rectangle([box[2] + 1, 0, canvas.width, canvas.height], fill="white")
    draw.rectangle(box, outline=(90, 90, 90, 255))
    font = _font(10)
    for v in nice_ticks(*canvas.xlim):
        (x, _), = canvas.to_pixel([[v, canvas.ylim[0]]])
        draw.line([(x, box[3]), (x, box[3] + 4)], fill=(90, 90, 90, 255))
        draw.text((x, box[3] + 6), f"{v:g}", fill=(60, 60, 60, 255), font=font, anchor="mt")
    for v in nice_ticks(*canvas.ylim):
        (_, y), = canvas.to_pixel([[canvas.xlim[0], v]])
        draw.line([(box[0] - 4, y), (box[0], y)], fill=(90, 90, 90, 255))
        draw.text((box[0] - 6, y), f"{v:g}", fill=(60, 60, 60, 255), font=font, anchor="rm")
    if axis_titles[0]:
        draw.text((box[2], canvas.height - 2), axis_titles[0], fill=(60, 60, 60, 255), font=font, anchor="rd")
    return np.asarray(img)


def _cell_alpha(canvas: MapCanvas, cell_shade, cell_bounds=None) -> Image.Image:
    """The red tint's opacity over the plot box ("L" image [size, size]): each cell's rectangle
    filled with (1 - shade) * HOLE_ALPHA. Cell i sits in row i // n (row 0 = largest y) and
    column i % n (column 0 = smallest x), the layout of `grid_points_2d` and `image_grid`."""
    shade = np.clip(np.asarray(cell_shade, dtype=np.float64).ravel(), 0, 1)
    n = math.isqrt(len(shade))
    if n * n != len(shade):
        raise ConfigError(f"cell_shade has {len(shade)} values: expected n*n for an n x n grid")
    if cell_bounds is None:
        cell_bounds = (np.linspace(*canvas.xlim, n + 1), np.linspace(*canvas.ylim, n + 1))
    xe, ye = (np.asarray(e, dtype=np.float64) for e in cell_bounds)
    # edge pixels inside the plot box (infinite edges, e.g. the prior's outer quantiles, clip to it)
    px = np.clip(canvas.to_pixel(np.stack([xe, np.zeros_like(xe)], 1))[:, 0] - canvas.left, 0, canvas.size)
    py = np.clip(canvas.to_pixel(np.stack([np.zeros_like(ye), ye], 1))[:, 1] - canvas.top, 0, canvas.size)
    px, py = np.round(px).astype(int), np.round(py).astype(int)  # py decreases as y grows
    alpha = np.zeros((canvas.size, canvas.size), np.uint8)
    for i, value in enumerate(np.round((1 - shade) * HOLE_ALPHA).astype(np.uint8)):
        row, col = divmod(i, n)
        top, bottom = py[n - row], py[n - 1 - row]  # row 0 spans the top y edges
        alpha[top:bottom, px[col]:px[col + 1]] = value
    return Image.fromarray(alpha)


def _dashed_circle(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill, width: int = 2,
                   dashes: int = 48) -> None:
    step = 360 / dashes
    for i in range(0, dashes, 2):
        draw.arc([cx - r, cy - r, cx + r, cy + r], i * step, (i + 1) * step, fill=fill, width=width)


def draw_click_marker(image: np.ndarray, canvas: MapCanvas, point, color=(224, 49, 49)) -> np.ndarray:
    """A copy of the map image with a crosshair at `point` (map coordinates)."""
    img = Image.fromarray(image)
    draw = ImageDraw.Draw(img)
    (x, y), = canvas.to_pixel([point])
    for width, c in ((5, (255, 255, 255)), (3, color)):
        draw.line([(x - 10, y), (x - 3, y)], fill=c, width=width)
        draw.line([(x + 3, y), (x + 10, y)], fill=c, width=width)
        draw.line([(x, y - 10), (x, y - 3)], fill=c, width=width)
        draw.line([(x, y + 3), (x, y + 10)], fill=c, width=width)
    draw.ellipse([x - 6, y - 6, x + 6, y + 6], outline=color, width=2)
    return np.asarray(img)



def hole_shade(confidence, threshold: float = CONFIDENT) -> np.ndarray:
    """Confidence -> cell_shade: clear where the classifier is at least `threshold` sure; below
    it a red tint from 40% of full (just unsure) to full (no class at all), so every cell that
    the recognised share leaves out shows."""
    c = np.asarray(confidence, dtype=np.float64)
    return np.where(c >= threshold, 1.0, 0.6 * np.clip(c / threshold, 0, 1))





def hole_legend_image(on_tiles: bool = True, threshold: float = CONFIDENT, width: int = 300) -> np.ndarray:
    """The hole map's legend [H, width, 3]: the tint of each confidence over a black (tile) or
    white background, with ticks at 0, 50 %, the threshold and 100 %."""
    left, right, bar_top, bar_h = 10, 14, 4, 18
    img = Image.new("RGB", (width, bar_top + bar_h + 18), "white")
    span = width - left - right
    conf = (np.arange(span) + 0.5) / span
    alpha = np.round((1 - hole_shade(conf, threshold)) * HOLE_ALPHA)[None, :, None] / 255
    base = np.full((bar_h, span, 3), 0 if on_tiles else 255, np.float64)
    bar = base * (1 - alpha) + np.array(HOLE_RGB, np.float64) * alpha
    img.paste(Image.fromarray(np.round(bar).astype(np.uint8)), (left, bar_top))
    draw = ImageDraw.Draw(img)
    draw.rectangle([left - 1, bar_top - 1, left + span, bar_top + bar_h], outline=(90, 90, 90))
    for v in sorted({0.0, 0.5, threshold, 1.0}):
        x = left + v * span
        draw.line([(x, bar_top + bar_h), (x, bar_top + bar_h + 3)], fill=(90, 90, 90))
        draw.text((x, bar_top + bar_h + 4), f"{v:.0%}", fill=(60, 60, 60), font=_font(11), anchor="mt")
    return np.asarray(img)


def tint_tiles(images: np.ndarray, cell_shade) -> np.ndarray:
    """Images [M, H, W, C] (float in [0, 1] or uint8) -> RGB uint8 [M, H, W, 3], image i tinted as
    render_map_image tints cell i (the hole map on the decoded grid picture)."""
    images = np.asarray(images)
    pixels = _gray_to_rgb(images).astype(np.float64) * (1.0 if images.dtype == np.uint8 else 255.0)
    alpha = np.round((1 - np.clip(np.asarray(cell_shade, dtype=np.float64), 0, 1)) * HOLE_ALPHA) / 255
    alpha = alpha.reshape(-1, 1, 1, 1)
    return np.round(np.clip(pixels, 0, 255) * (1 - alpha) + np.array(HOLE_RGB, np.float64) * alpha).astype(np.uint8)


def grid_png(images: np.ndarray, n: int, cell_shade=None) -> bytes:
    """The decoded grid as a PNG (the classic manifold picture), 1-pixel grey separators;
    with cell_shade, tinted by the hole map."""
    if cell_shade is not None:
        images = tint_tiles(images, cell_shade)
    buf = io.BytesIO()
    Image.fromarray(_gray_to_rgb(image_grid(images, nrow=n, separator=1))).save(buf, format="PNG")
    return buf.getvalue()


# --- small display helpers ------------------------------------------------------------------
def _gray_to_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def enlarge(image: np.ndarray, size: int = 196) -> Image.Image:
    """One image [H, W, C] (float in [0, 1] or uint8) as a PIL image, scaled up with sharp pixels."""
    arr = to_uint8(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    img = Image.fromarray(arr)
    scale = max(1, size // max(img.size))
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
