"""Saved models: one file holding the config, the model's structure, the weights and what the
fit was for.

``save_model(result, path)`` after a fit; ``load_model(path)`` gives back the model and its
config; ``render(model, height, width)`` draws the learned image at any resolution. The file
carries the arguments the model was built with (``Knitwork.structure()``), so loading rebuilds
exactly that model.
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch

from knitwork.config import Config
from knitwork.io import atomic_file
from knitwork.model import Knitwork
from knitwork.result import FitResult

FORMAT = "knitwork-model"
VERSION = 2  # 2: the model's structure is stored; 1 (read only): it was inferred from weights


def model_bytes(result: FitResult) -> bytes:
    """The fitted model as the bytes of a model file."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": result.config.to_dict(),
        "structure": result.model.structure(),
        "task": result.task,
        "height": result.image.shape[0],
        "width": result.image.shape[1],
        "scale": result.scale,
        "state": result.model.state_dict(),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def save_model(result: FitResult, path: str | os.PathLike[str]) -> None:
    """Write the fitted model (atomically) to ``path`` (conventionally ``*.pt``)."""
    with atomic_file(path) as handle:
        handle.write(model_bytes(result))


def _version_1_structure(payload: dict) -> dict:
    """Files written before the structure was stored: read it off the weights' names."""
    state = payload["state"]
    learned = any(key.startswith("downsampler.") for key in state)
    return {
        "channels": payload["channels"],
        "seed": payload["seed"],
        "discriminator": any(key.startswith("discriminator.") for key in state),
        "kernel_scale": payload.get("scale", 1) if learned else None,
    }


def load_model(path: str | os.PathLike[str]) -> tuple[Knitwork, Config, dict]:
    """The model (on the CPU, in eval mode), its config, and the fit's facts (task, seed, size)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such model file") from None
    except Exception as err:  # torch raises many kinds for a file that is not a model
        raise ValueError(f"{path}: not a knitwork model file ({err.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a knitwork model file")
    version = payload.get("version")
    if version not in (1, VERSION):
        raise ValueError(f"{path}: model format version {version} not supported")
    config = Config.from_dict(payload["config"])
    structure = payload["structure"] if version == VERSION else _version_1_structure(payload)
    model = Knitwork(config.model, **structure)
    model.load_state_dict(payload["state"])
    meta = {k: payload[k] for k in ("task", "height", "width")}
    meta |= {"seed": structure["seed"], "channels": structure["channels"]}
    meta["scale"] = payload.get("scale", 1)
    return model.eval(), config, meta


def render(model: Knitwork, height: int, width: int) -> np.ndarray:
    """(H, W, C) float32 image in [0, 1] drawn by ``model`` on an H×W pixel grid."""
    if height < 1 or width < 1:
        raise ValueError(f"render size must be positive; got {width}×{height}")
    return model.render(height, width).clamp(0, 1).numpy()
