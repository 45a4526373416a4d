"""One Degradation: what turns a clean image into what a restorer sees, or what a real input is
assumed to have suffered. Every caller (``fit --synthetic``, ``restore``, ``bench quality``,
``tune``) builds its observations through it, so a seed means the same input everywhere.

``Degradation.apply(clean, seed)`` is the evaluation mode: a seeded hole (the paper's square,
thin scratches or a text overlay: ``knitwork.masks``) or a given mask, seeded Gaussian noise, or
a downsampling by a known kernel, and the ground truth to score against.
``Degradation.observe(image)`` takes a real degraded input as it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from knitwork.config import TASKS, Task
from knitwork.kernels import degrade_sr, parse_kernel, random_kernel
from knitwork.masks import MAX_FILL, scratch_mask, text_mask
from knitwork.tasks import Observation, crop_to_scale, observe

KNOWN_KERNEL_SPECS = ("learned", "delta", "random")  # besides gaussian:..., and FILE.npy
RANDOM = "random"  # synthetic sr: a seeded random kernel per image (kernels.random_kernel)
HoleShape = Literal["square", "scratch", "text"]
HOLE_SHAPES: tuple[HoleShape, ...] = ("square", "scratch", "text")


@dataclass(frozen=True, kw_only=True)
class Degradation:
    task: Task  # "inpaint", "denoise" or "sr"
    fill_ratio: float = 0.02  # inpaint, synthetic: area of the seeded hole (fraction)
    mask: HoleShape = "square"  # inpaint, synthetic: the seeded hole: the paper's square, thin
    # scratches or a text overlay (knitwork.masks)
    sigma: float = 25.0  # denoise, synthetic: std of the added Gaussian noise, 0–255 scale
    scale: int = 2  # sr: the integer upscaling factor
    kernel: str = "learned"  # sr: the kernel the model assumes; "learned" = blind
    degrade_kernel: str | None = None  # sr, synthetic: the kernel that makes the LR image
    # (default: ``kernel``, or delta when the kernel is learned)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}")
        if not 0 < self.fill_ratio < 1:
            raise ValueError(f"--fill-ratio must be in (0, 1); got {self.fill_ratio}")
        if self.mask not in HOLE_SHAPES:
            raise ValueError(
                f"--hole (Degradation.mask) must be one of {', '.join(HOLE_SHAPES)}; got "
                f"{self.mask!r}"
            )
        if self.mask != "square" and self.fill_ratio > MAX_FILL:
            raise ValueError(
                f"--fill-ratio must be at most {MAX_FILL} with --hole {self.mask}; got "
                f"{self.fill_ratio} (only the square hole may cover more)"
            )
        if self.sigma < 0:
            raise ValueError(f"--sigma must be ≥ 0; got {self.sigma}")
        if self.task == "sr" and (int(self.scale) != self.scale or self.scale < 2):
            raise ValueError(f"--scale must be an integer ≥ 2; got {self.scale}")
        for spec in (self.kernel, self.degrade_kernel):
            if spec is not None and not spec.endswith(".npy") and spec != RANDOM:
                parse_kernel(spec)  # a bad spec fails here, not after a fit

    @property
    def truth_kernel(self) -> str:
        """sr: the spec of the kernel that makes a synthetic LR image."""
        if self.degrade_kernel:
            return self.degrade_kernel
        return self.kernel if self.kernel != "learned" else "delta"

    def true_kernel(self, seed: int) -> np.ndarray:
        """sr, synthetic: the kernel that makes the LR image of the image with ``seed``."""
        if self.truth_kernel == RANDOM:
            return random_kernel(seed, self.scale)
        kernel = parse_kernel(self.truth_kernel)
        assert kernel is not None  # truth_kernel is never "learned"
        return kernel

    def apply(
        self, clean: np.ndarray, seed: int, known: np.ndarray | None = None
    ) -> tuple[Observation, np.ndarray]:
        """Degrade a clean image with ``seed``: (observation, ground truth).

        Inpainting cuts a seeded hole (``mask``: square, scratch or text) of ``fill_ratio``,
        unless ``known`` (a mask, True = observed) says where the hole is. Super-resolution
        crops the image to a multiple of ``scale`` (that crop is the truth) and downsamples it
        with ``truth_kernel``."""
        clean = np.asarray(clean, dtype=np.float32)
        if clean.ndim == 2:
            clean = clean[:, :, None]
        if self.task == "sr":
            truth = self.true_kernel(seed)
            _, low = degrade_sr(clean, self.scale, truth)
            assumed = truth if self.kernel == RANDOM else parse_kernel(self.kernel)
            obs = observe("sr", low, scale=self.scale, kernel=assumed)
            return obs, crop_to_scale(clean, self.scale)
        if self.task == "inpaint":
            if known is None:
                known = self.known_mask(clean.shape[0], clean.shape[1], seed)
            return observe("inpaint", clean * known[:, :, None], known), clean
        return observe("denoise", add_noise(clean, self.sigma, seed)), clean

    def known_mask(self, height: int, width: int, seed: int) -> np.ndarray:
        """inpaint, synthetic: the seeded known mask (False = hole) that ``apply`` cuts."""
        if self.mask == "scratch":
            return scratch_mask(height, width, self.fill_ratio, seed)
        if self.mask == "text":
            return text_mask(height, width, self.fill_ratio, seed)
        return rectangular_hole(height, width, self.fill_ratio, seed)[0]

    def observe(self, image: np.ndarray, known: np.ndarray | None = None) -> Observation:
        """A real input as it is (``known``: the inpainting mask, None = every pixel)."""
        if self.task == "sr":
            if self.kernel == RANDOM:
                raise ValueError(
                    "--kernel random is drawn per image for synthetic inputs (--synthetic); for "
                    "a real input use learned, delta, gaussian:SIGMA, gaussian:SX,SY,THETA or "
                    "FILE.npy"
                )
            return observe("sr", image, scale=self.scale, kernel=parse_kernel(self.kernel))
        return observe(self.task, image, known)

    def params(self) -> dict[str, Any]:
        """The fields that matter for this task (for hashes, MLflow params and tables).
        Inpainting's ``mask`` enters only when it is not the square, so that the params (and
        every hash built from them) of square-hole runs stay as they were."""
        names = {
            "inpaint": ("fill_ratio",) + (("mask",) if self.mask != "square" else ()),
            "denoise": ("sigma",),
            "sr": ("scale", "kernel", "degrade_kernel"),
        }[self.task]
        return {"task": self.task} | {n: getattr(self, n) for n in names}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Degradation:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"degradation: unknown key(s) {', '.join(unknown)}")
        return cls(**data)


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
