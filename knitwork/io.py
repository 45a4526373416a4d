"""Image and mask files for knitwork: the file-system side of :mod:`knitwork.imagecodec`.

Every problem with an input file raises :class:`ImageError`, whose message starts with the
file path, then says what is wrong and what to do about it.  Pixels are handled as float32
arrays in ``[0, 1]``; writes are atomic (temporary file in the same directory + ``os.replace``).
The coding itself works on bytes in :mod:`knitwork.imagecodec` (``decode_image``,
``decode_mask``, ``encode_image``, re-exported here); ``load_image``, ``load_mask`` and
``save_image`` are thin wrappers that add the file system.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from knitwork.imagecodec import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    LoadedImage,
    check_decode_arguments,
    decode_image,
    decode_mask,
    encode_image,
    holds_16_bit,
    known_from_alpha,
    naming,
    output_format,
    to_uint8,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageError",
    "LoadedImage",
    "atomic_file",
    "decode_image",
    "decode_mask",
    "encode_image",
    "holds_16_bit",
    "known_from_alpha",
    "load_image",
    "load_mask",
    "naming",
    "output_format",
    "reduce_to",
    "save_image",
    "to_uint8",
]


def _read_file(path: str) -> bytes:
    """The file's bytes (b"" for an empty file, which the decoder reports), or an ImageError."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError(path, "file not found", "Check the path and spelling.") from None
    except OSError as exc:
        raise ImageError(path, f"cannot access file ({exc.strerror})", "Check it.") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(path, "is a directory, not an image file", "Pass an image file.")
    if st.st_size == 0:
        return b""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({exc.strerror})", "Check it.") from None


def load_image(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS, mode: str = "auto"
) -> LoadedImage:
    """Load an image file: :func:`decode_image` on its bytes.  The file is only read.

    Raises:
        ImageError: missing/unreadable/empty file, directory, or as :func:`decode_image`.
        ValueError: bad ``mode`` or ``max_pixels`` argument.
    """
    check_decode_arguments(mode, max_pixels)
    spath = os.fspath(path)
    return decode_image(_read_file(spath), spath, max_pixels, mode=mode)


def load_mask(
    path: str | os.PathLike[str], shape: tuple[int, ...], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Load a mask file: :func:`decode_mask` on its bytes (errors as :func:`load_image`)."""
    check_decode_arguments("gray", max_pixels)
    spath = os.fspath(path)
    return decode_mask(_read_file(spath), spath, shape, max_pixels)


def reduce_to(pixels: np.ndarray, max_side: int | None) -> np.ndarray:
    """The image Lanczos-downscaled (via 8 bits) to a longest side of ``max_side``; unchanged
    when it is already that small or ``max_side`` is None (the benchmarks' reduced sizes)."""
    height, width = pixels.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return pixels
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    grey = pixels.shape[2] == 1
    img = Image.fromarray(to_uint8(pixels[:, :, 0] if grey else pixels))
    small = np.asarray(img.resize(size, Image.LANCZOS), dtype=np.float32) / 255.0
    return small[:, :, None] if grey else small


def _file_mode(dest: Path) -> int:
    """Permission bits for the new file: the destination's if it exists, else 0o666 & ~umask."""
    with contextlib.suppress(OSError):
        return os.stat(dest).st_mode & 0o7777
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def save_image(path: str | os.PathLike[str], pixels: np.ndarray, *, bit_depth: int = 8) -> None:
    """Save pixels atomically: :func:`encode_image` (format from the extension) in memory, then
    the bytes are written to a temporary file in the destination directory, fsynced and renamed
    over ``path``.  Parent directories are created.  On any error ``path`` is left untouched.

    Raises:
        ValueError: as :func:`encode_image`.
    """
    data = encode_image(pixels, os.fspath(path), bit_depth)
    with atomic_file(path) as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Open a temporary file beside ``path`` for binary writing; on success it is fsynced and
    renamed over ``path``, on any error removed, leaving ``path`` untouched. Parent directories
    are created."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    mode = _file_mode(dest)
    tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed/removed explicitly
        dir=dest.parent, prefix=f".{dest.stem}.", suffix=dest.suffix, delete=False
    )
    try:
        with tmp:
            yield tmp
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp.name, mode)
        os.replace(tmp.name, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp.name)
        raise
