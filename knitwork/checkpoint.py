"""Saved models: one file holding the config, the weights and what the fit was for.

``save_model(result, path)`` after a fit; ``load_model(path)`` gives back the model and its
config; ``render(model, height, width)`` draws the learned image at any resolution.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from knitwork.config import Config
from knitwork.fit import FitResult
from knitwork.io import atomic_file
from knitwork.kernels import LearnedDownsampler
from knitwork.model import Knitwork

FORMAT = "knitwork-model"
VERSION = 1


def save_model(result: FitResult, path: str | os.PathLike[str]) -> None:
    """Write the fitted model (atomically) to ``path`` (conventionally ``*.pt``)."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": result.config.to_dict(),
        "channels": result.model.channels,
        "seed": result.seed,
        "task": result.task,
        "height": result.image.shape[0],
        "width": result.image.shape[1],
        "scale": result.scale,
        "state": result.model.state_dict(),
    }
    with atomic_file(path) as handle:
        torch.save(payload, handle)


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
    if payload.get("version") != VERSION:
        raise ValueError(f"{path}: model format version {payload.get('version')} not supported")
    config = Config.from_dict(payload["config"])
    state = payload["state"]
    has_d = any(key.startswith("discriminator.") for key in state)
    model = Knitwork(config.model, payload["channels"], payload["seed"], discriminator=has_d)
    scale = payload.get("scale", 1)
    if any(key.startswith("downsampler.") for key in state):
        m = config.model
        model.downsampler = LearnedDownsampler(m.kernel_layers, m.kernel_width, scale)
    model.load_state_dict(state)
    meta = {k: payload[k] for k in ("task", "seed", "height", "width", "channels")}
    meta["scale"] = scale
    return model.eval(), config, meta


def render(model: Knitwork, height: int, width: int) -> np.ndarray:
    """(H, W, C) float32 image in [0, 1] drawn by ``model`` on an H×W pixel grid."""
    if height < 1 or width < 1:
        raise ValueError(f"render size must be positive; got {width}×{height}")
    return model.render(height, width).clamp(0, 1).numpy()
