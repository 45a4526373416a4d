"""Image coding in memory for knitwork (Pillow + numpy only): bytes ↔ float32 pixels in [0, 1].

``decode_image`` / ``decode_mask`` / ``encode_image`` work on bytes named by any string (a file
path, a URI); ``knitwork.io`` wraps them with the file system and re-exports every public name
here.  Every problem with the input raises :class:`ImageError`, whose message starts with that
name, then says what is wrong and what to do about it.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import PurePosixPath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 50_000_000
_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
_FORMATS |= {".tif": "TIFF", ".tiff": "TIFF"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
_REEXPORT = "Re-export the file or remove it from the batch."
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as Pillow's "L"


class ImageError(ValueError):
    """A bad input image or mask; the message reads ``"<path>: <problem>. <what to do>"``."""

    def __init__(self, path: str | os.PathLike[str], problem: str, hint: str = "") -> None:
        self.path = os.fspath(path)
        self.problem = problem
        self.hint = hint
        super().__init__(f"{self.path}: {problem}." + (f" {hint}" if hint else ""))

    def __reduce__(self) -> tuple[type[ImageError], tuple[str, str, str]]:
        # Picklable (e.g. when raised inside a worker process).
        return (type(self), (self.path, self.problem, self.hint))


@dataclass(frozen=True, eq=False, kw_only=True)
class LoadedImage:
    """A decoded image.

    ``pixels`` is H×W×C float32 in [0, 1] (C = 1 for grayscale, 3 for colour; never alpha),
    ``alpha`` is H×W float32 in [0, 1] or None when the file has no alpha/transparency,
    ``bit_depth`` is 8 or 16 (precision of the decoded samples), ``path`` the name it was
    decoded under (the source file's path, or the name given to :func:`decode_image`).
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    path: str


_bomb_lock = threading.Lock()
_bomb_users = 0
_bomb_saved: int | None = None


@contextlib.contextmanager
def _no_pillow_bomb_check() -> Iterator[None]:
    """Disable Pillow's global decompression-bomb limit while we decode (we apply our own).

    Reference-counted so that concurrent loads restore the original value exactly once.
    """
    global _bomb_users, _bomb_saved
    with _bomb_lock:
        if _bomb_users == 0:
            _bomb_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _bomb_users += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        with _bomb_lock:
            _bomb_users -= 1
            if _bomb_users == 0:
                Image.MAX_IMAGE_PIXELS = _bomb_saved


def check_decode_arguments(mode: str, max_pixels: int) -> None:
    """ValueError for a bad ``mode`` or ``max_pixels`` (checked before any file is touched)."""
    if mode not in ("auto", "rgb", "gray"):
        raise ValueError(f"mode must be 'auto', 'rgb' or 'gray', not {mode!r}")
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, not {max_pixels}")


def _split_alpha(img: Image.Image, color_mode: str) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(img.convert(color_mode + "A"), dtype=np.float32) / 255.0
    return arr[..., :-1], arr[..., -1]


def _to_arrays(img: Image.Image, path: str) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Convert a decoded Pillow image to (pixels H×W×C, alpha or None, bit depth)."""
    mode, trns = img.mode, img.info.get("transparency")
    alpha: np.ndarray | None = None
    if mode.startswith("I;16") or mode == "I":
        raw = np.asarray(img)
        if mode == "I" and raw.size and (raw.min() < 0 or raw.max() > 65535):
            raise ImageError(
                path,
                "32-bit integer samples outside the 16-bit range",
                "Convert the file to 8- or 16-bit.",
            )
        pixels, depth = raw.astype(np.float32) / 65535.0, 16
        if isinstance(trns, int):
            alpha = (raw != trns).astype(np.float32)
    elif mode == "F":
        pixels, depth = np.asarray(img, dtype=np.float32), 16
        in_range = np.isfinite(pixels).all() and (pixels.min() >= 0) and (pixels.max() <= 1)
        if pixels.size and not in_range:
            raise ImageError(
                path,
                "floating-point samples are not all within [0, 1]",
                "Rescale the image to [0, 1] or save it as 8/16-bit.",
            )
    elif mode in ("LA", "La") or (mode == "L" and trns is not None):
        (pixels, alpha), depth = _split_alpha(img, "L"), 8
    elif mode in ("1", "L"):
        pixels, depth = np.asarray(img.convert("L"), dtype=np.float32) / 255.0, 8
    else:
        rgba_palette = mode == "P" and img.palette is not None and img.palette.mode == "RGBA"
        has_alpha = mode in ("RGBA", "RGBa", "PA") or trns is not None or rgba_palette
        try:
            if has_alpha:
                pixels, alpha = _split_alpha(img, "RGB")
            else:
                pixels = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        except (ValueError, OSError) as exc:
            raise ImageError(
                path,
                f"unsupported pixel mode {mode!r} ({exc})",
                "Convert the file to an 8-bit RGB or grayscale PNG.",
            ) from None
        depth = 8
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return pixels, alpha, depth


def decode_image(
    data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS, *, mode: str = "auto"
) -> LoadedImage:
    """Decode image bytes (PNG, JPEG, TIFF, WebP, ...) as float32 in [0, 1]; errors and
    ``LoadedImage.path`` name ``name`` (a file path, a URI, ...).

    ``mode``: "auto" keeps grayscale sources as 1 channel and colour as 3, "rgb" always gives 3
    channels, "gray" always 1 (ITU-R 601-2 luma).  EXIF orientation is applied.  The pixel count
    is checked against ``max_pixels`` from the header, before decoding.  Alpha (an alpha channel
    or palette/tRNS transparency) is returned separately in ``alpha``.

    Raises:
        ImageError: empty data, not an image, truncated or corrupt data, zero-size image, or
            more than ``max_pixels`` pixels.
        ValueError: bad ``mode`` or ``max_pixels`` argument.
    """
    check_decode_arguments(mode, max_pixels)
    name = os.fspath(name)
    if not data:
        raise ImageError(name, "empty file (0 bytes)", _REEXPORT)
    with _no_pillow_bomb_check():
        try:
            img = Image.open(BytesIO(data))
        except UnidentifiedImageError:
            raise ImageError(
                name, "not a recognised image file", "Use PNG, JPEG, TIFF or WebP."
            ) from None
        except _DECODE_ERRORS as exc:
            raise ImageError(name, f"corrupt image header ({exc})", _REEXPORT) from None
        with img:
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageError(name, f"zero-size image ({width}×{height})", _REEXPORT)
            if width * height > max_pixels:
                raise ImageError(
                    name,
                    f"image is {width}×{height} = {width * height:,} pixels, above the limit of "
                    f"{max_pixels:,} pixels",
                    "Downscale it, or raise the limit (pass max_pixels / --max-pixels).",
                )
            try:
                img.load()
            except _DECODE_ERRORS as exc:
                raise ImageError(
                    name, f"truncated or corrupt image data (cannot decode: {exc})", _REEXPORT
                ) from None
            try:
                ImageOps.exif_transpose(img, in_place=True)
            except _DECODE_ERRORS as exc:
                warnings.warn(f"{name}: unreadable EXIF orientation ignored ({exc})", stacklevel=2)
            pixels, alpha, depth = _to_arrays(img, name)
    if mode == "rgb" and pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    elif mode == "gray" and pixels.shape[2] == 3:
        pixels = (pixels @ _LUMA)[..., None]
    pixels = np.ascontiguousarray(np.clip(pixels, 0.0, 1.0), dtype=np.float32)
    if alpha is not None:
        alpha = np.ascontiguousarray(alpha, dtype=np.float32)
    return LoadedImage(pixels=pixels, alpha=alpha, bit_depth=depth, path=name)


def decode_mask(
    data: bytes, name: str, shape: tuple[int, ...], max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode an inpainting mask; return an H×W bool array, True where the pixel is KNOWN.

    Convention (as OpenCV / LaMa): after conversion to grayscale (luminance only; any alpha
    channel is ignored), white/nonzero pixels with value >= half the range mark the HOLE to
    fill, black pixels mark known pixels.  ``shape`` is the image's (H, W, ...); extra trailing
    entries are ignored.

    Raises:
        ImageError: as :func:`decode_image`, a size mismatch with ``shape``, or no known pixel.
    """
    loaded = decode_image(data, name, max_pixels, mode="gray")
    height, width = int(shape[0]), int(shape[1])
    mask_h, mask_w = loaded.pixels.shape[:2]
    if (mask_h, mask_w) != (height, width):
        raise ImageError(
            loaded.path,
            f"mask is {mask_w}×{mask_h} (W×H) but the image is {width}×{height}",
            "Use a mask with exactly the image's size.",
        )
    known = loaded.pixels[..., 0] < 0.5
    if not known.any():
        raise ImageError(
            loaded.path,
            "the mask covers the whole image: nothing to learn from",
            "Black marks known pixels, white marks the hole.",
        )
    return known


def known_from_alpha(loaded: LoadedImage) -> np.ndarray:
    """Return an H×W bool array, True where alpha >= 0.5 (transparent pixels are the hole).

    Raises:
        ImageError: the image has no alpha channel, or every pixel is transparent.
    """
    if loaded.alpha is None:
        raise ImageError(
            loaded.path,
            "image has no alpha channel to mark the hole",
            "Pass a mask file, or make the hole transparent.",
        )
    known = loaded.alpha >= 0.5
    if not known.any():
        raise ImageError(
            loaded.path,
            "every pixel is transparent: nothing to learn from",
            "Only the hole should be transparent.",
        )
    return known


def _checked_float(pixels: np.ndarray) -> np.ndarray:
    arr = np.asarray(pixels)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"pixels must be floating point in [0, 1], got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError("pixels contain NaN or infinite values")
    return np.clip(arr.astype(np.float64, copy=False), 0.0, 1.0)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Float pixels in [0, 1] → uint8 (clipped, rounded half up to the nearest level)."""
    return np.floor(_checked_float(pixels) * 255.0 + 0.5).astype(np.uint8)


def _suffix(name: str) -> str:
    return PurePosixPath(name).suffix or (name if name.startswith(".") else "")


def output_format(name_or_suffix: str | os.PathLike[str]) -> str:
    """The format :func:`encode_image` writes for this file name, path, URI or bare suffix
    (``PNG``, ``JPEG``, ``TIFF``, ``WEBP``): check an output's name before the work that fills
    it. ValueError naming the extension and the supported ones when we cannot write it."""
    name = os.fspath(name_or_suffix)
    suffix = _suffix(name)
    fmt = _FORMATS.get(suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{name}: unsupported extension {suffix!r}; use one of " + ", ".join(_FORMATS)
        )
    return fmt


def holds_16_bit(name_or_suffix: str | os.PathLike[str]) -> bool:
    """Whether this output's format keeps 16-bit (grey) samples: PNG and TIFF do."""
    return output_format(name_or_suffix) in ("PNG", "TIFF")


@contextlib.contextmanager
def naming(name: str | os.PathLike[str]) -> Iterator[None]:
    """Work on one input named ``name``: a ValueError raised inside whose message does not name
    it yet (the image is too small for the patches, for a hole, ...) gets ``"NAME: "`` put in
    front, its type kept, so that every problem with an input says which input."""
    name = os.fspath(name)
    try:
        yield
    except ValueError as err:
        if not isinstance(err, ImageError) and name not in str(err):
            err.args = (f"{name}: {err}",)
        raise


def encode_image(pixels: np.ndarray, name_or_suffix: str, bit_depth: int = 8) -> bytes:
    """Encode H×W, H×W×1 or H×W×3 float pixels in [0, 1] (clipped) as image bytes.

    The format comes from the extension of ``name_or_suffix`` (a file name, path or URI such as
    ``out.png``, or a bare suffix such as ``.png``): .png, .jpg/.jpeg, .tif/.tiff, .webp (any
    case); JPEG and WebP use quality 95.  ``bit_depth=16`` is only supported for grayscale
    PNG/TIFF (Pillow cannot write 16-bit colour).

    Raises:
        ValueError: unsupported extension, bit depth, shape or dtype, or Pillow cannot encode.
    """
    name = os.fspath(name_or_suffix)
    fmt = output_format(name)
    suffix = _suffix(name)
    arr = np.asarray(pixels)
    if arr.ndim == 3 and arr.shape[2] in (1, 3):
        arr = arr[..., 0] if arr.shape[2] == 1 else arr
    elif arr.ndim != 2:
        raise ValueError(f"{name}: pixels must be H×W, H×W×1 or H×W×3, got shape {arr.shape}")
    if bit_depth == 8:
        img = Image.fromarray(to_uint8(arr))
    elif bit_depth == 16:
        if fmt not in ("PNG", "TIFF"):
            raise ValueError(f"{name}: 16-bit output needs .png or .tif/.tiff, not {suffix}")
        if arr.ndim == 3:
            raise ValueError(
                f"{name}: Pillow cannot write 16-bit colour images; "
                "use bit_depth=8 or a single channel"
            )
        img = Image.fromarray(np.floor(_checked_float(arr) * 65535.0 + 0.5).astype(np.uint16))
    else:
        raise ValueError(f"bit_depth must be 8 or 16, not {bit_depth}")
    options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    buffer = BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()
