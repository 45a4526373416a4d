"""A progress bar for fits: step, loss terms and PSNR (when the ground truth is known)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from tqdm import tqdm

# Generator terms in eq. 4's order (SR's β term "down" beside "pixel", then its learned-kernel
# penalties), the discriminator, then the quality metric.
_ORDER = (
    "total",
    "recon",
    "consistency",
    "pixel",
    "down",
    "gan",
    "kernel",
    "kernel_spread",
    "discriminator",
    "psnr",
)


def progress_callback(
    steps: int, enabled: bool = True, description: str = "fit"
) -> tuple[Callable[[int, dict[str, float]], None] | None, Callable[[], None]]:
    """An ``on_step`` callback that drives a tqdm bar on stderr, and a function closing it."""
    if not enabled:
        return None, lambda: None
    bar = tqdm(total=steps, desc=description, unit="step", file=sys.stderr, dynamic_ncols=True)

    def on_step(step: int, metrics: dict[str, float]) -> None:
        bar.update(step - bar.n)
        shown = {k: metrics[k] for k in _ORDER if k in metrics}
        bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)

    return on_step, bar.close
