"""What every benchmark shares: the line describing the machine, and publishing a table."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch


def describe() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (
        f"{cpu}, {os.cpu_count()} CPUs{gpu}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


def publish(path: str | Path, lines: list[str], tail: str = "") -> None:
    """Write a markdown report (creating its folder) and print it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n" + tail, encoding="utf-8")
    print("\n".join(lines))


def publish_section(doc: Path, name: str, lines: list[str], title: str) -> None:
    """Replace (or append) the part of ``doc`` between ``<!-- NAME: start -->`` and
    ``<!-- NAME: end -->`` with ``lines``, and print the doc (``title`` starts a new one)."""
    start, end = f"<!-- {name}: start -->", f"<!-- {name}: end -->"
    text = doc.read_text(encoding="utf-8") if doc.exists() else f"# {title}\n"
    block = "\n".join([start, *lines, end])
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if start in text else text.rstrip() + "\n\n" + block
    publish(doc, [text.rstrip()])
