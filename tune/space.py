"""Search spaces: what `knitwork tune` varies, from a default or a YAML file, and how a trial's
values become a knitwork Config.

A space maps dotted config fields (``loss.alpha``, ``optim.lr``, ``model.patches.scales``, ...)
to a distribution or a fixed value::

    loss.alpha: {loguniform: [0.01, 10]}
    loss.beta: {uniform: [0.5, 2]}
    optim.steps: {choice: [200, 400]}
    model.patches.scales: {choice: [[1, 2], [1, 2, 4]]}
    model.encoding.scale: 5.0          # fixed for every trial

Distributions: ``loguniform`` and ``uniform`` [low, high], ``int`` and ``logint`` [low, high]
(both ends included), ``choice`` [options]. docs/tune.md lists the default space.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from knitwork.config import Config

KINDS = ("loguniform", "uniform", "int", "logint", "choice")


@dataclass(frozen=True, kw_only=True)
class Param:
    """One searched or fixed config field."""

    key: str  # dotted config field, e.g. "loss.alpha"
    kind: str  # one of KINDS, or "fixed"
    values: tuple  # [low, high] for ranges, the options for choice, (value,) when fixed

    @property
    def log(self) -> bool:
        """Sampled (and plotted) on a log axis."""
        return self.kind in ("loguniform", "logint")

    @property
    def searched(self) -> bool:
        return self.kind != "fixed" and not (self.kind == "choice" and len(self.values) == 1)

    def to_spec(self) -> Any:
        """The YAML/JSON form of this parameter (lists, not tuples)."""
        plain = [list(v) if isinstance(v, tuple) else v for v in self.values]
        return plain[0] if self.kind == "fixed" else {self.kind: plain}


# The default space: the loss weights and both learning rates, log-uniform (docs/tune.md).
DEFAULT_SPACE: dict[str, Any] = {
    "loss.alpha": {"loguniform": [1e-3, 10.0]},
    "loss.beta": {"loguniform": [0.1, 10.0]},
    "loss.gamma": {"loguniform": [1e-5, 1e-1]},
    "optim.lr": {"loguniform": [1e-4, 1e-2]},
    "optim.d_lr": {"loguniform": [1e-4, 1e-2]},
}

# Further fields worth searching: `--space extended` adds them to the default.
OPTIONAL_SPACE: dict[str, Any] = {
    "model.encoding.scale": {"loguniform": [1.0, 20.0]},
    "model.patches.scales": {"choice": [[1, 2], [1, 2, 4], [1, 4]]},
    "optim.steps": {"choice": [200, 400, 800]},
}


def config_leaves(config: Config) -> dict[str, Any]:
    """Every dotted leaf field of ``config`` and its value."""

    def walk(data: dict, prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict):
                out |= walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value
        return out

    return walk(config.to_dict(), "")


def parse_space(data: Any, source: str, base: Config) -> list[Param]:
    """Params from a space mapping; errors name ``source`` and the key. Every range end and
    option is applied to ``base`` so that a value the config rejects is caught now."""
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{source}: a search space must be a non-empty mapping of config fields")
    leaves = config_leaves(base)
    params = []
    for key, spec in data.items():
        if key not in leaves:
            raise ValueError(
                f"{source}: {key!r} is not a config field; searchable fields include "
                f"{', '.join([*DEFAULT_SPACE, *OPTIONAL_SPACE])} (any field of "
                "`knitwork presets show NAME`, dotted)"
            )
        param = _parse_param(key, spec, source)
        for value in param.values:
            try:
                apply_params(base, {key: value})
            except (TypeError, ValueError) as err:
                raise ValueError(f"{source}: {key}: value {value!r} is not valid ({err})") from None
        params.append(param)
    return params


def _parse_param(key: str, spec: Any, source: str) -> Param:
    if not isinstance(spec, dict):
        return Param(key=key, kind="fixed", values=(_as_tuple(spec),))
    if len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ValueError(
            f"{source}: {key}: expected one of {', '.join(KINDS)} (e.g. "
            f"{{loguniform: [0.001, 1]}}) or a fixed value; got {spec!r}"
        )
    kind, values = next(iter(spec.items()))
    if not isinstance(values, list) or not values:
        raise ValueError(f"{source}: {key}: {kind} needs a non-empty list; got {values!r}")
    if kind == "choice":
        return Param(key=key, kind=kind, values=tuple(_as_tuple(v) for v in values))
    if len(values) != 2 or not all(_is_number(v) for v in values):
        raise ValueError(f"{source}: {key}: {kind} needs [low, high] numbers; got {values!r}")
    low, high = values
    if not low < high:
        raise ValueError(f"{source}: {key}: {kind} needs low < high; got [{low}, {high}]")
    if kind.startswith("log") and low <= 0:
        raise ValueError(f"{source}: {key}: {kind} needs low > 0; got {low}")
    if kind in ("int", "logint") and not all(isinstance(v, int) for v in values):
        raise ValueError(f"{source}: {key}: {kind} needs integer bounds; got {values!r}")
    return Param(key=key, kind=kind, values=(low, high))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def default_space(base: Config) -> list[Param]:
    return parse_space(DEFAULT_SPACE, "default space", base)


def resolve_space(name: str | None, base: Config) -> list[Param]:
    """``default`` (or None), ``extended`` (the default plus OPTIONAL_SPACE), or a YAML file."""
    if name in (None, "default"):
        return default_space(base)
    if name == "extended":
        return parse_space(DEFAULT_SPACE | OPTIONAL_SPACE, "extended space", base)
    return load_space(name, base)


def load_space(path: str | Path, base: Config) -> list[Param]:
    """Params from a YAML file (a mapping of dotted fields); errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"{path}: cannot read the search space ({err.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    return parse_space(data, str(path), base)


