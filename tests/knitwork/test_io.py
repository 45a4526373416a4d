"""Tests for knitwork.io: decoding, masks, errors and atomic saving (all images generated here)."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from knitwork import imagecodec
from knitwork.io import (
    ImageError,
    LoadedImage,
    decode_image,
    encode_image,
    known_from_alpha,
    load_image,
    save_image,
    to_uint8,
)

RNG = np.random.default_rng(0)


def rgb8(h: int = 12, w: int = 16) -> np.ndarray:
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def gray8(h: int = 12, w: int = 16) -> np.ndarray:
    return RNG.integers(0, 256, size=(h, w), dtype=np.uint8)


def smooth_rgb(h: int = 32, w: int = 32) -> np.ndarray:
    """A smooth float image (JPEG/WebP compress it with small errors)."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    return np.stack([x, y, 0.5 * (x + y)], axis=-1).astype(np.float32)


def write(img: Image.Image, path: Path, **kwargs: object) -> Path:
    img.save(path, **kwargs)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, bit_depth: int, color_type: int, raw: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff"])
@pytest.mark.parametrize("gray", [False, True])
def test_lossless_round_trip_8bit(tmp_path: Path, ext: str, gray: bool) -> None:
    data = gray8() if gray else rgb8()
    path = tmp_path / f"img{ext}"
    save_image(path, data.astype(np.float32) / 255.0)
    loaded = load_image(path)
    assert isinstance(loaded, LoadedImage)
    assert loaded.pixels.dtype == np.float32
    assert loaded.pixels.shape == (12, 16, 1 if gray else 3)
    assert loaded.bit_depth == 8 and loaded.alpha is None and loaded.path == str(path)
    expected = data[..., None] if gray else data
    np.testing.assert_array_equal(to_uint8(loaded.pixels), expected)


def test_webp_lossless_source_exact(tmp_path: Path) -> None:
    data = rgb8()
    path = write(Image.fromarray(data), tmp_path / "a.webp", lossless=True)
    np.testing.assert_array_equal(to_uint8(load_image(path).pixels), data)


@pytest.mark.parametrize("ext", [".jpg", ".jpeg", ".webp"])
def test_lossy_round_trip_approx(tmp_path: Path, ext: str) -> None:
    pixels = smooth_rgb()
    path = tmp_path / f"img{ext.upper()}"  # extension matching is case-insensitive
    save_image(path, pixels)
    loaded = load_image(path)
    assert loaded.pixels.shape == pixels.shape and loaded.bit_depth == 8
    assert np.abs(loaded.pixels - pixels).mean() < 0.02


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_gray_round_trip_keeps_precision(tmp_path: Path, ext: str) -> None:
    ramp = np.linspace(0.0, 1.0, 64 * 64, dtype=np.float64).reshape(64, 64)
    path = tmp_path / f"deep{ext}"
    save_image(path, ramp, bit_depth=16)
    with Image.open(path) as img:
        assert img.mode.startswith("I;16")
    loaded = load_image(path)
    assert loaded.bit_depth == 16 and loaded.pixels.shape == (64, 64, 1)
    got = loaded.pixels[..., 0]
    assert np.abs(got - ramp).max() <= 0.5 / 65535 + 1e-7
    # Not quantised to 8 bits: many values lie between 8-bit levels.
    assert np.abs(got * 255 - np.round(got * 255)).max() > 0.1
    assert len(np.unique(got)) > 256


def test_16bit_png_written_by_pillow(tmp_path: Path) -> None:
    data = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000 + 7).astype(np.uint16)
    path = write(Image.fromarray(data), tmp_path / "d.png")
    loaded = load_image(path)
    assert loaded.bit_depth == 16
    np.testing.assert_allclose(loaded.pixels[..., 0], data / 65535.0, atol=1e-7)


def test_16bit_rgb_png_decoded_by_pillow(tmp_path: Path) -> None:
    data = RNG.integers(0, 65536, size=(3, 4, 3), dtype=np.uint16)
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in data)
    path = tmp_path / "rgb16.png"
    path.write_bytes(raw_png(4, 3, 16, 2, raw))
    loaded = load_image(path)
    assert loaded.pixels.shape == (3, 4, 3)
    # Pillow reduces 16-bit colour to 8 bits; bit_depth reports the decoded precision.
    assert loaded.bit_depth == 8
    assert np.abs(loaded.pixels - data / 65535.0).max() < 1.5 / 255


def test_16bit_variants_in_memory() -> None:
    data = np.array([[0, 1, 256], [65535, 40000, 2]], dtype=np.uint16)
    big = Image.frombytes("I;16B", (3, 2), data.astype(">u2").tobytes())
    pixels, alpha, depth = imagecodec._to_arrays(big, "x.png")
    assert depth == 16 and alpha is None
    np.testing.assert_allclose(pixels[..., 0], data / 65535.0, atol=1e-7)
    pixels, _, depth = imagecodec._to_arrays(Image.fromarray(data.astype(np.int32)), "x.png")
    assert depth == 16
    np.testing.assert_allclose(pixels[..., 0], data / 65535.0, atol=1e-7)


