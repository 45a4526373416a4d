"""Neural Knitworks: restore an image by fitting a patch-based coordinate MLP to it.

The core library: pure PyTorch + numpy. Start from ``knitwork.fit.fit`` with an observation
(``knitwork.tasks.observe`` for a real input, ``knitwork.degradation.Degradation`` to degrade a
clean one) and a preset from ``knitwork.presets``.
"""

__version__ = "0.1.0"
