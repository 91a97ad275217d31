"""Which parts of an image get their own descriptor, and where those parts are in pixels.

SSCD ends in a pooling over the cells of its last feature map (9 x 9 cells for a 288-pixel
square input), so any rectangle of cells can be pooled into a descriptor of that part of the
image for the cost of one forward pass (`detector.encoders.sscd.GemHead.pool`). Two layouts:

- **Reference regions** (`reference_windows`), stored in the index beside each work's whole
  descriptor: a few large parts of the work (each quarter-overlapping corner at 2/3 of the
  side, and the centre at 7/9), so that an output which is a crop of a work still finds it.
  They multiply the SSCD index by 1 + `len(config.REFERENCE_REGIONS)`.
- **Output regions** (`query_windows`), searched at scan time and never stored: every
  rectangle whose sides are among `config.QUERY_REGION_SIDES` of the grid, at every cell
  offset, so that a work pasted into a larger output (a composite, a collage, a framed copy)
  is found and located.

A window is (x, y, width, height) in cells; `window_box` turns it into a `Box` in the image's
own pixels (the model sees the image squashed to a square, so cells scale per axis).
"""

from __future__ import annotations

from collections.abc import Sequence

from detector import config
from detector.results import Box

Cells = tuple[int, int, int, int]


def reference_windows(rows: int, cols: int,
                      layout: Sequence[tuple[float, float, float, float]] | None = None) -> list[Cells]:
    """The reference regions of a *rows* x *cols* feature map, from *layout* (fractions of the
    map: left, top, width, height; default `config.REFERENCE_REGIONS`), rounded to whole cells;
    duplicates dropped."""
    layout = config.REFERENCE_REGIONS if layout is None else layout
    out: list[Cells] = []
    for fx, fy, fw, fh in layout:
        w = max(1, min(cols, round(fw * cols)))
        h = max(1, min(rows, round(fh * rows)))
        x = min(cols - w, max(0, round(fx * cols)))
        y = min(rows - h, max(0, round(fy * rows)))
        if (x, y, w, h) not in out and (w, h) != (cols, rows):
            out.append((x, y, w, h))
    return out


def query_windows(rows: int, cols: int, sides: Sequence[float] | None = None) -> list[Cells]:
    """Every window whose width and height are each one of *sides* (fractions of the map,
    rounded to cells; default `config.QUERY_REGION_SIDES`; the whole map excluded), at every
    cell offset."""
    sides = config.QUERY_REGION_SIDES if sides is None else sides
    widths = sorted({max(1, min(cols, round(f * cols))) for f in sides})
    heights = sorted({max(1, min(rows, round(f * rows))) for f in sides})
    out: list[Cells] = []
    for h in heights:
        for w in widths:
            if (w, h) == (cols, rows):
                continue
            out.extend((x, y, w, h) for y in range(rows - h + 1) for x in range(cols - w + 1))
    return out


def window_box(window: Cells, rows: int, cols: int, width: int, height: int) -> Box:
    """A window of a rows x cols map as a box in the pixels of a width x height image."""
    x, y, w, h = window
    return Box(
        left=round(x * width / cols),
        top=round(y * height / rows),
        right=round((x + w) * width / cols),
        bottom=round((y + h) * height / rows),
    )
