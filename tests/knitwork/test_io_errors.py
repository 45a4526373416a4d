"""knitwork.io: clear errors that name the file, masks, and atomic saving."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from knitwork.io import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    decode_image,
    decode_mask,
    encode_image,
    known_from_alpha,
    load_image,
    load_mask,
    save_image,
    to_uint8,
)
from tests.knitwork.test_io import (
    URI,
    open_fds,
    png_bytes,
    raw_png,
    rgb8,
    sha,
    smooth_rgb,
    write,
)

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


# ----------------------------------------------------------------------------- in memory


@pytest.mark.parametrize(
    ("data", "phrase"),
    [
        (b"", "empty file (0 bytes)"),
        (b"this is not an image", "not a recognised image file"),
        (png_bytes(rgb8(64, 64))[:300], "truncated or corrupt image data"),
    ],
)
def test_bad_bytes_name_the_given_name(data: bytes, phrase: str) -> None:
    with pytest.raises(ImageError) as exc:
        decode_image(data, URI)
    assert str(exc.value).startswith(URI + ": ") and phrase in str(exc.value)
    assert exc.value.path == URI


def test_bytes_pixel_limit_and_arguments() -> None:
    with pytest.raises(ImageError, match=r"^s3://bucket/in/photo\.png: image is 16×12"):
        decode_image(png_bytes(rgb8()), URI, max_pixels=100)
    with pytest.raises(ValueError, match="mode"):
        decode_image(png_bytes(rgb8()), URI, mode="cmyk")
    with pytest.raises(ValueError, match="max_pixels"):
        decode_image(png_bytes(rgb8()), URI, max_pixels=0)


def test_decode_mask() -> None:
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[2:4, 3:6] = 255  # white = hole
    known = decode_mask(png_bytes(mask), "m.png", (6, 8, 3))
    assert known.dtype == np.bool_
    np.testing.assert_array_equal(known, mask < 128)
    with pytest.raises(ImageError, match=r"^masks/m\.png: mask is 8×6 \(W×H\) but the image"):
        decode_mask(png_bytes(mask), "masks/m.png", (10, 12))
    with pytest.raises(ImageError, match=r"^m\.png: the mask covers the whole image"):
        decode_mask(png_bytes(np.full((6, 8), 255, np.uint8)), "m.png", (6, 8))
    with pytest.raises(ImageError, match=r"^m\.png: not a recognised image"):
        decode_mask(b"GIF? no", "m.png", (6, 8))


@pytest.mark.parametrize(
    ("name", "bit_depth", "phrase"),
    [
        ("s3://b/out.bmp", 8, "s3://b/out.bmp: unsupported extension '.bmp'"),
        ("png", 8, "png: unsupported extension ''"),
        ("out.jpg", 16, "out.jpg: 16-bit output needs .png or .tif/.tiff, not .jpg"),
        ("out.png", 12, "bit_depth must be 8 or 16"),
    ],
)
def test_encode_errors_name_the_name(name: str, bit_depth: int, phrase: str) -> None:
    with pytest.raises(ValueError) as exc:
        encode_image(np.zeros((2, 2)), name, bit_depth=bit_depth)
    assert phrase in str(exc.value) and not isinstance(exc.value, ImageError)
