"""Seeded free-form holes, the kind photo restorers meet beside the paper's square one: thin
scratches (``scratch_mask``) and a text overlay such as a caption, a date stamp or a watermark
(``text_mask``).

Both return a known mask, (H, W) bool with True = observed and False = hole, the convention of
``knitwork.degradation.rectangular_hole``, and both are deterministic in ``seed``. The hole grows
piece by piece (a stroke, a line of text); a piece that would pass the target area
``fill_ratio``·H·W is shortened (a stroke cut short, a text cut to fewer characters) until it
fits, and when no piece fits any more the closest overshoot is added if it brings the area
nearer. The hole fraction is within ``TOLERANCE`` (±30 %, relative) of ``fill_ratio`` whenever
the target is at least ``MIN_TARGET`` pixels (e.g. 1 % of 32×32); in practice it is within a
few per cent, and below that the granularity of a pixel or a glyph decides.

Rules that keep an inpainting fit possible: ``fill_ratio`` is at most ``MAX_FILL`` (half the
image), both sides are at least ``MIN_SIDE`` pixels, and the outermost ring of pixels is always
known, so every row and every column has known pixels (``rectangular_hole`` keeps the same ring).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

MIN_SIDE = 8  # pixels: a smaller image has no room for a free-form hole
MAX_FILL = 0.5  # at most half the image is hole
TOLERANCE = 0.3  # the hole fraction is within ±30 % (relative) of fill_ratio ...
MIN_TARGET = 10  # ... when the target hole has at least this many pixels
CLOSE_ENOUGH = 0.01  # stop growing within 1 % (relative) below the target
MAX_IDLE = 50  # pieces in a row that do not fit before the hole stops growing

CAPTION_WORDS = (
    "Summer", "Grandma", "Paris", "beach", "birthday", "Christmas", "wedding", "family",
    "holiday", "Rome", "garden", "Uncle Joe", "the lake", "PROOF", "SAMPLE", "COPY", "Studio",
    "with love", "our house", "Mum & Dad", "first day", "New Year", "picnic", "Venice",
)  # fmt: skip


@dataclass(frozen=True)
class Piece:
    """Hole pixels drawn in a box of the image: ``ink`` (h, w) bool, its corner at (top, left)."""

    top: int
    left: int
    ink: np.ndarray

    def region(self, image: np.ndarray) -> np.ndarray:
        """The view of an (H, W) array under this piece."""
        h, w = self.ink.shape
        return image[self.top : self.top + h, self.left : self.left + w]


# a piece's candidates, longest first: the whole piece, then shorter versions of it
Candidates = Callable[[np.random.Generator, float], Iterator[Piece]]


def scratch_mask(height: int, width: int, fill_ratio: float, seed: int) -> np.ndarray:
    """Thin scratches, as on an old print or film: seeded smooth strokes (cubic Bézier curves,
    mostly long: a third to four fifths of the image's diagonal, shorter only where the target
    area asks for it) drawn with Pillow until the hole is ≈ ``fill_ratio`` of the image.
    Strokes are 1 to ``scratch_width`` px wide (1 up to a 256-px short side, 2 up to 512,
    then 3). Returns the known mask (False = hole)."""
    _check(height, width, fill_ratio, "scratch")
    widest, diagonal = scratch_width(height, width), float(np.hypot(height, width))

    def strokes(rng: np.random.Generator, remaining: float) -> Iterator[Piece]:
        stroke_width = int(rng.integers(1, widest + 1))
        length = min(rng.uniform(1 / 3, 4 / 5) * diagonal, remaining / stroke_width + 1)
        points = _bezier(rng, height, width, length)
        for keep in (1.0, 0.5, 0.25, 0.125):  # the stroke, then shorter pieces of it
            yield _draw_line(
                height, width, points[: max(2, round(len(points) * keep))], stroke_width
            )

    return _grow(height, width, fill_ratio, seed, strokes)


def text_mask(height: int, width: int, fill_ratio: float, seed: int) -> np.ndarray:
    """A text overlay: seeded captions and date stamps (words of ``CAPTION_WORDS``, digits)
    at seeded positions, a line each, drawn until the hole is ≈ ``fill_ratio`` of the image.
    The font is Pillow's default (Aileron Regular) at ``font_size``: a tenth of the shorter
    side, at least 8 px; drawn without anti-aliasing, so a pixel is ink or not.

    The glyphs come from FreeType: the same seed gives the same mask wherever Pillow has the
    same FreeType (the pinned Pillow wheels bundle it); another FreeType version may hint a
    glyph a pixel differently. A Pillow built without FreeType is refused (its fallback bitmap
    font has a single size and would give other masks). Returns the known mask."""
    _check(height, width, fill_ratio, "text")
    font = _font(font_size(height, width))

    def captions(rng: np.random.Generator, remaining: float) -> Iterator[Piece]:
        text = _caption(rng)
        left, top, right, bottom = font.getbbox(text)
        x = round(rng.uniform(-0.25 * (right - left), max(1.0, width - 0.75 * (right - left))))
        y = round(rng.uniform(-top, max(1.0 - top, height - bottom)))
        line = _draw_text(height, width, (x, y), text, font)
        for end in range(len(text), 0, -1):  # the line, then its shorter beginnings
            if not text[end - 1].isspace():
                yield _cut(line, x + round(font.getlength(text[:end])))

    return _grow(height, width, fill_ratio, seed, captions)


def scratch_width(height: int, width: int) -> int:
    """The widest scratch, in pixels: 1, 2 or 3 as the shorter side passes 256 and 512 px."""
    return int(min(3, 1 + min(height, width) // 256))


def font_size(height: int, width: int) -> int:
    """The text overlay's font size in pixels: a tenth of the shorter side, at least 8."""
    return max(8, round(min(height, width) / 10))


