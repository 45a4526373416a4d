"""The quality report's pictures: labelled panels, enlarged, with crops around the hole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from knitwork.degradation import rectangular_hole
from knitwork.io import load_image
from pipeline.bench_suites import SUITES


def label(panel: np.ndarray, text: str) -> np.ndarray:
    """The panel with a white strip above it holding ``text``."""
    w = panel.shape[1]
    strip = Image.new("RGB", (w, 14), "white")
    ImageDraw.Draw(strip).text((3, 1), text, fill="black")
    top = np.asarray(strip, dtype=np.float32) / 255.0
    return np.concatenate([top, panel], axis=0)


def resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    img = Image.fromarray((pixels * 255).round().astype(np.uint8))
    return np.asarray(img.resize(size, Image.NEAREST), dtype=np.float32) / 255.0


def panel(path: Path, size: tuple[int, int]) -> np.ndarray:
    pixels = load_image(path).pixels
    return resize(np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels, size)


def contact_sheet(panels, names, crops, crop_name: str) -> np.ndarray:
    """Two rows of equally sized labelled panels, 6-px white gaps: the pictures, their crops."""
    gap = np.ones((panels[0].shape[0] + 14, 6, 3), dtype=np.float32)
    row1 = [label(p, n) for p, n in zip(panels, names, strict=True)]
    row2 = [label(c, crop_name) for c in crops]
    lines = [np.concatenate([y for x in r for y in (x, gap)][:-1], axis=1) for r in (row1, row2)]
    sheet = np.concatenate([lines[0], np.ones((6, lines[0].shape[1], 3)), lines[1]], axis=0)
    return sheet.astype(np.float32)


def crop_box(rows, suite, setting, image, h, w) -> tuple[int, int, int, int]:
    """A box around the hole (the protocol's own, recomputed from the row's seed) or around
    the image centre."""
    side = max(8, min(h, w) // 3)
    top, left = (h - side) // 2, (w - side) // 2
    if suite == "inpaint":
        seed = next(r["seed"] for r in rows if r["image"] == image and r["setting"] == setting)
        fill = next(s.degradation.fill_ratio for s in SUITES[suite] if s.name == setting)
        _, (top, left, hh, hw) = rectangular_hole(h, w, fill, seed)
        cy, cx = top + hh // 2, left + hw // 2
        side = min(h, w, max(side, 2 * max(hh, hw)))
        top = min(max(0, cy - side // 2), h - side)
        left = min(max(0, cx - side // 2), w - side)
    return top, left, side, side
