"""Seeded free-form holes (thin scratches, a text overlay) and the Degradation that cuts them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from knitwork.degradation import Degradation
from knitwork.masks import MAX_FILL, MIN_SIDE, TOLERANCE, scratch_mask, text_mask
from tests.conftest import example_image

MASKS = {"scratch": scratch_mask, "text": text_mask}
EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


@pytest.mark.parametrize("kind", MASKS)
def test_a_mask_is_a_function_of_its_seed(kind):
    make = MASKS[kind]
    known = make(64, 96, 0.05, seed=3)
    assert known.shape == (64, 96) and known.dtype == bool
    np.testing.assert_array_equal(known, make(64, 96, 0.05, seed=3))
    for other in (4, 5):
        assert not np.array_equal(known, make(64, 96, 0.05, seed=other))


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("size", [(32, 32), (64, 64), (128, 128), (481, 321), (321, 481)])
@pytest.mark.parametrize("fill", [0.01, 0.05, 0.1])
def test_the_hole_covers_about_the_fill_ratio(kind, size, fill):
    for seed in (0, 1):
        known = MASKS[kind](*size, fill, seed)
        assert abs((~known).mean() / fill - 1) <= TOLERANCE, (seed, (~known).mean())


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("size", [(MIN_SIDE, MIN_SIDE), (9, 40), (64, 64)])
def test_a_fit_stays_possible_even_at_the_largest_fill(kind, size):
    known = MASKS[kind](*size, MAX_FILL, seed=2)
    assert (~known).any()  # there is a hole ...
    assert known.mean() >= 1 - MAX_FILL - 0.01  # ... but never more than about half the image
    ring = np.concatenate([known[0], known[-1], known[:, 0], known[:, -1]])
    assert ring.all()  # the outermost ring is known: every row and column has a known pixel


def test_scratches_are_thin_long_strokes():
    for size, seed in (((128, 128), 0), ((321, 481), 1)):
        hole = ~scratch_mask(*size, 0.05, seed)
        to_known = ndimage.distance_transform_edt(hole)[hole]
        assert (to_known <= 2).mean() > 0.95  # 1-3 px wide: a known pixel is always near
        _, strokes = ndimage.label(hole, EIGHT_NEIGHBOURS)
        assert strokes <= 15  # a few long strokes, not a spray of dots


def test_text_is_many_small_glyphs():
    hole = ~text_mask(128, 128, 0.05, seed=0)
    labels, glyphs = ndimage.label(hole, EIGHT_NEIGHBOURS)
    assert glyphs >= 20
    assert np.bincount(labels.ravel())[1:].max() < 0.25 * hole.sum()  # no blob, letters
    to_known = ndimage.distance_transform_edt(hole)[hole]
    assert (to_known <= 2).mean() > 0.95  # strokes of letters, thin


@pytest.mark.parametrize("kind", MASKS)
def test_bad_sizes_and_fill_ratios_are_refused(kind):
    make = MASKS[kind]
    with pytest.raises(ValueError, match=r"image 40×7 is too small .* at least 8 px"):
        make(7, 40, 0.05, 0)
    for fill in (0.0, -0.1, 0.6):
        with pytest.raises(ValueError, match=r"fill ratio must be in \(0, 0.5\]"):
            make(32, 32, fill, 0)


@pytest.mark.parametrize("kind", MASKS)
def test_degradation_cuts_the_seeded_free_form_hole(kind):
    clean = example_image("bird", 48)
    degradation = Degradation(task="inpaint", fill_ratio=0.05, mask=kind)
    obs, truth = degradation.apply(clean, seed=7)
    expected = MASKS[kind](48, 48, 0.05, 7)
    np.testing.assert_array_equal(obs.known, expected)
    assert obs.image[obs.hole].max() == 0 and (obs.image[obs.known] > 0).any()
    np.testing.assert_array_equal(truth, clean)
    given = np.ones((48, 48), dtype=bool)
    given[10:20, 10:20] = False  # a given mask wins over the seeded one
    np.testing.assert_array_equal(degradation.apply(clean, 7, given)[0].known, given)


def test_degradation_refuses_an_unknown_hole_or_too_large_a_fill():
    with pytest.raises(ValueError, match=r"--hole \(Degradation\.mask\) must be one of square, "):
        Degradation(task="inpaint", mask="circle")
    with pytest.raises(ValueError, match=r"--fill-ratio must be at most 0\.5 with --hole text"):
        Degradation(task="inpaint", mask="text", fill_ratio=0.6)
    assert Degradation(task="inpaint", fill_ratio=0.6).mask == "square"  # as before


def test_params_name_the_hole_only_when_it_is_not_the_square():
    square = Degradation(task="inpaint", fill_ratio=0.04)
    assert square.params() == {"task": "inpaint", "fill_ratio": 0.04}  # as before: old hashes
    text = Degradation(task="inpaint", fill_ratio=0.04, mask="text")
    assert text.params() == {"task": "inpaint", "fill_ratio": 0.04, "mask": "text"}
    assert Degradation(task="denoise", mask="scratch").params() == {"task": "denoise", "sigma": 25}
    assert Degradation.from_dict(text.to_dict()) == text
    assert Degradation.from_dict({"task": "inpaint", "fill_ratio": 0.04}) == square  # old files