def _check(height: int, width: int, fill_ratio: float, kind: str) -> None:
    if not 0 < fill_ratio <= MAX_FILL:
        raise ValueError(
            f"fill ratio must be in (0, {MAX_FILL}] for a {kind} mask; got {fill_ratio}"
        )
    if min(height, width) < MIN_SIDE:
        raise ValueError(
            f"image {width}×{height} is too small for a {kind} mask: both sides must be at "
            f"least {MIN_SIDE} px (use the square hole, or a larger image)"
        )


def _grow(height: int, width: int, fill_ratio: float, seed: int, pieces: Candidates) -> np.ndarray:
    """Add pieces to the hole until its area is within ``CLOSE_ENOUGH`` below the target. Of
    a piece's candidates the longest that fits is taken; when ``MAX_IDLE`` pieces in a row do
    not fit, the closest overshoot seen is added if it brings the area nearer the target (or
    the hole would be empty)."""
    rng = np.random.default_rng(seed)
    target = fill_ratio * height * width
    hole = np.zeros((height, width), dtype=bool)
    area, idle, overshoot = 0, 0, None
    while target - area > max(0.5, CLOSE_ENOUGH * target) and idle < MAX_IDLE:
        idle += 1
        for piece in pieces(rng, target - area):
            added = _added(hole, piece)
            if 0 < added <= target - area:
                area, idle = area + added, 0
                piece.region(hole)[...] |= piece.ink
                break
            if added > 0 and (overshoot is None or added < _added(hole, overshoot)):
                overshoot = piece
    if overshoot is not None and (area == 0 or _added(hole, overshoot) < 2 * (target - area)):
        overshoot.region(hole)[...] |= overshoot.ink
    return ~hole


def _added(hole: np.ndarray, piece: Piece) -> int:
    """How many pixels ``piece`` adds to ``hole``."""
    return int(np.count_nonzero(piece.ink & ~piece.region(hole)))


