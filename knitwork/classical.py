"""Classical restorers a user might pick instead of fitting a network, for the quality bench.

Each takes an ``Observation`` and returns the restored (H, W, C) float32 image in [0, 1]:
inpainting by OpenCV's Telea and Navier–Stokes methods and scikit-image's biharmonic
equation; denoising by non-local means (scikit-image) and BM3D (the ``bm3d`` package), both
with the noise level estimated from the image (they are not told σ, as the Knitwork is not),
and BM3D told the true σ (``bm3d-sigma``, as published CBM3D numbers are: ``needs_sigma``);
super-resolution by bicubic interpolation on our sampling grid. ``CLASSICAL[task]`` lists them
with the parameters that a results row names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from knitwork.metrics import estimate_noise
from knitwork.tasks import Observation

INPAINT_RADIUS = 5  # OpenCV: neighbourhood radius (pixels) considered around each hole pixel
NLM_PATCH, NLM_DISTANCE, NLM_H = 5, 6, 0.8  # skimage's documented example: h = 0.8·σ̂


@dataclass(frozen=True, kw_only=True)
class Classical:
    name: str  # the row's ``method``
    params: str  # what a reader needs to rerun it
    restore: Callable[..., np.ndarray]  # restore(obs), or restore(obs, sigma) if needs_sigma
    needs_sigma: bool = False  # told the true noise std (0–1 scale) instead of estimating it

    def run(self, obs: Observation, sigma: float | None = None) -> np.ndarray:
        """The restored image; ``sigma`` (the true noise std, 0–1 scale) reaches only a method
        that needs it, and such a method refuses to run without it."""
        if not self.needs_sigma:
            return self.restore(obs)
        if sigma is None:
            raise ValueError(f"{self.name} needs the true noise level σ")
        return self.restore(obs, sigma)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def _keep_known(obs: Observation, filled: np.ndarray) -> np.ndarray:
    out = np.where(obs.known[:, :, None], obs.image, filled)
    return np.clip(out, 0, 1).astype(np.float32)


def _opencv(flag_name: str) -> Callable[[Observation], np.ndarray]:
    def restore(obs: Observation) -> np.ndarray:
        import cv2

        hole = (obs.hole * 255).astype(np.uint8)
        image = _to_uint8(obs.image)
        channels = image.shape[2]
        if channels == 1:
            image = image[:, :, 0]
        filled = cv2.inpaint(image, hole, INPAINT_RADIUS, getattr(cv2, flag_name))
        filled = filled.reshape(obs.image.shape).astype(np.float32) / 255.0
        return _keep_known(obs, filled)

    return restore


def inpaint_biharmonic(obs: Observation) -> np.ndarray:
    from skimage.restoration import inpaint_biharmonic as biharmonic

    filled = biharmonic(obs.image, obs.hole, channel_axis=-1)
    return _keep_known(obs, filled.astype(np.float32))


def denoise_nlm(obs: Observation) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    sigma = estimate_noise(obs.image)
    out = denoise_nl_means(
        obs.image,
        h=NLM_H * sigma,
        sigma=sigma,
        patch_size=NLM_PATCH,
        patch_distance=NLM_DISTANCE,
        fast_mode=True,
        channel_axis=-1,
    )
    return np.clip(out, 0, 1).reshape(obs.image.shape).astype(np.float32)


def denoise_bm3d(obs: Observation) -> np.ndarray:
    return denoise_bm3d_sigma(obs, estimate_noise(obs.image))


def denoise_bm3d_sigma(obs: Observation, sigma: float) -> np.ndarray:
    """BM3D (CBM3D in the opponent colour space for RGB) with noise std ``sigma``, 0–1 scale."""
    import bm3d

    image = obs.image.astype(np.float64)
    if image.shape[2] == 3:
        out = bm3d.bm3d_rgb(image, sigma)
    else:
        out = bm3d.bm3d(image[:, :, 0], sigma)[:, :, None]
    return np.clip(out, 0, 1).astype(np.float32)


def upsample_bicubic(obs: Observation) -> np.ndarray:
    from knitwork.kernels import bicubic_upsample

    return np.clip(bicubic_upsample(obs.image, obs.scale), 0, 1).astype(np.float32)


CLASSICAL: dict[str, tuple[Classical, ...]] = {
    "inpaint": (
        Classical(
            name="biharmonic",
            params="skimage.restoration.inpaint_biharmonic",
            restore=inpaint_biharmonic,
        ),
        Classical(
            name="telea",
            params=f"cv2.inpaint INPAINT_TELEA radius {INPAINT_RADIUS}",
            restore=_opencv("INPAINT_TELEA"),
        ),
        Classical(
            name="navier-stokes",
            params=f"cv2.inpaint INPAINT_NS radius {INPAINT_RADIUS}",
            restore=_opencv("INPAINT_NS"),
        ),
    ),
    "denoise": (
        Classical(
            name="nlm",
            params=f"skimage denoise_nl_means, σ̂ estimated, h {NLM_H}·σ̂, patch {NLM_PATCH}, "
            f"distance {NLM_DISTANCE}, fast mode",
            restore=denoise_nlm,
        ),
        Classical(
            name="bm3d",
            params="bm3d 4.0.3 bm3d_rgb, σ̂ estimated (wavelet MAD)",
            restore=denoise_bm3d,
        ),
        Classical(
            name="bm3d-sigma",
            params="bm3d 4.0.3 bm3d_rgb, true σ given (σ/255 of the setting)",
            restore=denoise_bm3d_sigma,
            needs_sigma=True,
        ),
    ),
    "sr": (
        Classical(
            name="bicubic",
            params="Keys cubic convolution, a = −0.5 (knitwork.kernels), on the LR sampling grid",
            restore=upsample_bicubic,
        ),
    ),
}


def classical(task: str, name: str) -> Classical:
    for method in CLASSICAL.get(task, ()):
        if method.name == name:
            return method
    names = ", ".join(m.name for m in CLASSICAL.get(task, ()))
    raise ValueError(f"no classical method {name!r} for {task}; choose from {names}")
