"""Charts as icons: a series (or the outage panel's heartbeat strips)
rasterised with numpy into a ``bpy.utils.previews`` image and shown with
``layout.template_icon``.

Previews live in the add-on's own collection, never in ``bpy.data.images``,
so a chart never enters (or dirties) the .blend; the collection is freed at
unregister.  The small per-service sparklines are text (``view.sparkline``),
which costs nothing to draw.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import bpy.utils.previews

LINE = (0.35, 0.75, 1.0, 1.0)
FILL = (0.35, 0.75, 1.0, 0.18)
THRESHOLD = (1.0, 0.35, 0.3, 0.9)
GRID = (1.0, 1.0, 1.0, 0.08)

#: Heartbeat cell colours by ``incidents.CellState``: unknown, up, down, both.
CELL_COLOURS = (
    (0.35, 0.35, 0.35, 0.5),
    (0.25, 0.75, 0.35, 1.0),
    (0.9, 0.25, 0.2, 1.0),
    (0.95, 0.7, 0.15, 1.0),
)

_previews: Any = None
#: key -> the (series signature) its image was drawn from.
_drawn: dict[str, Any] = {}


def rasterize(values: Any, width: int = 256, height: int = 96, threshold: float | None = None) -> np.ndarray:
    """RGBA float32 pixels (rows bottom to top, as Blender stores images)
    of a filled line chart of ``values`` scaled from 0 to the larger of
    their maximum and ``threshold``; NaN values leave gaps."""
    v = np.asarray(values, dtype=np.float64)
    img = np.zeros((height, width, 4), dtype=np.float32)
    for frac in (0.25, 0.5, 0.75):
        img[int(frac * (height - 1)), :] = GRID
    finite = v[np.isfinite(v)]
    top = max(float(finite.max()) if finite.size else 0.0, threshold or 0.0)
    if v.size == 0 or top <= 0:
        return img
    # one column per pixel: nearest sample
    idx = np.minimum((np.arange(width) * v.size) // width, v.size - 1)
    col = v[idx]
    ok = np.isfinite(col)
    ys = np.where(ok, np.clip(col / top, 0.0, 1.0) * (height - 1), -1).astype(np.int64)
    rows = np.arange(height)[:, None]
    fill = ok[None, :] & (rows <= ys[None, :])
    img[fill] = FILL
    line = ok[None, :] & (np.abs(rows - ys[None, :]) <= 1)
    img[line] = LINE
    if threshold is not None and threshold > 0 and math.isfinite(threshold):
        ty = int(min(1.0, threshold / top) * (height - 1))
        img[ty, ::4] = THRESHOLD
        img[ty, 1::4] = THRESHOLD
    return img


def rasterize_strips(strips: Any, rows: Any, size: int = 256) -> np.ndarray:
    """RGBA float32 pixels (bottom row first) of heartbeat strips stacked
    top to bottom in a square image: strip ``i`` takes ``rows[i]`` of the
    ``sum(rows)`` equal bands (one UI row each, so a strip lines up with
    its labels when the image is drawn ``sum(rows)`` units tall), its
    cells (``CellState`` ints, oldest left) coloured by CELL_COLOURS with a
    gap between cells and between strips."""
    img = np.zeros((size, size, 4), dtype=np.float32)
    units = sum(rows)
    if units <= 0:
        return img
    band = size / units
    top = 0.0
    for cells, n in zip(strips, rows):
        y0, y1 = top + 3, top + n * band - 3  # from the top, in pixels
        top += n * band
        count = len(cells)
        for i, c in enumerate(cells):
            x0, x1 = int(i * size / count), int((i + 1) * size / count) - 1
            colour = CELL_COLOURS[c] if 0 <= c < len(CELL_COLOURS) else CELL_COLOURS[0]
            img[size - int(y1) : size - int(y0), x0:max(x0 + 1, x1)] = colour
    return img


def icon(key: str, values: Any, signature: Any, width: int = 256, height: int = 96, threshold: float | None = None) -> int:
    """The icon id of a chart of ``values`` (re-rasterised only when
    ``signature`` changed); 0 where previews have no icon (background mode)."""
    return _icon(key, signature, lambda: rasterize(values, width, height, threshold))


def strips_icon(key: str, strips: Any, rows: Any, signature: Any, size: int = 256) -> int:
    """The icon id of :func:`rasterize_strips` (redrawn when ``signature``
    changed); 0 where previews have no icon (background mode)."""
    return _icon(key, signature, lambda: rasterize_strips(strips, rows, size))


def _icon(key: str, signature: Any, draw: Any) -> int:
    global _previews
    if _previews is None:
        _previews = bpy.utils.previews.new()
    preview = _previews.get(key) or _previews.new(key)
    if _drawn.get(key) != signature:
        pixels = draw()
        preview.image_size = (pixels.shape[1], pixels.shape[0])
        preview.image_pixels_float.foreach_set(pixels.ravel())
        _drawn[key] = signature
    return int(preview.icon_id)


def clear() -> None:
    """Frees every chart (unregister)."""
    global _previews
    if _previews is not None:
        bpy.utils.previews.remove(_previews)
        _previews = None
    _drawn.clear()


def is_clear() -> bool:
    return _previews is None and not _drawn
