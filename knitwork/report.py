"""What a fit reports: the metrics record and a side-by-side picture."""

from __future__ import annotations

import numpy as np

from knitwork.fit import FitResult, finite_or_none
from knitwork.metrics import evaluate, psnr
from knitwork.tasks import Observation, naive_restoration


def fit_metrics(result: FitResult, obs: Observation, truth: np.ndarray | None) -> dict:
    """The metrics JSON: quality (when the truth is known), the naive answer's PSNR, cost."""
    hole = obs.hole if obs.task == "inpaint" else None
    scores = {"psnr": None, "ssim": None, "psnr_hole": None, "ssim_hole": None}
    reference = None
    if truth is not None:
        scores = evaluate(result.image, truth, hole)
        reference = psnr(naive_restoration(obs), truth, hole)
    out = {k: finite_or_none(v) for k, v in scores.items()}
    out["reference_psnr"] = finite_or_none(reference)
    out |= {
        "seconds": round(result.seconds, 3),
        "steps": result.steps,
        "parameters": result.parameters,
        "task": obs.task,
        "method": result.config.model.method,
        "seed": result.seed,
        "height": obs.image.shape[0],
        "width": obs.image.shape[1],
    }
    return out


def side_by_side(*images: np.ndarray, gap: int = 4) -> np.ndarray:
    """Images of one size in a row, white gaps between them (grey ones made 3-channel)."""
    rgb = [np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im for im in images]
    spacer = np.ones((rgb[0].shape[0], gap, 3), dtype=np.float32)
    row = [rgb[0]]
    for im in rgb[1:]:
        row += [spacer, im]
    return np.concatenate(row, axis=1)
