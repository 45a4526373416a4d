"""Checked fields for the configuration's dataclasses: each value is checked (and numbers
parsed) when a config is built, and an error names the field by its dotted name. Also the
spellings a config accepts for a device and a memory size."""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import typing
from typing import Any, ClassVar, Literal


class Checked:
    """Field checks at construction: a ``Literal`` field must hold one of its choices, a number
    must be a number (YAML leaves ``1e-3`` as a string: accepted as 0.001), a tuple of ints a
    tuple of ints. Errors name the field by its full dotted name (``SECTION``)."""

    SECTION: ClassVar[str] = "config"

    def __post_init__(self) -> None:
        hints = _field_types(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            checked = _check_value(f"{self.SECTION}.{f.name}", hints[f.name], value)
            if checked is not value:
                object.__setattr__(self, f.name, checked)


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """A config class's resolved field annotations (resolved once per class)."""
    return typing.get_type_hints(cls)


def _check_value(name: str, kind: Any, value: Any) -> Any:
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        return value
    if kind in (int, float):
        return _number(name, kind, value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false; got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be text (str); got {value!r}")
        return value
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        what = "numbers" if item is float else "whole numbers"
        if not isinstance(value, tuple | list):
            raise ValueError(f"{name} must be a list of {what}; got {value!r}")
        return tuple(_number(f"{name}[{i}]", item, v) for i, v in enumerate(value))
    return value


def _number(name: str, kind: type, value: Any) -> int | float:
    """``value`` as ``kind``: numeric strings parsed, whole floats accepted as ints; NaN and
    infinities refused."""
    original, expected = value, kind.__name__
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number ({expected}); got {original!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number ({expected}); got {original!r}")
    if kind is int:
        if value != int(value):
            raise ValueError(f"{name} must be a whole number ({expected}); got {original!r}")
        return int(value)
    return float(value)


_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def check_device(value: str, name: str = "optim.device") -> str:
    """``value`` when it names a device a fit can run on (``auto``, ``cpu``, ``cuda``,
    ``cuda:N``), else a ValueError naming ``name`` (the field, or a command-line option).
    Only the spelling is checked: whether CUDA is present is the machine's business."""
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise ValueError(f"{name} must be auto, cpu, cuda or cuda:N; got {value!r}")
    return value


def parse_size(text: str) -> int:
    """Bytes from ``4G``, ``512M``, ``1.5GiB``, ``2e9``; ``auto`` is not a size."""
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1] if value and value[-1] in "KMGT" else ""
    try:
        number = float(value[: len(value) - len(unit)])
    except ValueError:
        raise ValueError(f"optim.max_memory {text!r}: use e.g. 4G, 512M or auto") from None
    if not number > 0:
        raise ValueError(f"optim.max_memory {text!r} must be positive")
    return int(number * units[unit])
