"""A KubeRay RayJob for one pipeline step: the manifest (a cluster of its own, like
infra/kuberay/rayjob-*.yaml), created with the kubernetes client and polled to its end.

KFP v2 has no ResourceOp, so a component creates the custom resource itself. The pod that
runs it needs RBAC to create and get ``rayjobs.ray.io`` in ``namespace``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
RAY_VERSION = "2.60.0"
IMAGE = "registry.example.com/knitwork:0.1.0"  # the image of infra/k8s and infra/kuberay
CUDA_TAG = "-cuda"  # GPU workers run IMAGE + CUDA_TAG
S3_SECRET = "knitwork-s3"  # the S3 keys (infra/k8s/secret.example.yaml)
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")  # its keys, each the env var boto3 reads
S3_ENV = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}  # beside them
TOKEN_SECRET = "knitwork-ray-token"  # the Ray auth token
TOKEN_KEY = "auth_token"  # its key; a client reads the token as RAY_AUTH_TOKEN
POLL_SECONDS = 15.0
FINISHED = ("SUCCEEDED", "FAILED", "STOPPED")  # status.jobStatus once the job has ended
SECURITY = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000}
CPU_WORKER = {"num-cpus": "4", "cpu": "4", "memory": "16Gi"}
GPU_WORKER = {"num-cpus": "8", "num-gpus": "1", "cpu": "8", "memory": "32Gi"}
HEAD = {"cpu": "2", "memory": "8Gi"}


class RayJobError(RuntimeError):
    """The RayJob failed, ended without success, or did not end in time."""


@dataclass(frozen=True, kw_only=True)
class RayJobSpec:
    """What a step's RayJob runs, and on what."""

    entrypoint: str  # a shell command run on the head, e.g. ``knitwork restore ...``
    name_prefix: str  # metadata.generateName, e.g. ``knitwork-restore-``
    tracking_uri: str  # MLFLOW_TRACKING_URI in every Ray container
    s3_endpoint: str  # AWS_ENDPOINT_URL in every Ray container
    namespace: str = "knitwork"
    image: str = IMAGE
    gpus: bool = False  # a GPU worker group (CUDA image) instead of a CPU one
    max_workers: int = 4
    deadline_seconds: int = 43200  # spec.activeDeadlineSeconds


def pod_env(tracking_uri: str, s3_endpoint: str) -> list[dict[str, Any]]:
    """The environment every knitwork process reads, as in infra/kuberay."""
    plain = {"MLFLOW_TRACKING_URI": tracking_uri, "AWS_ENDPOINT_URL": s3_endpoint, **S3_ENV}
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in plain.items() if v]
    for key in S3_KEYS:
        env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": S3_SECRET, "key": key}}})
    return env


def _container(name: str, image: str, env: list, resources: dict[str, str]) -> dict[str, Any]:
    amounts = {k: v for k, v in resources.items() if k in ("cpu", "memory")}
    if "num-gpus" in resources:
        amounts["nvidia.com/gpu"] = resources["num-gpus"]
    return {
        "name": name,
        "image": image,
        "env": env,
        "resources": {"requests": dict(amounts), "limits": dict(amounts)},
        "securityContext": {"allowPrivilegeEscalation": False},
    }


def head_group(spec: RayJobSpec) -> dict[str, Any]:
    """The head: the driver only (num-cpus 0), with the ports KubeRay submits through."""
    container = _container(
        "ray-head", spec.image, pod_env(spec.tracking_uri, spec.s3_endpoint), HEAD
    )
    container["ports"] = [
        {"name": "gcs", "containerPort": 6379},
        {"name": "dashboard", "containerPort": 8265},
        {"name": "client", "containerPort": 10001},
    ]
    return {
        "rayStartParams": {"num-cpus": "0"},
        "template": {"spec": {"securityContext": SECURITY, "containers": [container]}},
    }


def worker_group(spec: RayJobSpec) -> dict[str, Any]:
    """One CPU or GPU worker group; a GPU group keeps one worker up from the start (the
    commands ask for GPUs only when the cluster has them when they start)."""
    shape = GPU_WORKER if spec.gpus else CPU_WORKER
    image = spec.image + CUDA_TAG if spec.gpus else spec.image
    env = pod_env(spec.tracking_uri, spec.s3_endpoint)
    pod: dict[str, Any] = {
        "securityContext": SECURITY,
        "containers": [_container("ray-worker", image, env, shape)],
    }
    if spec.gpus:
        pod["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return {
        "groupName": "gpu" if spec.gpus else "cpu",
        "replicas": 1,
        "minReplicas": 1,
        "maxReplicas": max(1, spec.max_workers),
        "rayStartParams": {k: v for k, v in shape.items() if k.startswith("num-")},
        "template": {"spec": pod},
    }


def rayjob_manifest(spec: RayJobSpec) -> dict[str, Any]:
    """The RayJob custom resource: its own autoscaling cluster, deleted when the job ends."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RayJob",
        "metadata": {
            "generateName": spec.name_prefix,
            "namespace": spec.namespace,
            "labels": {"app.kubernetes.io/part-of": "knitwork"},
        },
        "spec": {
            "entrypoint": spec.entrypoint,
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            "activeDeadlineSeconds": spec.deadline_seconds,
            "backoffLimit": 0,
            "rayClusterSpec": {
                "rayVersion": RAY_VERSION,
                "authOptions": {"mode": "token", "secretName": TOKEN_SECRET},
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {"idleTimeoutSeconds": 120},
                "headGroupSpec": head_group(spec),
                "workerGroupSpecs": [worker_group(spec)],
            },
        },
    }


def custom_objects_api():
    """The kubernetes CustomObjectsApi: in-cluster credentials, else ~/.kube/config."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def create_rayjob(api: Any, manifest: dict[str, Any]) -> str:
    """Create the RayJob; returns its generated name."""
    namespace = manifest["metadata"]["namespace"]
    created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    return created["metadata"]["name"]


def wait_for_rayjob(
    api: Any, name: str, namespace: str, timeout: float, poll: float = POLL_SECONDS
) -> dict[str, Any]:
    """Poll the RayJob until its job has ended; returns its status. Raises RayJobError when
    the job did not succeed, its deployment failed, or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        status = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        status = status.get("status", {})
        job, deployment = status.get("jobStatus", ""), status.get("jobDeploymentStatus", "")
        if job == "SUCCEEDED":
            return status
        if job in FINISHED or deployment == "Failed":
            raise RayJobError(
                f"RayJob {namespace}/{name}: job {job or '-'}, deployment {deployment or '-'}: "
                f"{status.get('message', 'no message')}; see `kubectl -n {namespace} logs "
                f"-l job-name={name}`"
            )
        if time.monotonic() > deadline:
            raise RayJobError(f"RayJob {namespace}/{name}: not finished after {timeout:.0f} s")
        time.sleep(poll)


def run_rayjob(spec: RayJobSpec, timeout: float | None = None) -> str:
    """Create the step's RayJob and wait for it to succeed; returns its name."""
    api = custom_objects_api()
    name = create_rayjob(api, rayjob_manifest(spec))
    print(f"created RayJob {spec.namespace}/{name}: {spec.entrypoint}", flush=True)
    wait_for_rayjob(api, name, spec.namespace, timeout or spec.deadline_seconds + 600)
    return name
