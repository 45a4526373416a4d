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
    """An ``on_step`` callback that drives a tqdm bar on stderr, and a function closing it. The
    bar appears with the first step, so a fit refused before it starts shows none."""
    if not enabled:
        return None, lambda: None
    bars: list[tqdm] = []

    def on_step(step: int, metrics: dict[str, float]) -> None:
        if not bars:
            style = {"unit": "step", "file": sys.stderr, "dynamic_ncols": True}
            bars.append(tqdm(total=steps, desc=description, **style))
        bar = bars[0]
        bar.update(step - bar.n)
        shown = {k: metrics[k] for k in _ORDER if k in metrics}
        bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)

    def close() -> None:
        for bar in bars:
            bar.close()

    return on_step, close