def _bezier(rng: np.random.Generator, height: int, width: int, length: float) -> np.ndarray:
    """Points along a smooth seeded curve of chord ``length`` that starts inside the image: a
    cubic Bézier whose inner control points bend off the chord by about a fifth of it."""
    start = rng.uniform((0, 0), (width, height))
    angle = rng.uniform(0, 2 * np.pi)
    chord = length * np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-chord[1], chord[0]])
    bends = rng.normal(0, 0.2, size=2)
    controls = np.stack(
        [start, start + chord / 3 + bends[0] * normal, start + 2 * chord / 3 + bends[1] * normal,
         start + chord]
    )  # fmt: skip
    t = np.linspace(0, 1, int(length / 4) + 2)[:, None]
    weights = np.hstack([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3])
    return weights @ controls


def _draw_line(height: int, width: int, points: np.ndarray, stroke_width: int) -> Piece:
    low, high = points.min(axis=0) - stroke_width, points.max(axis=0) + stroke_width
    box = (int(np.floor(low[0])), int(np.floor(low[1])), int(np.ceil(high[0])) + 1,
           int(np.ceil(high[1])) + 1)  # fmt: skip

    def draw(canvas: ImageDraw.ImageDraw, left: int, top: int) -> None:
        xy = [(float(x - left), float(y - top)) for x, y in points]
        canvas.line(xy, fill=255, width=stroke_width, joint="curve")

    return _render(height, width, box, draw)


def _draw_text(
    height: int, width: int, xy: tuple[int, int], text: str, font: ImageFont.FreeTypeFont
) -> Piece:
    left, top, right, bottom = font.getbbox(text)
    box = (xy[0] + left, xy[1] + top, xy[0] + right + 1, xy[1] + bottom + 1)

    def draw(canvas: ImageDraw.ImageDraw, left: int, top: int) -> None:
        canvas.fontmode = "1"  # no anti-aliasing: a pixel is ink or not
        canvas.text((xy[0] - left, xy[1] - top), text, font=font, fill=255)

    return _render(height, width, box, draw)


def _render(
    height: int,
    width: int,
    box: tuple[int, int, int, int],
    draw: Callable[[ImageDraw.ImageDraw, int, int], None],
) -> Piece:
    """What ``draw`` inks in ``box`` (left, top, right, bottom), clipped to the image inside
    its outermost ring of pixels, which stays known."""
    left, top = max(1, box[0]), max(1, box[1])
    right, bottom = min(width - 1, box[2]), min(height - 1, box[3])
    if right <= left or bottom <= top:
        return Piece(top=1, left=1, ink=np.zeros((0, 0), dtype=bool))
    canvas = Image.new("L", (right - left, bottom - top), 0)
    draw(ImageDraw.Draw(canvas), left, top)
    return Piece(top=top, left=left, ink=np.asarray(canvas) > 0)


def _cut(line: Piece, right: int) -> Piece:
    """The piece left of image column ``right``."""
    keep = min(max(0, right - line.left), line.ink.shape[1])
    return Piece(top=line.top, left=line.left, ink=line.ink[:, :keep])


def _font(size: int) -> ImageFont.FreeTypeFont:
    if not features.check("freetype2"):
        raise RuntimeError(
            "the text mask needs Pillow with FreeType (PIL.features.check('freetype2') is "
            "False here): install Pillow from its wheels, or use the scratch or square hole"
        )
    return ImageFont.load_default(size=size)


def _caption(rng: np.random.Generator) -> str:
    """A seeded caption: a camera's date stamp, a date, or one to three words, maybe a year."""
    year, month = int(rng.integers(1950, 2010)), int(rng.integers(1, 13))
    day, kind = int(rng.integers(1, 29)), int(rng.integers(0, 4))
    if kind == 0:
        return f"'{year % 100:02d} {month} {day}"
    if kind == 1:
        return f"{day:02d}.{month:02d}.{year}"
    words = rng.choice(len(CAPTION_WORDS), size=int(rng.integers(1, 4)), replace=False)
    caption = " ".join(CAPTION_WORDS[i] for i in words)
    return f"{caption} {year}" if kind == 2 else caption