def test_mode_i_tiff_and_out_of_range(tmp_path: Path) -> None:
    data = np.array([[0, 1000], [65535, 30000]], dtype=np.int32)
    path = write(Image.fromarray(data), tmp_path / "i.tif")
    loaded = load_image(path)
    assert loaded.bit_depth == 16
    np.testing.assert_allclose(loaded.pixels[..., 0], data / 65535.0, atol=1e-7)
    bad = write(Image.fromarray(data * 100), tmp_path / "i32.tif")
    with pytest.raises(ImageError, match="16-bit range"):
        load_image(bad)


# ----------------------------------------------------------------------------- modes


def test_mode_l_auto_rgb_gray(tmp_path: Path) -> None:
    data = gray8()
    path = write(Image.fromarray(data), tmp_path / "l.png")
    assert load_image(path).pixels.shape == (12, 16, 1)
    rgb = load_image(path, mode="rgb").pixels
    assert rgb.shape == (12, 16, 3)
    for c in range(3):
        np.testing.assert_array_equal(to_uint8(rgb[..., c]), data)
    assert load_image(path, mode="gray").pixels.shape == (12, 16, 1)


def test_mode_gray_from_rgb_matches_pillow(tmp_path: Path) -> None:
    data = rgb8()
    path = write(Image.fromarray(data), tmp_path / "c.png")
    gray = load_image(path, mode="gray").pixels
    assert gray.shape == (12, 16, 1)
    pil_l = np.asarray(Image.fromarray(data).convert("L"), dtype=np.float32) / 255
    assert np.abs(gray[..., 0] - pil_l).max() <= 1.01 / 255


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_alpha_returned_separately(tmp_path: Path, mode: str) -> None:
    channels = 2 if mode == "LA" else 4
    data = RNG.integers(0, 256, size=(6, 7, channels), dtype=np.uint8)
    path = write(Image.fromarray(data, mode=mode), tmp_path / "a.png")
    loaded = load_image(path)
    assert loaded.pixels.shape == (6, 7, channels - 1)
    assert loaded.alpha is not None and loaded.alpha.shape == (6, 7)
    assert loaded.alpha.dtype == np.float32
    np.testing.assert_array_equal(to_uint8(loaded.alpha), data[..., -1])
    np.testing.assert_array_equal(to_uint8(loaded.pixels), data[..., :-1])


def palette_image() -> tuple[Image.Image, np.ndarray, np.ndarray]:
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], dtype=np.uint8)
    index = RNG.integers(0, 4, size=(5, 6), dtype=np.uint8)
    img = Image.fromarray(index, mode="P")
    img.putpalette(palette.ravel().tolist())
    return img, index, palette


def test_palette_without_transparency(tmp_path: Path) -> None:
    img, index, palette = palette_image()
    loaded = load_image(write(img, tmp_path / "p.png"))
    assert loaded.alpha is None and loaded.pixels.shape == (5, 6, 3)
    np.testing.assert_array_equal(to_uint8(loaded.pixels), palette[index])


def test_palette_with_transparency(tmp_path: Path) -> None:
    img, index, palette = palette_image()
    path = write(img, tmp_path / "pt.png", transparency=2)
    loaded = load_image(path)
    assert loaded.alpha is not None
    np.testing.assert_array_equal(loaded.alpha == 0, index == 2)
    np.testing.assert_array_equal(to_uint8(loaded.pixels), palette[index])
    np.testing.assert_array_equal(known_from_alpha(loaded), index != 2)


def test_gray_and_rgb_trns_give_alpha(tmp_path: Path) -> None:
    data = np.array([[0, 10], [10, 20]], dtype=np.uint8)
    loaded = load_image(write(Image.fromarray(data), tmp_path / "lt.png", transparency=10))
    assert loaded.pixels.shape == (2, 2, 1)
    np.testing.assert_array_equal(loaded.alpha, [[1, 0], [0, 1]])
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (1, 2, 3)
    loaded = load_image(write(Image.fromarray(rgb), tmp_path / "rt.png", transparency=(1, 2, 3)))
    np.testing.assert_array_equal(loaded.alpha, [[0, 1], [1, 1]])


def test_mode_1(tmp_path: Path) -> None:
    bits = RNG.integers(0, 2, size=(8, 9)).astype(bool)
    path = write(Image.fromarray(bits), tmp_path / "b.png")
    with Image.open(path) as img:
        assert img.mode == "1"
    loaded = load_image(path)
    assert loaded.pixels.shape == (8, 9, 1) and loaded.bit_depth == 8
    np.testing.assert_array_equal(loaded.pixels[..., 0], bits.astype(np.float32))


def test_cmyk(tmp_path: Path) -> None:
    cmyk = Image.fromarray(RNG.integers(0, 256, size=(6, 5, 4), dtype=np.uint8), mode="CMYK")
    path = write(cmyk, tmp_path / "c.tif")
    loaded = load_image(path)
    assert loaded.pixels.shape == (6, 5, 3) and loaded.alpha is None
    np.testing.assert_array_equal(to_uint8(loaded.pixels), np.asarray(cmyk.convert("RGB")))
    assert load_image(write(cmyk, tmp_path / "c.jpg")).pixels.shape == (6, 5, 3)


