"""Loading and reading the infra/ manifests for tests/infra: YAML documents, the KubeRay CRD
schemas (strict), Ray groups and containers, and the environment variables our code reads."""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
SCHEMAS = INFRA / "schemas" / "kuberay"
KUBEFLOW = INFRA / "kubeflow"  # compiled KFP pipeline specs: tests/infra/test_kubeflow.py
K8S = INFRA / "k8s"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
CORE_KINDS = {
    "Namespace": "v1",
    "Secret": "v1",
    "Service": "v1",
    "PersistentVolumeClaim": "v1",
    "Deployment": "apps/v1",
    "Job": "batch/v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
}
IMAGE = "registry.example.com/knitwork:0.1.0"
CUDA_IMAGE = f"{IMAGE}-cuda"
GPU = "nvidia.com/gpu"
BUCKETS = ("knitwork", "mlflow")  # made by infra/k8s/minio-buckets.yaml
CODE = ("knitwork", "pipeline", "tune")  # the packages whose env reads the pods must satisfy
# Read by our code but not for the manifests to set: Ray or KubeRay set them inside Ray pods,
# or only a workstation's `knitwork stack up` (pipeline/stack.py) reads them, never a pod.
PROVIDED = {
    "RAY_ADDRESS": "Ray's job supervisor sets it for a RayJob entrypoint",
    "RAY_AUTH_MODE": "KubeRay sets it from spec.authOptions.mode",
    "RAY_AUTH_TOKEN": "KubeRay sets it from spec.authOptions.secretName (the pipeline's Ray "
    "steps: test_kubeflow_credentials.py)",
    "MINIO_ROOT_USER": "knitwork stack up: the local MinIO's root user",
    "MINIO_ROOT_PASSWORD": "knitwork stack up: the local MinIO's root password",
}
LIBRARY_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")  # boto3

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def documents() -> tuple[tuple[str, dict], ...]:
    """(file relative to the repo, document) for every YAML document under infra/."""
    skipped = (SCHEMAS, KUBEFLOW)  # CRD schemas, and KFP pipeline specs (not Kubernetes objects)
    files = sorted(p for p in INFRA.rglob("*.y*ml") if not any(s in p.parents for s in skipped))
    found = []
    for path in files:
        with path.open() as f:
            found += [(str(path.relative_to(ROOT)), d) for d in yaml.load_all(f, _Loader) if d]
    return tuple(found)


def kubeflow_pipeline(name: str = "knitwork_pipeline.yaml") -> tuple[dict, dict]:
    """A compiled KFP pipeline under infra/kubeflow: its pipeline spec, and its Kubernetes
    platform spec (kfp-kubernetes settings: a second YAML document; {} without one)."""
    spec, *platform = yaml.load_all((KUBEFLOW / name).read_text(), _Loader)
    return spec, (platform[0]["platforms"]["kubernetes"] if platform else {})


def objects(*kinds: str) -> list[tuple[str, dict]]:
    return [(path, doc) for path, doc in documents() if doc.get("kind") in kinds]


def name_of(doc: dict) -> str:
    meta = doc.get("metadata", {})
    return meta.get("name") or meta.get("generateName", "")


def cluster_specs() -> list[tuple[str, dict]]:
    """Every Ray cluster: RayClusters and the clusters RayJobs create."""
    specs = [(f"RayCluster/{name_of(d)}", d["spec"]) for _, d in objects("RayCluster")]
    specs += [(f"RayJob/{name_of(d)}", d["spec"]["rayClusterSpec"]) for _, d in objects("RayJob")]
    return specs


def ray_groups() -> list[tuple[str, dict, bool]]:
    """(id, group spec, is head) for the head and worker groups of every Ray cluster."""
    return [
        (f"{cid}/{name}", g, head)
        for cid, spec in cluster_specs()
        for name, g, head in ray_groups_of(spec)
    ]


def ray_groups_of(spec: dict) -> list[tuple[str, dict, bool]]:
    """(name, group spec, is head) for one Ray cluster spec."""
    groups = [("head", spec["headGroupSpec"], True)]
    return groups + [(g["groupName"], g, False) for g in spec.get("workerGroupSpecs", [])]


def ray_container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]  # KubeRay's Ray container


def containers(node: Any) -> Iterator[dict]:
    """Every container and init container anywhere in a document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from value
            else:
                yield from containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from containers(item)


def find_key(node: Any, key: str) -> Iterator[Any]:
    """Every value stored under ``key`` anywhere in a document."""
    if isinstance(node, dict):
        for k, value in node.items():
            if k == key:
                yield value
            yield from find_key(value, key)
    elif isinstance(node, list):
        for item in node:
            yield from find_key(item, key)


def strict(schema: dict) -> dict:
    """A copy that rejects unknown fields, as the API server's strict field validation does:
    every object schema with properties and no additionalProperties gets it set to false."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: strict(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = strict(out["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [strict(s) for s in out[key]]
    return out


@cache
def validator(kind: str) -> jsonschema.protocols.Validator:
    with (SCHEMAS / CRD_FILES[kind]).open() as f:
        crd = yaml.load(f, _Loader)
    assert crd["spec"]["names"]["kind"] == kind
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(strict(v1["schema"]["openAPIV3Schema"]))


def schema_errors(doc: dict) -> list[str]:
    errors = validator(doc["kind"]).iter_errors(doc)
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors)


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name for action in actions for name in action.choices}


def per_unit(argv: list[str], resource: str, default: float) -> float:
    """The value of --cpus-per-X / --gpus-per-X (task, trial, ...) in argv."""
    values = []
    for i, token in enumerate(argv):
        option, eq, value = token.partition("=")
        if re.fullmatch(rf"--{resource}-per-[a-z]+", option):
            values.append(float(value if eq else argv[i + 1]))
    return max(values, default=default)


def cpu(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def num(group: dict, param: str) -> float:
    """A group's Ray CPUs/GPUs: rayStartParams, else what KubeRay derives from the limits."""
    limits = ray_container(group)["resources"]["limits"]
    derived = cpu(limits.get("cpu", 0)) if param == "num-cpus" else cpu(limits.get(GPU, 0))
    return float(group.get("rayStartParams", {}).get(param, derived))


def secrets() -> dict[str, set[str]]:
    """Secret name → keys, for the Secrets defined in infra/k8s."""
    defined = {}
    for path, doc in objects("Secret"):
        assert path.startswith("infra/k8s/"), path
        defined[name_of(doc)] = set(doc.get("data", {})) | set(doc.get("stringData", {}))
    return defined


def _is_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def env_read(node: ast.AST) -> str | None:
    """NAME for os.environ.get("NAME"), os.getenv("NAME") and os.environ["NAME"]."""
    key = None
    if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
        func = node.func
        is_os = isinstance(func.value, ast.Name) and func.value.id == "os"
        if (func.attr == "get" and _is_environ(func.value)) or (func.attr == "getenv" and is_os):
            key = node.args[0]
    elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
        key = node.slice if _is_environ(node.value) else None
    return key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else None


@cache
def env_the_code_reads() -> frozenset[str]:
    names = set()
    for package in CODE:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            names |= {name for node in ast.walk(tree) if (name := env_read(node))}
    return frozenset(names)