def space_spec(params: list[Param]) -> dict[str, Any]:
    """The space as plain data (for search.json, MLflow and `parse_space`)."""
    return {p.key: p.to_spec() for p in params}


def _tune_value(value: Any) -> Any:
    """Tuples become "1,2,4": Optuna's categorical options must be scalars."""
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else value


def to_tune(params: list[Param]) -> dict[str, Any]:
    """The Ray Tune ``param_space``: one entry per param, keyed by its dotted field."""
    from ray import tune

    space: dict[str, Any] = {}
    for p in params:
        if p.kind == "fixed":
            space[p.key] = _tune_value(p.values[0])
        elif p.kind == "choice":
            space[p.key] = tune.choice([_tune_value(v) for v in p.values])
        elif p.kind == "loguniform":
            space[p.key] = tune.loguniform(*p.values)
        elif p.kind == "uniform":
            space[p.key] = tune.uniform(*p.values)
        elif p.kind == "int":
            space[p.key] = tune.randint(p.values[0], p.values[1] + 1)
        else:
            space[p.key] = tune.lograndint(p.values[0], p.values[1] + 1)
    return space


def _coerce(value: Any, current: Any) -> Any:
    """A trial value in the type of the field it replaces."""
    if isinstance(current, tuple):
        if isinstance(value, str):
            return tuple(int(v) for v in value.split(",") if v.strip())
        return tuple(value)
    if isinstance(current, bool):
        return bool(value)
    if isinstance(current, int) and _is_number(value):
        return round(value)
    if isinstance(current, float) and _is_number(value):
        return float(value)
    return value


def apply_params(base: Config, params: dict[str, Any]) -> Config:
    """``base`` with each dotted field of ``params`` replaced (validated by Config)."""
    data = base.to_dict()
    for key, value in params.items():
        *path, leaf = key.split(".")
        section = data
        for part in path:
            section = section.get(part) if isinstance(section, dict) else None
        if not isinstance(section, dict) or leaf not in section:
            raise ValueError(f"{key!r} is not a config field")
        section[leaf] = _coerce(value, section[leaf])
    return Config.from_dict(data)


def max_steps(params: list[Param], base: Config) -> int:
    """The most steps any trial can run (the ASHA budget)."""
    for p in params:
        if p.key == "optim.steps":
            return int(max(p.values))
    return base.optim.steps
