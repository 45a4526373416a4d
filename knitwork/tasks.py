"""Tasks as observations: what was seen (an image and which of its pixels are known) and the
seeded degradations that make evaluation inputs from clean images.

Inpainting observes the image outside a hole; denoising observes every pixel of a noisy image.
Both use the same fit loop; only the mask and the targets differ.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from knitwork.config import TASKS


@dataclass(frozen=True, eq=False)
class Observation:
    task: str  # "inpaint", "denoise" or "sr"
    image: np.ndarray  # (H, W, C) float32 in [0, 1]; values inside the hole are ignored
    known: np.ndarray  # (H, W) bool: True where the pixel was observed
    scale: int = 1  # sr: the upscaling factor; the result is (scale·H, scale·W)
    kernel: np.ndarray | None = None  # sr: the known downsampling kernel; None = learn it

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}")
        if self.image.ndim != 3:
            raise ValueError(f"image must be (H, W, C); got shape {self.image.shape}")
        if self.known.shape != self.image.shape[:2]:
            raise ValueError(
                f"mask is {self.known.shape[1]}×{self.known.shape[0]} but the image is "
                f"{self.image.shape[1]}×{self.image.shape[0]} (W×H)"
            )
        if not self.known.any():
            raise ValueError("the mask leaves no known pixel: there is nothing to learn from")
        if (self.task == "sr") != (self.scale > 1) or int(self.scale) != self.scale:
            raise ValueError(f"super-resolution needs an integer scale ≥ 2; got {self.scale}")

    @property
    def output_shape(self) -> tuple[int, int]:
        """(height, width) of the restored image."""
        return self.image.shape[0] * self.scale, self.image.shape[1] * self.scale

    @property
    def hole(self) -> np.ndarray:
        return ~self.known


def observe(
    task: str,
    image: np.ndarray,
    known: np.ndarray | None = None,
    scale: int = 1,
    kernel: np.ndarray | None = None,
) -> Observation:
    """An observation of a real (not synthetic) input; ``known`` None means every pixel."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[:, :, None]
    if known is None:
        known = np.ones(image.shape[:2], dtype=bool)
    return Observation(task, image, np.asarray(known, dtype=bool), scale, kernel)


def crop_to_scale(image: np.ndarray, scale: int) -> np.ndarray:
    """The largest top-left crop whose sides are multiples of ``scale`` (the SR ground truth)."""
    h, w = (image.shape[0] // scale) * scale, (image.shape[1] // scale) * scale
    return np.ascontiguousarray(image[:h, :w])


def rectangular_hole(
    height: int, width: int, fill_ratio: float, seed: int
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A square hole of area ≈ ``fill_ratio``·H·W, fully inside the image at a seeded position.

    Returns the known mask (False in the hole) and the hole box (top, left, height, width).
    """
    if not 0 < fill_ratio < 1:
        raise ValueError(f"fill ratio must be in (0, 1); got {fill_ratio}")
    side = max(1, round(float(np.sqrt(fill_ratio * height * width))))
    hole_h, hole_w = min(side, height - 2), min(side, width - 2)
    if hole_h < 1 or hole_w < 1:
        raise ValueError(f"image {width}×{height} is too small for a hole")
    rng = np.random.default_rng(seed)
    top = int(rng.integers(1, height - hole_h))  # keep one known row/column on every side
    left = int(rng.integers(1, width - hole_w))
    known = np.ones((height, width), dtype=bool)
    known[top : top + hole_h, left : left + hole_w] = False
    return known, (top, left, hole_h, hole_w)


def add_noise(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Additive white Gaussian noise of std ``sigma`` on the 0–255 scale, clipped to [0, 1]
    (a noisy image that could be saved as a file)."""
    if sigma < 0:
        raise ValueError(f"sigma must be ≥ 0; got {sigma}")
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(image.shape).astype(np.float32) * (sigma / 255.0)
    return np.clip(image + noise, 0.0, 1.0).astype(np.float32)


def degrade(
    task: str,
    clean: np.ndarray,
    seed: int,
    fill_ratio: float = 0.02,
    sigma: float = 25.0,
    scale: int = 2,
    kernel: np.ndarray | None = None,
    blind: bool = True,
) -> Observation:
    """The task's seeded degradation of a clean image (evaluation mode, ``--synthetic``).

    For ``sr`` the clean image is cropped to a multiple of ``scale`` (``crop_to_scale`` gives
    that ground truth) and downsampled with ``kernel`` (None: plain subsampling); ``blind``
    hides the kernel from the fit, which then learns one."""
    clean = np.asarray(clean, dtype=np.float32)
    if task == "sr":
        from knitwork.kernels import degrade_sr, delta_kernel

        true_kernel = delta_kernel() if kernel is None else kernel
        _, low = degrade_sr(clean, scale, true_kernel)
        return observe("sr", low, scale=scale, kernel=None if blind else true_kernel)
    if task == "inpaint":
        known, _ = rectangular_hole(clean.shape[0], clean.shape[1], fill_ratio, seed)
        return Observation(task, clean * known[:, :, None], known)
    if task == "denoise":
        return observe(task, add_noise(clean, sigma, seed))
    raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")


def sr_observation(
    pixels: np.ndarray,
    scale: int,
    kernel: str = "learned",
    synthetic: bool = False,
    seed: int = 0,
    degrade_kernel: str | None = None,
) -> tuple[Observation, np.ndarray | None]:
    """A super-resolution observation from kernel specs (see ``kernels.parse_kernel``), and
    its ground truth in synthetic mode: ``pixels`` is then the clean HR image, degraded with
    ``degrade_kernel`` (default: ``kernel``, or delta when the kernel is learned)."""
    from knitwork.kernels import parse_kernel

    known = parse_kernel(kernel)
    if not synthetic:
        return observe("sr", pixels, scale=scale, kernel=known), None
    spec = degrade_kernel or (kernel if kernel != "learned" else "delta")
    obs = degrade("sr", pixels, seed, scale=scale, kernel=parse_kernel(spec))
    return dataclasses.replace(obs, kernel=known), crop_to_scale(pixels, scale)


def naive_restoration(observation: Observation) -> np.ndarray:
    """The answer a user gets for free: the hole filled with the mean known colour (inpainting),
    the noisy input itself (denoising), or bicubic upsampling (super-resolution). Its PSNR is
    ``reference_psnr``."""
    if observation.task == "sr":
        from knitwork.kernels import bicubic_upsample

        return bicubic_upsample(observation.image, observation.scale)
    image = observation.image.copy()
    if observation.task == "inpaint":
        image[observation.hole] = observation.image[observation.known].mean(axis=0)
    return image
