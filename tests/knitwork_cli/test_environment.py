"""Process-wide defaults come from the entry layer only, and joining a cluster by address
keeps the user's own Ray settings (auth included)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from knitwork_cli import environment

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ("knitwork", "pipeline", "tune", "knitwork_compare")
RAY_KEYS = ("RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED")


@pytest.fixture
def env():
    """os.environ as the test leaves it is put back afterwards, whatever apply() wrote."""
    saved = dict(os.environ)
    for key in (*RAY_KEYS, "RAY_ADDRESS", "MLFLOW_LOGGING_LEVEL", *environment.MLFLOW_DEFAULTS):
        os.environ.pop(key, None)
    yield os.environ
    os.environ.clear()
    os.environ.update(saved)


def test_local_cluster_settings_are_forced_over_the_users(env):
    env.update(RAY_AUTH_MODE="token", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1")
    environment.apply("restore", None)
    assert env["RAY_AUTH_MODE"] == "disabled"
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"  # loopback-only listeners


@pytest.mark.parametrize("address", ["10.20.30.40:6379", "ray://head.example:10001"])
@pytest.mark.parametrize("command", ["restore", "bench", "tune"])
def test_joining_a_remote_cluster_changes_no_ray_setting(env, address, command):
    env.update(RAY_AUTH_MODE="token", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1")
    environment.apply(command, address)
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "1"
    assert "RAY_USAGE_STATS_ENABLED" not in env


def test_ray_address_in_the_environment_counts_as_joining(env):
    env["RAY_ADDRESS"] = "10.20.30.40:6379"
    environment.apply("tune", None)
    assert "RAY_AUTH_MODE" not in env and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in env


def test_joining_a_cluster_on_this_machine_keeps_auth(env):
    env["RAY_AUTH_MODE"] = "token"
    environment.apply("restore", "127.0.0.1:6379")
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"  # else Ray cannot reach 127.0.0.1


def test_commands_without_ray_touch_no_ray_setting_and_keep_user_values(env):
    env["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "99"
    environment.apply("fit", None)
    assert not any(key in env for key in RAY_KEYS)
    assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "99"  # a default, never an override
    assert (
        env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
        == environment.MLFLOW_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    )


def test_the_console_is_quiet_unless_verbose_and_the_users_level_wins(env):
    environment.apply("restore", None)
    assert env["MLFLOW_LOGGING_LEVEL"] == "WARNING"
    env.pop("MLFLOW_LOGGING_LEVEL")
    environment.apply("restore", None, verbose=True)
    assert "MLFLOW_LOGGING_LEVEL" not in env
    env["MLFLOW_LOGGING_LEVEL"] = "DEBUG"
    environment.apply("fit", None)
    assert env["MLFLOW_LOGGING_LEVEL"] == "DEBUG"


def _environment_writes(path: Path) -> list[str]:
    """Calls that set process-wide state: os.environ writes, putenv, logger levels."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            text = ast.unparse(node.func)
            if text in ("os.environ.setdefault", "os.environ.update", "os.putenv") or (
                text.endswith(".setLevel") and "getLogger" in text
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text}")
    return found


# Entry points other than the command: a KFP component's first call, in its pod's own process.
ENTRY_POINTS = {ROOT / "pipeline" / "kubeflow" / "steps.py": "use_services"}


def test_library_code_sets_no_process_wide_defaults():
    files = [p for pkg in LIBRARIES for p in (ROOT / pkg).rglob("*.py") if p not in ENTRY_POINTS]
    writes = [w for p in files for w in _environment_writes(p)]
    assert not writes, writes


def test_kubeflow_steps_set_the_environment_only_in_their_entry_function():
    for path, function in ENTRY_POINTS.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        allowed = next(n for n in ast.walk(tree) if getattr(n, "name", None) == function)
        inside = {n.lineno for n in ast.walk(allowed) if hasattr(n, "lineno")}
        lines = {int(w.split(":")[1]) for w in _environment_writes(path)}
        assert lines and lines <= inside, (path, lines)
