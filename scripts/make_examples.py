"""Rebuild examples/ from the Set5/Set14 benchmark images (../shared/datasets).

    python scripts/make_examples.py [DATASETS_DIR]

Each example is the benchmark image downscaled with Lanczos to a longest side of 128 pixels,
saved as 8-bit PNG; plus one hand-drawn-style inpainting mask (white = hole).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

PICKS = {"butterfly": "Set5", "bird": "Set5", "head": "Set5", "woman": "Set5", "zebra": "Set14"}
MAX_SIDE = 128


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets")
    out = Path(__file__).resolve().parent.parent / "examples"
    for folder in ("images", "masks"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for name, subset in PICKS.items():
        with Image.open(root / subset / f"{name}.png") as img:
            img = img.convert("RGB")
            scale = MAX_SIDE / max(img.size)
            size = (round(img.width * scale), round(img.height * scale))
            img.resize(size, Image.LANCZOS).save(out / "images" / f"{name}.png", optimize=True)
    # A mask for images/butterfly.png: a 14×14 hole (1.2% of the image) and a thin scratch.
    mask = np.zeros((MAX_SIDE, MAX_SIDE), dtype=np.uint8)
    mask[70:84, 40:54] = 255
    for x in range(80, 118):
        y = 30 + (x - 80) // 3
        mask[y : y + 2, x] = 255
    Image.fromarray(mask).save(out / "masks" / "butterfly.png", optimize=True)


if __name__ == "__main__":
    main()
