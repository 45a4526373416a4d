"""Tasks as observations: what was seen (an image and which of its pixels are known).

Inpainting observes the image outside a hole; denoising observes every pixel of a noisy image;
super-resolution observes a low-resolution image and the factor (and maybe the kernel). All use
the same fit loop; only the mask and the targets differ. ``knitwork.degradation`` makes
observations from clean images for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from knitwork.config import TASKS, Task
from knitwork.kernels import bicubic_upsample


@dataclass(frozen=True, eq=False, kw_only=True)
class Observation:
    task: Task  # "inpaint", "denoise" or "sr"
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
    known = np.asarray(known, dtype=bool)
    return Observation(task=task, image=image, known=known, scale=scale, kernel=kernel)


def crop_to_scale(image: np.ndarray, scale: int) -> np.ndarray:
    """The largest top-left crop whose sides are multiples of ``scale`` (the SR ground truth)."""
    h, w = (image.shape[0] // scale) * scale, (image.shape[1] // scale) * scale
    return np.ascontiguousarray(image[:h, :w])


def naive_restoration(observation: Observation) -> np.ndarray:
    """The answer a user gets for free: the hole filled with the mean known colour (inpainting),
    the noisy input itself (denoising), or bicubic upsampling (super-resolution). Its PSNR is
    ``reference_psnr``."""
    if observation.task == "sr":
        return bicubic_upsample(observation.image, observation.scale)
    image = observation.image.copy()
    if observation.task == "inpaint":
        image[observation.hole] = observation.image[observation.known].mean(axis=0)
    return image
