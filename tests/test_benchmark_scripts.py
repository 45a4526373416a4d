"""The benchmark scripts under benchmarks/ are run by hand, not by the suite: this checks that
each one still imports (a renamed helper once left one failing at its first line)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

IMPORT_ALL = """
import importlib, json, pathlib, sys, traceback
failed = {}
for path in sorted(pathlib.Path(".").glob("*.py")):
    try:
        importlib.import_module(path.stem)
    except Exception:
        failed[path.name] = traceback.format_exc(limit=-1)
print(json.dumps(failed))
"""


def test_every_benchmark_script_imports():
    scripts = sorted(p.name for p in BENCHMARKS.glob("*.py"))
    assert "quality.py" in scripts and "denoise_sets.py" in scripts
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    failed = json.loads(done.stdout.strip().splitlines()[-1])
    assert failed == {}, "\n".join(f"{name}:\n{why}" for name, why in failed.items())
