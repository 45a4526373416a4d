"""Tests for knitwork.io: decoding, masks, errors and atomic saving (all images generated here)."""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from knitwork import io as kio
from knitwork.io import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    LoadedImage,
    known_from_alpha,
    load_image,
    load_mask,
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
    pixels, alpha, depth = kio._to_arrays(big, "x.png")
    assert depth == 16 and alpha is None
    np.testing.assert_allclose(pixels[..., 0], data / 65535.0, atol=1e-7)
    pixels, _, depth = kio._to_arrays(Image.fromarray(data.astype(np.int32)), "x.png")
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


# ----------------------------------------------------------------------------- errors


def assert_image_error(exc: pytest.ExceptionInfo[ImageError], path: Path, phrase: str) -> None:
    message = str(exc.value)
    assert message.startswith(str(path) + ": ")
    assert path.name in message
    assert phrase in message
    assert exc.value.path == str(path)
    assert phrase in exc.value.problem or phrase in exc.value.hint


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    with pytest.raises(ImageError) as exc:
        load_image(path)
    assert_image_error(exc, path, "file not found")


def test_directory(tmp_path: Path) -> None:
    path = tmp_path / "folder.png"
    path.mkdir()
    with pytest.raises(ImageError) as exc:
        load_image(path)
    assert_image_error(exc, path, "is a directory")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError) as exc:
        load_image(path)
    assert_image_error(exc, path, "empty file")


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(ImageError) as exc:
        load_image(path)
    assert_image_error(exc, path, "not a recognised image")


def test_truncated_png(tmp_path: Path) -> None:
    path = write(Image.fromarray(rgb8(64, 64)), tmp_path / "cut.png")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as exc:
        load_image(path)
    assert_image_error(exc, path, "truncated or corrupt")
    assert "Re-export" in str(exc.value)


def test_pixel_limit(tmp_path: Path) -> None:
    path = write(Image.fromarray(rgb8(10, 20)), tmp_path / "big.png")
    with pytest.raises(ImageError) as exc:
        load_image(path, max_pixels=100)
    assert_image_error(exc, path, "20×10")
    assert "above the limit of 100 pixels" in str(exc.value)
    assert "--max-pixels" in str(exc.value) and "max_pixels" in str(exc.value)
    assert load_image(path, max_pixels=200).pixels.shape == (10, 20, 3)


def test_pixel_limit_checked_before_decoding(tmp_path: Path) -> None:
    path = write(Image.fromarray(rgb8(64, 64)), tmp_path / "cut.png")
    path.write_bytes(path.read_bytes()[:200])  # header intact, data truncated
    with pytest.raises(ImageError, match="above the limit"):
        load_image(path, max_pixels=10)


def test_huge_header_gives_our_error_not_pillows(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(raw_png(100_000, 100_000, 8, 0, b"\x00" * 10)[:-12])
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError) as exc:
        load_image(path)
    assert_image_error(exc, path, "100000×100000")
    assert f"{DEFAULT_MAX_PIXELS:,}" in str(exc.value)
    assert before == Image.MAX_IMAGE_PIXELS


def test_pillow_global_limit_ignored_and_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(Image.fromarray(rgb8(10, 10)), tmp_path / "ok.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(path).pixels.shape == (10, 10, 3)
    assert Image.MAX_IMAGE_PIXELS == 10


def test_bad_arguments(tmp_path: Path) -> None:
    path = write(Image.fromarray(rgb8()), tmp_path / "a.png")
    with pytest.raises(ValueError, match="mode"):
        load_image(path, mode="cmyk")
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(path, max_pixels=0)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_no_file_handles_left_open(tmp_path: Path) -> None:
    good = write(Image.fromarray(rgb8()), tmp_path / "a.png")
    cut = write(Image.fromarray(rgb8(64, 64)), tmp_path / "cut.png")
    cut.write_bytes(cut.read_bytes()[:300])
    text = tmp_path / "t.png"
    text.write_text("hello")
    before = open_fds()
    for _ in range(3):
        load_image(good)
        for bad, kwargs in ((cut, {}), (text, {}), (good, {"max_pixels": 1})):
            with pytest.raises(ImageError):
                load_image(bad, **kwargs)
        save_image(tmp_path / "out.png", np.zeros((2, 2)))
    assert open_fds() == before


def test_image_error_is_value_error_and_picklable() -> None:
    err = ImageError("photo.png", "truncated or corrupt image data", "Re-export the file.")
    assert isinstance(err, ValueError)
    assert str(err) == "photo.png: truncated or corrupt image data. Re-export the file."
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.path, copy.problem, str(copy)) == (err.path, err.problem, str(err))


# ----------------------------------------------------------------------------- masks


def test_load_mask_convention(tmp_path: Path) -> None:
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[2:4, 3:6] = 255  # white = hole
    mask[0, 0] = 127  # below half: known
    mask[0, 1] = 128  # half or above: hole
    path = write(Image.fromarray(mask), tmp_path / "m.png")
    known = load_mask(path, (6, 8))
    assert known.dtype == np.bool_ and known.shape == (6, 8)
    expected = mask < 128
    np.testing.assert_array_equal(known, expected)
    assert not known[2:4, 3:6].any() and known[0, 0] and not known[0, 1]
    np.testing.assert_array_equal(load_mask(path, (6, 8, 3)), expected)


