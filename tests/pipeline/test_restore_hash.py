"""A synthetic restore's resume hash sees the kind of hole it cuts (square holes keep theirs)."""

from knitwork.degradation import Degradation
from knitwork.presets import get_preset
from pipeline.driver import RestoreOptions, _hash_payload
from pipeline.manifest import config_hash


def _digest(synthetic: bool, mask: str) -> str:
    options = RestoreOptions(
        input="in",
        output="out",
        config=get_preset("fast-inpaint"),
        degradation=Degradation(task="inpaint", fill_ratio=0.02, mask=mask),
        synthetic=synthetic,
    )
    return config_hash(_hash_payload(options))


def test_free_form_holes_are_not_taken_for_finished_square_ones():
    square, scratch, text = (_digest(True, m) for m in ("square", "scratch", "text"))
    assert len({square, scratch, text}) == 3


def test_square_holes_keep_the_hash_they_had_before_free_form_masks():
    options = RestoreOptions(
        input="in",
        output="out",
        config=get_preset("fast-inpaint"),
        degradation=Degradation(task="inpaint", fill_ratio=0.02),
        synthetic=True,
    )
    assert "mask" not in _hash_payload(options)


def test_real_inputs_ignore_the_synthetic_hole_kind():
    assert _digest(False, "square") == _digest(False, "scratch")
