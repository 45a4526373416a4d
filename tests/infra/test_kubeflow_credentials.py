"""What the Kubeflow pipeline's step pods get to reach S3 and Ray, read from the compiled YAML's
Kubernetes platform spec (kfp-kubernetes): the S3 keys on every step that reads or writes S3,
the Ray token on the steps that join the RayCluster, from Secrets of the names and keys that
infra/k8s defines; the token turning on Ray's token auth; and the RBAC the RayJob steps need.
Offline: no Kubernetes, no KFP server (kfp.local ignores the platform spec, so
test_kubeflow_e2e.py cannot check any of this)."""

from __future__ import annotations

import ast
import copy
import inspect
import os
import re
import subprocess
import sys
import textwrap

import pytest

from pipeline.kubeflow import components, rayjob
from pipeline.kubeflow.steps import Settings
from tests.infra.manifests import (
    ROOT,
    containers,
    documents,
    kubeflow_pipeline,
    name_of,
    objects,
    secrets,
)

S3_STEPS = {"validate-inputs", "write-named-preset", "search-hyperparameters",
            "select-best-trial", "restore-batch"}  # fmt: skip
RAY_STEPS = {"search-hyperparameters", "restore-batch"}  # they join ray_address in cluster mode
S3_ENV = {key: key for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}  # as boto3 reads
TOKEN_ENV = {"auth_token": "RAY_AUTH_TOKEN"}  # what a Ray client reads the token from


def secrets_as_env(platform: dict) -> dict[str, dict[str, dict[str, str]]]:
    """Step → Secret name → {Secret key: env var}, from the platform spec."""
    executors = platform["deploymentSpec"]["executors"]
    found: dict[str, dict[str, dict[str, str]]] = {}
    for name, config in executors.items():
        for ref in config.get("secretAsEnv", []):
            mapping = {m["secretKey"]: m["envVar"] for m in ref["keyToEnv"]}
            found.setdefault(name.removeprefix("exec-"), {})[ref["secretName"]] = mapping
    return found


def unresolved(platform: dict, defined: dict[str, set[str]]) -> list[str]:
    """The Secret names and keys the pipeline uses that infra/k8s does not define."""
    return [
        f"{step}: {secret}/{key}"
        for step, used in secrets_as_env(platform).items()
        for secret, mapping in used.items()
        for key in mapping
        if key not in defined.get(secret, set())
    ]


def test_each_step_gets_exactly_the_credentials_it_uses() -> None:
    """S3 keys where S3 is read or written, the token where Ray is joined, nothing for the
    report and summary (MLflow proxies the artifacts the report reads)."""
    spec, platform = kubeflow_pipeline()
    steps = {name.removeprefix("exec-") for name in spec["deploymentSpec"]["executors"]}
    assert steps > S3_STEPS | RAY_STEPS
    wanted = {
        step: ({rayjob.S3_SECRET: S3_ENV} if step in S3_STEPS else {})
        | ({rayjob.TOKEN_SECRET: TOKEN_ENV} if step in RAY_STEPS else {})
        for step in steps
    }
    assert {step: secrets_as_env(platform).get(step, {}) for step in steps} == wanted


def test_secret_names_are_constants_every_backend_reads() -> None:
    """Each Secret name is in both fields: ``secretName`` (what KFP backends before
    parameterised names read) and ``secretNameParameter`` as a constant; none is optional, so
    a missing Secret stops the pod at start instead of failing later without credentials."""
    executors = kubeflow_pipeline()[1]["deploymentSpec"]["executors"]
    refs = [ref for config in executors.values() for ref in config["secretAsEnv"]]
    assert refs
    for ref in refs:
        assert ref["secretNameParameter"] == {"runtimeValue": {"constant": ref["secretName"]}}
        assert ref["optional"] is False


def test_pipeline_secrets_are_the_ones_infra_k8s_defines() -> None:
    defined, (_, platform) = secrets(), kubeflow_pipeline()
    assert unresolved(platform, defined) == []
    drifted = copy.deepcopy(platform)
    executors = drifted["deploymentSpec"]["executors"]
    executors["exec-validate-inputs"]["secretAsEnv"][0]["secretName"] = "knitwork-s3-keys"
    assert unresolved(drifted, defined) == [
        "validate-inputs: knitwork-s3-keys/AWS_ACCESS_KEY_ID",
        "validate-inputs: knitwork-s3-keys/AWS_SECRET_ACCESS_KEY",
    ]