def test_load_mask_colour_and_alpha_ignored(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent, but alpha is ignored: luminance only
    rgba[1, 1, :3] = 255
    known = load_mask(write(Image.fromarray(rgba), tmp_path / "m.png"), (4, 4))
    assert known.sum() == 15 and not known[1, 1]


def test_mask_size_mismatch(tmp_path: Path) -> None:
    path = write(Image.fromarray(np.zeros((6, 8), dtype=np.uint8)), tmp_path / "m.png")
    with pytest.raises(ImageError) as exc:
        load_mask(path, (10, 12))
    assert_image_error(exc, path, "mask is 8×6 (W×H) but the image is 12×10")


def test_mask_without_known_pixel(tmp_path: Path) -> None:
    path = write(Image.fromarray(np.full((6, 8), 255, dtype=np.uint8)), tmp_path / "white.png")
    with pytest.raises(ImageError) as exc:
        load_mask(path, (6, 8))
    assert_image_error(exc, path, "the mask covers the whole image")


def test_mask_errors_from_load_image(tmp_path: Path) -> None:
    path = tmp_path / "missing_mask.png"
    with pytest.raises(ImageError) as exc:
        load_mask(path, (2, 2))
    assert_image_error(exc, path, "file not found")


def test_known_from_alpha(tmp_path: Path) -> None:
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[1:3, 2, 3] = 0
    rgba[0, 0, 3] = 127  # below half: hole
    rgba[0, 1, 3] = 128  # half or above: known
    known = known_from_alpha(load_image(write(Image.fromarray(rgba), tmp_path / "a.png")))
    assert known.dtype == np.bool_
    np.testing.assert_array_equal(known, rgba[..., 3] >= 128)


def test_known_from_alpha_fully_transparent(tmp_path: Path) -> None:
    path = write(Image.fromarray(np.zeros((4, 4, 4), dtype=np.uint8)), tmp_path / "clear.png")
    with pytest.raises(ImageError) as exc:
        known_from_alpha(load_image(path))
    assert_image_error(exc, path, "every pixel is transparent")


def test_known_from_alpha_without_alpha(tmp_path: Path) -> None:
    path = write(Image.fromarray(rgb8()), tmp_path / "opaque.png")
    with pytest.raises(ImageError) as exc:
        known_from_alpha(load_image(path))
    assert_image_error(exc, path, "no alpha channel")


# ----------------------------------------------------------------------------- saving


def test_to_uint8_clips_and_rounds() -> None:
    values = np.array([-0.5, 0.0, 0.5 / 255, 0.49 / 255, 1.0, 7.0, 100.5 / 255])
    np.testing.assert_array_equal(to_uint8(values), [0, 0, 1, 0, 255, 255, 101])
    assert to_uint8(np.zeros((2, 3, 3), dtype=np.float32)).dtype == np.uint8
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(np.array([np.nan]))
    with pytest.raises(ValueError, match="floating point"):
        to_uint8(np.array([1, 2], dtype=np.uint8))


def test_save_accepts_2d_and_1_channel_and_clips(tmp_path: Path) -> None:
    pixels = np.array([[-1.0, 0.25], [0.5, 2.0]])
    save_image(tmp_path / "a.png", pixels)
    save_image(tmp_path / "b.png", pixels[..., None])
    for name in ("a.png", "b.png"):
        with Image.open(tmp_path / name) as img:
            assert img.mode == "L"
            np.testing.assert_array_equal(np.asarray(img), [[0, 64], [128, 255]])


def test_save_creates_parents_and_leaves_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "deep" / "er" / "out.png"
    save_image(dest, smooth_rgb())
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.png"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask
    save_image(dest, np.zeros((3, 3, 3)))  # overwrite in place
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.png"]
    assert load_image(dest).pixels.shape == (3, 3, 3)


@pytest.mark.parametrize(
    ("name", "pixels", "bit_depth", "phrase"),
    [
        ("out.bmp", np.zeros((2, 2)), 8, "unsupported extension"),
        ("out", np.zeros((2, 2)), 8, "unsupported extension"),
        ("out.png", np.zeros((2, 2, 3)), 16, "16-bit colour"),
        ("out.jpg", np.zeros((2, 2)), 16, "16-bit output"),
        ("out.png", np.zeros((2, 2)), 12, "bit_depth"),
        ("out.png", np.zeros((2, 2, 4)), 8, "shape"),
        ("out.png", np.zeros((2, 2), dtype=np.uint8), 8, "floating point"),
    ],
)
def test_save_failure_leaves_nothing(
    tmp_path: Path, name: str, pixels: np.ndarray, bit_depth: int, phrase: str
) -> None:
    with pytest.raises(ValueError, match=phrase) as exc:
        save_image(tmp_path / name, pixels, bit_depth=bit_depth)
    assert not isinstance(exc.value, ImageError)
    assert list(tmp_path.iterdir()) == []


def test_unsupported_extension_lists_supported(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as exc:
        save_image(tmp_path / "x.gif", np.zeros((2, 2)))
    for ext in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"):
        assert ext in str(exc.value)


def test_save_error_during_encoding_keeps_old_file(tmp_path: Path) -> None:
    dest = tmp_path / "wide.webp"
    save_image(dest, np.zeros((4, 4, 3)))
    before = sha(dest)
    with pytest.raises(ValueError, match="WebP"):  # Pillow: image too wide for WebP
        save_image(dest, np.zeros((1, 20_000, 3), dtype=np.float32))
    assert sha(dest) == before
    assert [p.name for p in tmp_path.iterdir()] == ["wide.webp"]


@pytest.mark.parametrize("mode", ["LAB", "YCbCr", "HSV", "RGBX"])
def test_other_colour_modes_have_no_spurious_alpha(mode: str) -> None:
    img = Image.new(mode, (3, 2), (50, 60, 70) if mode != "RGBX" else (50, 60, 70, 0))
    pixels, alpha, depth = kio._to_arrays(img, "x.tif")
    assert pixels.shape == (2, 3, 3) and alpha is None and depth == 8
    np.testing.assert_array_equal(to_uint8(pixels[..., 0]), np.asarray(img.convert("RGB"))[..., 0])
