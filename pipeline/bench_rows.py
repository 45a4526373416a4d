"""The quality benchmark's rows as data: their key (``row_key``), ``OUTPUT/rows.jsonl``
(``ROWS_NAME``) read and written (``parse_rows``, ``render_rows``), and the hash of everything
that decides a row (``digest``), which tells a rerun the rows it may skip. Running the rows is
``pipeline.bench``'s."""

from __future__ import annotations

import json

from knitwork.classical import classical
from knitwork.config import Config
from knitwork.dip import dip_config
from pipeline.bench_suites import DIP, Setting, is_neural, neural_config
from pipeline.manifest import config_hash

ROWS_NAME = "rows.jsonl"


def row_key(row: dict) -> tuple[str, str, str, int]:
    """(method, setting, image, repeat); a row from before --seeds is repeat 0."""
    return row["method"], row["setting"], row["image"], row.get("repeat", 0)


def parse_rows(text: str, source: str) -> dict[tuple[str, str, str, int], dict]:
    """The latest row per (method, setting, image, repeat), each with its ``repeat`` (0 where
    an older row has none); a corrupt line names its line."""
    rows = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row.setdefault("repeat", 0)
            rows[row_key(row)] = row
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{source}: line {number} is not a bench row ({err})") from None
    return rows


def render_rows(rows) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode("utf-8")


def digest(
    method: str,
    config: Config | None,
    suite: str,
    setting: Setting,
    seed: int,
    max_side: int | None,
    centre_crop: int | None = None,
    repeat: int = 0,
    dip_steps: int | None = None,
) -> str:
    """The hash of everything that decides a row: method and its config, protocol, seed, size
    (a centre crop and a repeat r > 0 enter only when there are, so that other rows keep their
    old hashes)."""
    if is_neural(method):
        what = neural_config(config, method).identity()
    elif method == DIP:
        what = dip_config(suite, dip_steps).describe()
    else:
        what = classical(suite, method).params
    payload = {"method": method, "what": what, "setting": _setting_payload(setting), "seed": seed}
    payload |= {"max_side": max_side, "suite": suite}
    if centre_crop is not None:
        payload["centre_crop"] = centre_crop
    if repeat > 0:
        payload["repeat"] = repeat
    return config_hash(payload)


def _setting_payload(setting: Setting) -> dict:
    """A setting as its row hashes have always seen it (name, fill, sigma, scale, kernel; a
    free-form hole's mask, which square holes leave out)."""
    d = setting.degradation
    free_form = {"mask": d.mask} if d.task == "inpaint" and d.mask != "square" else {}
    return free_form | {
        "name": setting.name,
        "fill_ratio": d.fill_ratio,
        "sigma": d.sigma,
        "scale": d.scale if d.task == "sr" else 1,
        "kernel": d.truth_kernel if d.task == "sr" else "delta",
    }
