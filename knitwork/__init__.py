"""Neural Knitworks: restore an image by fitting a patch-based coordinate MLP to it.

The core library: pure PyTorch + numpy. Start from ``knitwork.fit.fit`` with an observation
from ``knitwork.tasks`` and a preset from ``knitwork.presets``.
"""

__version__ = "0.1.0"