def test_secret_keys_become_the_env_vars_infra_kuberay_uses() -> None:
    """Where an infra manifest maps the same Secret key into a container, it uses the same
    env var name as the pipeline; the steps' plain AWS settings equal those of infra/kuberay."""
    every = [(doc, e) for _, doc in documents() for c in containers(doc) for e in c.get("env", [])]
    mapped = {
        (ref["name"], ref["key"]): env["name"]
        for _, env in every
        if (ref := env.get("valueFrom", {}).get("secretKeyRef"))
        and not env["name"].startswith("MINIO_")  # MinIO's own names for the same keys
    }
    spec, platform = kubeflow_pipeline()
    for used in secrets_as_env(platform).values():
        for secret, mapping in used.items():
            for key, env in mapping.items():
                assert mapped.get((secret, key), env) == env, (secret, key, env)
    assert (rayjob.S3_SECRET, "AWS_ACCESS_KEY_ID") in mapped
    ray_env = {e["name"]: e.get("value") for doc, e in every if doc["kind"] == "RayCluster"}
    executors = spec["deploymentSpec"]["executors"]
    for step in S3_STEPS:
        plain = {e["name"]: e["value"] for e in executors[f"exec-{step}"]["container"]["env"]}
        assert plain == rayjob.S3_ENV and rayjob.S3_ENV.items() <= ray_env.items(), step


@pytest.fixture
def clean_env(monkeypatch):
    """The variables `Settings.apply` sets, unset here and restored after the test."""
    for key in ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_LOGGING_LEVEL", "RAY_AUTH_MODE",
                "RAY_AUTH_TOKEN"):  # fmt: skip
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    return monkeypatch


def cluster_settings(mode: str = "cluster") -> Settings:
    return Settings(
        task="inpaint",
        tracking_uri="http://mlflow.knitwork.svc:5000",
        ray_mode=mode,
        ray_address="ray://knitwork-head-svc.knitwork.svc:10001",
    )


def test_a_token_turns_on_token_auth_in_cluster_mode(clean_env) -> None:
    cluster_settings().apply()
    assert "RAY_AUTH_MODE" not in os.environ  # no token (kfp.local): nothing changes
    clean_env.setenv("RAY_AUTH_TOKEN", "t0ken")
    cluster_settings("rayjob").apply()
    assert "RAY_AUTH_MODE" not in os.environ  # the RayJob's own pods get the token
    cluster_settings().apply()
    assert os.environ["RAY_AUTH_MODE"] == "token"
    clean_env.setenv("RAY_AUTH_MODE", "disabled")
    cluster_settings().apply()
    assert os.environ["RAY_AUTH_MODE"] == "disabled"  # a mode set on purpose stays


def test_the_restore_step_sets_the_mode_before_ray_reads_it() -> None:
    """Ray reads RAY_AUTH_MODE once, when imported, and the restore step runs its driver in its
    own process: it applies its settings before importing anything that may import ray. A
    fresh Python, as in the step's pod, with the token and no mode in its environment."""
    body = inspect.getsource(components.restore_batch.python_func)
    assert body.index("settings.apply()") < body.index("pipeline.kubeflow.batch")
    script = textwrap.dedent("""
        import sys
        from pipeline.kubeflow.steps import Settings
        assert "ray" not in sys.modules, "importing the steps imports ray"
        Settings(task="inpaint", tracking_uri="http://m:5000", ray_address="ray://h:1").apply()
        import ray
        from ray._raylet import AuthenticationMode, get_authentication_mode
        print(get_authentication_mode() == AuthenticationMode.TOKEN)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_")}
    env["RAY_AUTH_TOKEN"] = "t0ken"
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, text=True,
                          capture_output=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "True"


def verbs_rayjob_calls() -> set[str]:
    """The verbs of the CustomObjectsApi calls in pipeline/kubeflow/rayjob.py."""
    tree = ast.parse(inspect.getsource(rayjob))
    calls = [n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute)]  # fmt: skip
    return {m[1] for c in calls if (m := re.fullmatch(r"([a-z]+)_namespaced_custom_object", c))}


def test_the_rayjob_steps_may_do_what_they_do_and_no_more() -> None:
    """infra/k8s grants rayjobs.ray.io in `knitwork` exactly the verbs rayjob.py calls, to a
    service account of another namespace (KFP's, where the step pods run)."""
    assert verbs_rayjob_calls() == {"create", "get"}
    (_, role), = objects("Role")  # fmt: skip
    (rule,) = role["rules"]
    assert (rule["apiGroups"], rule["resources"]) == ([rayjob.GROUP], [rayjob.PLURAL])
    assert set(rule["verbs"]) == verbs_rayjob_calls()
    (path, binding), = objects("RoleBinding")  # fmt: skip
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": name_of(role)}  # fmt: skip
    (subject,) = binding["subjects"]
    assert subject["kind"] == "ServiceAccount" and subject["namespace"] != "knitwork", path
