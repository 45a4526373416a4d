"""Where a fit runs and in what precision: the torch device for ``optim.device``, and whether
that device multiplies bf16 fast (``optim.precision: auto``)."""

from __future__ import annotations

import functools

import torch

from knitwork.config import check_device


def resolve_device(name: str) -> torch.device:
    """The torch device for ``optim.device`` (spelling checked by ``check_device``)."""
    if check_device(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 fast: a CUDA device with bf16, or a CPU with AVX-512
    BF16 or AMX (docs/benchmarks/precision.md: ×1.55 and quality within the paired SE)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()
