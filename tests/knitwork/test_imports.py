"""The core never needs ray, mlflow or boto3."""

from __future__ import annotations

import subprocess
import sys

BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"ray", "mlflow", "boto3", "botocore"}:
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
import pkgutil, importlib, knitwork
for mod in pkgutil.walk_packages(knitwork.__path__, "knitwork."):
    importlib.import_module(mod.name)
blocked = [m for m in sys.modules if m.split(".")[0] in {"ray", "mlflow", "boto3", "botocore"}]
assert not blocked, blocked
print("ok", len(list(pkgutil.walk_packages(knitwork.__path__))))
"""


def test_knitwork_imports_without_ray_mlflow_boto3():
    out = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok ") and int(out.stdout.split()[1]) >= 8