def test_mode_f(tmp_path: Path) -> None:
    data = RNG.random((4, 5), dtype=np.float32)
    path = write(Image.fromarray(data), tmp_path / "f.tif")
    loaded = load_image(path)
    assert loaded.bit_depth == 16 and loaded.pixels.shape == (4, 5, 1)
    np.testing.assert_array_equal(loaded.pixels[..., 0], data)
    bad = write(Image.fromarray(data * 255), tmp_path / "f255.tif")
    with pytest.raises(ImageError, match=r"within \[0, 1\]"):
        load_image(bad)


@pytest.mark.parametrize(("orientation", "corner"), [(6, (0, -1)), (8, (-1, 0)), (3, (-1, -1))])
def test_exif_orientation(tmp_path: Path, orientation: int, corner: tuple[int, int]) -> None:
    data = np.zeros((20, 40, 3), dtype=np.uint8)
    data[:6, :6] = (255, 255, 255)  # mark the stored top-left corner
    img = Image.fromarray(data)
    exif = img.getexif()
    exif[0x0112] = orientation
    path = write(img, tmp_path / "o.jpg", exif=exif, quality=95)
    before = sha(path)
    pixels = load_image(path).pixels
    expected_shape = (20, 40, 3) if orientation == 3 else (40, 20, 3)
    assert pixels.shape == expected_shape
    assert pixels[corner].mean() > 0.9
    assert pixels[0, 0].mean() < 0.1 or corner == (0, 0)
    assert sha(path) == before


def test_loading_never_modifies_file(tmp_path: Path) -> None:
    paths = [
        write(Image.fromarray(rgb8()), tmp_path / "a.png"),
        write(Image.fromarray(rgb8()), tmp_path / "b.jpg"),
        write(Image.fromarray(gray8()), tmp_path / "c.tif"),
    ]
    hashes = [sha(p) for p in paths]
    mtimes = [p.stat().st_mtime_ns for p in paths]
    for p in paths:
        load_image(p, mode="rgb")
    assert [sha(p) for p in paths] == hashes
    assert [p.stat().st_mtime_ns for p in paths] == mtimes


@pytest.mark.parametrize("mode", ["LAB", "YCbCr", "HSV", "RGBX"])
def test_other_colour_modes_have_no_spurious_alpha(mode: str) -> None:
    img = Image.new(mode, (3, 2), (50, 60, 70) if mode != "RGBX" else (50, 60, 70, 0))
    pixels, alpha, depth = imagecodec._to_arrays(img, "x.tif")
    assert pixels.shape == (2, 3, 3) and alpha is None and depth == 8
    np.testing.assert_array_equal(to_uint8(pixels[..., 0]), np.asarray(img.convert("RGB"))[..., 0])


# ----------------------------------------------------------------------------- in memory

URI = "s3://bucket/in/photo.png"


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["out.png", ".png", "s3://b/x/y.PNG", "a.tif", ".tiff"])
@pytest.mark.parametrize("gray", [False, True])
def test_bytes_round_trip_8bit(name: str, gray: bool) -> None:
    data = gray8() if gray else rgb8()
    encoded = encode_image(data.astype(np.float32) / 255.0, name)
    loaded = decode_image(encoded, URI)
    assert loaded.path == URI and loaded.bit_depth == 8 and loaded.alpha is None
    expected = data[..., None] if gray else data
    np.testing.assert_array_equal(to_uint8(loaded.pixels), expected)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_bytes_round_trip_16bit_gray(suffix: str) -> None:
    ramp = np.linspace(0.0, 1.0, 32 * 48).reshape(32, 48)
    loaded = decode_image(encode_image(ramp, "deep" + suffix, bit_depth=16), "deep")
    assert loaded.bit_depth == 16 and loaded.pixels.shape == (32, 48, 1)
    assert np.abs(loaded.pixels[..., 0] - ramp).max() <= 0.5 / 65535 + 1e-7


@pytest.mark.parametrize(
    ("suffix", "fmt"), [(".jpg", "JPEG"), (".jpeg", "JPEG"), (".webp", "WEBP")]
)
def test_bytes_lossy_formats(suffix: str, fmt: str) -> None:
    pixels = smooth_rgb()
    encoded = encode_image(pixels, suffix)
    with Image.open(io.BytesIO(encoded)) as img:
        assert img.format == fmt
    assert np.abs(decode_image(encoded, "x", mode="rgb").pixels - pixels).mean() < 0.02


@pytest.mark.parametrize("name", ["a.png", "b.jpg", "c.tiff", "d.webp"])
def test_save_image_writes_exactly_the_encoded_bytes(tmp_path: Path, name: str) -> None:
    pixels = smooth_rgb()
    save_image(tmp_path / name, pixels)
    assert (tmp_path / name).read_bytes() == encode_image(pixels, name)
    file_loaded = load_image(tmp_path / name)
    memory = decode_image((tmp_path / name).read_bytes(), str(tmp_path / name))
    np.testing.assert_array_equal(file_loaded.pixels, memory.pixels)
    assert file_loaded.path == memory.path
