"""What a fit reports: the metrics record and a side-by-side picture."""

from __future__ import annotations

import numpy as np
import torch

from knitwork.kernels import delta_kernel, kernel_error
from knitwork.metrics import evaluate, psnr
from knitwork.result import FitResult, finite_or_none
from knitwork.tasks import Observation, naive_restoration

# The per-image scores a fit's metrics hold (None where they do not apply): what the commands
# print and a batch averages.
SCORES = ("psnr", "ssim", "psnr_hole", "ssim_hole", "reference_psnr", "kernel_error")


def fit_metrics(
    result: FitResult,
    obs: Observation,
    truth: np.ndarray | None,
    true_kernel: np.ndarray | None = None,
) -> dict:
    """The metrics JSON: quality (when the truth is known), the naive answer's PSNR, cost; for
    super-resolution also the learned kernel's error against ``true_kernel`` (``kernel_scores``;
    None for a known-kernel fit or an unknown true kernel)."""
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
        "height": result.image.shape[0],
        "width": result.image.shape[1],
        "crop": None if result.crop is None else f"{result.crop[1]}x{result.crop[0]}",
    }
    if obs.task == "sr":
        out["scale"] = obs.scale
        blind = "estimated" if result.kernel is not None else "learned"
        out["kernel"] = "known" if obs.kernel is not None else blind
        out |= kernel_scores(learned_kernel(result), true_kernel)
    return out


def kernel_scores(learned: np.ndarray | None, truth: np.ndarray | None) -> dict:
    """A blind SR fit's kernel against the true one: ``kernel_error`` (``kernels.kernel_error``,
    0 = the truth up to a whole-pixel shift) and ``kernel_error_start``, what the delta kernel
    the fit starts from scores, so a reader sees whether it moved. Both None when the fit had
    no learned kernel (a known kernel) or the true kernel is unknown (a real input)."""
    if learned is None or truth is None:
        return {"kernel_error": None, "kernel_error_start": None}
    return {
        "kernel_error": finite_or_none(kernel_error(learned, truth)),
        "kernel_error_start": finite_or_none(kernel_error(delta_kernel(), truth)),
    }


def comparison(obs: Observation, result: FitResult, truth: np.ndarray | None) -> np.ndarray:
    """input | restored [| ground truth], the input enlarged (nearest) for super-resolution."""
    shown = obs.image
    if obs.scale > 1:
        shown = np.repeat(np.repeat(shown, obs.scale, axis=0), obs.scale, axis=1)
    return side_by_side(shown, result.image, *([truth] if truth is not None else []))


def learned_kernel(result: FitResult) -> np.ndarray | None:
    """The kernel a blind super-resolution fit found (learned with the image, or estimated
    before it), or None for a fit given its kernel."""
    downsampler = result.model.downsampler
    if downsampler is None:
        return result.kernel
    with torch.no_grad():
        return downsampler.kernel().cpu().numpy()


def kernel_picture(kernel: np.ndarray, zoom: int = 12) -> np.ndarray:
    """A kernel as a grey picture (max → white, negative weights clipped), each tap zoom×zoom."""
    k = np.clip(kernel / max(float(kernel.max()), 1e-12), 0, 1)
    return np.repeat(np.repeat(k, zoom, axis=0), zoom, axis=1)[:, :, None].astype(np.float32)


def side_by_side(*images: np.ndarray, gap: int = 4) -> np.ndarray:
    """Images of one size in a row, white gaps between them (grey ones made 3-channel)."""
    rgb = [np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im for im in images]
    spacer = np.ones((rgb[0].shape[0], gap, 3), dtype=np.float32)
    row = [rgb[0]]
    for im in rgb[1:]:
        row += [spacer, im]
    return np.concatenate(row, axis=1)


def save_kernel(path: str, kernel: np.ndarray) -> None:
    """``path`` as .npy (the exact kernel) and, beside it, a .png picture of it."""
    from pathlib import Path

    from knitwork.io import atomic_file, save_image

    target = Path(path).with_suffix(".npy")
    with atomic_file(target) as handle:
        np.save(handle, kernel.astype(np.float32))
    save_image(target.with_suffix(".png"), kernel_picture(kernel))
