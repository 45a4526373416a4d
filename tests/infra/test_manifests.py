"""The manifests under infra/: KubeRay objects against the CRD schemas in infra/schemas, RayJob
entrypoints against our real CLI parser, and names, images, secrets, env and resources
consistent across files. Offline: no cluster, no registry."""

from __future__ import annotations

import copy
import hashlib
import re
import shlex

import pytest

from knitwork_cli.main import build_parser
from tests.infra.manifests import (
    BUCKETS,
    CORE_KINDS,
    CRD_FILES,
    CUDA_IMAGE,
    GPU,
    IMAGE,
    INFRA,
    K8S,
    LIBRARY_ENV,
    PROVIDED,
    ROOT,
    SCHEMAS,
    cluster_specs,
    containers,
    cpu,
    documents,
    env_the_code_reads,
    find_key,
    name_of,
    num,
    objects,
    per_unit,
    ray_container,
    ray_groups,
    ray_groups_of,
    schema_errors,
    secrets,
    subcommands,
)


def test_manifests_are_there() -> None:
    kinds = {doc.get("kind") for _, doc in documents()}
    assert {"RayCluster", "RayJob", "Deployment", "Service", "Secret", "Kustomization"} <= kinds
    for path, doc in documents():
        assert doc.get("apiVersion") and doc.get("kind"), f"{path}: apiVersion and kind"
        assert doc["kind"] == "Kustomization" or name_of(doc), f"{path}: metadata.name"


@pytest.mark.parametrize(
    "path, doc",
    objects(*CRD_FILES),
    ids=[f"{d['kind']}/{name_of(d)}" for _, d in objects(*CRD_FILES)],
)
def test_kuberay_objects_match_crd_schema(path: str, doc: dict) -> None:
    assert doc["apiVersion"] == "ray.io/v1", f"{path}: ray.io/v1 is the served storage version"
    assert schema_errors(doc) == [], path


def test_other_ray_kinds_have_a_schema() -> None:
    for path, doc in documents():
        if doc["apiVersion"].startswith("ray.io/"):
            assert doc["kind"] in CRD_FILES, f"{path}: no CRD schema for {doc['kind']}"


WRONG = {
    "unknown-field": ("RayCluster", lambda s: s["workerGroupSpecs"][0].update(maxReplica=3)),
    "wrong-type": ("RayCluster", lambda s: s.update(enableInTreeAutoscaling="yes")),
    "wrong-enum": ("RayCluster", lambda s: s["authOptions"].update(mode="password")),
    "missing-field": ("RayCluster", lambda s: s["headGroupSpec"].pop("template")),
    "job-unknown-field": ("RayJob", lambda s: s.update(entryPoint="knitwork")),
    "bad-quantity": ("RayJob", lambda s: ray_container(s["rayClusterSpec"]["headGroupSpec"])[
        "resources"]["limits"].update(cpu="2 cores")),
}  # fmt: skip
NEEDLES = {
    "unknown-field": "'maxReplica' was unexpected",
    "wrong-type": "is not of type 'boolean'",
    "wrong-enum": "is not one of",
    "missing-field": "'template' is a required property",
    "job-unknown-field": "'entryPoint' was unexpected",
    "bad-quantity": "does not match",
}


@pytest.mark.parametrize("case", WRONG)
def test_schema_check_rejects_wrong_fields(case: str) -> None:
    """The validation can fail: unknown fields, wrong types and values, missing fields."""
    kind, change = WRONG[case]
    doc = copy.deepcopy(objects(kind)[0][1])
    change(doc["spec"])
    assert any(NEEDLES[case] in error for error in schema_errors(doc)), schema_errors(doc)


def test_schema_copies_are_the_recorded_ones() -> None:
    readme = (INFRA / "schemas" / "README.md").read_text()
    for file in CRD_FILES.values():
        digest = hashlib.sha256((SCHEMAS / file).read_bytes()).hexdigest()
        assert f"kuberay/{file} | {digest} |" in readme, f"{file} changed; update the README"


RAYJOBS = objects("RayJob")
RAYJOB_IDS = [name_of(d).rstrip("-") for _, d in RAYJOBS]


@pytest.mark.parametrize("path, doc", RAYJOBS, ids=RAYJOB_IDS)
def test_rayjob_entrypoint_is_a_command_our_cli_accepts(path: str, doc: dict, capsys) -> None:
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[0] == "knitwork", f"{path}: the entrypoint runs the knitwork command"
    parser = build_parser()
    assert argv[1] in subcommands(parser), f"{path}: `knitwork {argv[1]}` does not exist"
    try:
        parser.parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"{path}: knitwork rejects the entrypoint: {capsys.readouterr().err}")
    for uri in re.findall(r"s3://([^/\s]+)", doc["spec"]["entrypoint"]):
        assert uri in BUCKETS, f"{path}: bucket {uri} is not made by minio-buckets.yaml"


@pytest.mark.parametrize("path, doc", RAYJOBS, ids=RAYJOB_IDS)
def test_rayjob_cluster_fits_its_tasks(path: str, doc: dict) -> None:
    """A worker group fits one task; a GPU ask finds a GPU already up when the driver starts
    (restore and tune check the cluster's GPUs once, at start, and else run on CPUs)."""
    argv = shlex.split(doc["spec"]["entrypoint"])
    cpus, gpus = per_unit(argv, "cpus", 1.0), per_unit(argv, "gpus", 0.0)
    fitting = [
        g
        for _, g, head in ray_groups_of(doc["spec"]["rayClusterSpec"])
        if not head and num(g, "num-cpus") >= cpus and num(g, "num-gpus") >= gpus
    ]
    assert fitting, f"{path}: no worker group has {cpus} CPUs and {gpus} GPUs for one task"
    if gpus > 0:
        assert any(g["minReplicas"] >= 1 for g in fitting), f"{path}: GPU group minReplicas 0"
    assert doc["spec"].get("shutdownAfterJobFinishes") is True, f"{path}: cluster left running"


@pytest.mark.parametrize("gid, group, head", ray_groups(), ids=[g[0] for g in ray_groups()])
def test_ray_group_resources_match_ray_start_params(gid: str, group: dict, head: bool) -> None:
    resources = ray_container(group)["resources"]
    requests, limits = resources["requests"], resources["limits"]
    for key in ("cpu", "memory", GPU):
        assert requests.get(key) == limits.get(key), f"{gid}: {key} request != limit"
    assert "cpu" in limits and "memory" in limits, f"{gid}: cpu and memory limits"
    ray_cpus, pod_cpus = num(group, "num-cpus"), cpu(limits["cpu"])
    if head:
        assert ray_cpus <= pod_cpus, f"{gid}: num-cpus {ray_cpus} > container {pod_cpus}"
    else:
        assert ray_cpus == pod_cpus, f"{gid}: num-cpus {ray_cpus} != container {pod_cpus}"
        assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        assert group["maxReplicas"] >= 1, gid
    pod_gpus = cpu(limits.get(GPU, 0))
    assert num(group, "num-gpus") == pod_gpus, f"{gid}: num-gpus != {GPU} limit {pod_gpus}"
    want = CUDA_IMAGE if pod_gpus > 0 else IMAGE
    assert ray_container(group)["image"] == want, f"{gid}: GPU pods need the CUDA image"


def test_images_are_pinned_and_consistent() -> None:
    ours = {c["image"] for _, doc in documents() for c in containers(doc)}
    assert {IMAGE, CUDA_IMAGE} <= ours
    for image in ours - {IMAGE, CUDA_IMAGE}:
        assert not image.startswith(IMAGE.split(":")[0]), f"{image}: another knitwork tag"
        tag = image.rpartition(":")[2]
        assert "/" not in tag and tag not in ("", "latest"), f"{image}: pin a tag"
    doc = (ROOT / "docs" / "cluster.md").read_text()
    assert IMAGE in doc and CUDA_IMAGE in doc, "docs/cluster.md builds other image names"


def test_secret_references_resolve() -> None:
    defined, used = secrets(), set()
    for path, doc in documents():
        for ref in find_key(doc, "secretKeyRef"):
            assert ref["key"] in defined.get(ref["name"], ()), f"{path}: {ref} is not defined"
            used.add(ref["name"])
        for ref in find_key(doc, "secretRef"):
            assert ref["name"] in defined, f"{path}: {ref} is not defined"
            used.add(ref["name"])
    for cid, spec in cluster_specs():
        auth = spec.get("authOptions", {})
        assert auth.get("mode") == "token", f"{cid}: token auth (RAY_AUTH_MODE comes from it)"
        assert "auth_token" in defined.get(auth.get("secretName"), ()), f"{cid}: token Secret"
        used.add(auth["secretName"])
    assert used == set(defined), f"Secrets never referenced: {set(defined) - used}"


def test_example_secrets_hold_only_placeholders() -> None:
    for path, doc in objects("Secret"):
        assert "data" not in doc, f"{path}: use stringData placeholders"
        for key, value in doc["stringData"].items():
            assert "CHANGE-ME" in value, f"{path}: {key} must be a marked placeholder"


def test_env_scan_finds_what_the_pipeline_reads() -> None:
    assert {"MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL"} <= env_the_code_reads()


@pytest.mark.parametrize("gid, group, head", ray_groups(), ids=[g[0] for g in ray_groups()])
def test_ray_containers_set_every_env_the_code_reads(gid: str, group: dict, head: bool) -> None:
    have = {e["name"] for e in ray_container(group).get("env", [])}
    missing = (env_the_code_reads() - set(PROVIDED)) | set(LIBRARY_ENV)
    assert not missing - have, f"{gid}: set {sorted(missing - have)} (or explain in PROVIDED)"


def test_service_urls_point_at_defined_services() -> None:
    ports = {
        name_of(doc): {p["port"] for p in doc["spec"]["ports"]} for _, doc in objects("Service")
    }
    urls = 0
    for path, doc in documents():
        for container in containers(doc):
            for env in container.get("env", []):
                match = re.fullmatch(r"https?://([^:/]+):(\d+)/?", str(env.get("value", "")))
                if match:
                    host, port = match[1], int(match[2])
                    assert port in ports.get(host, ()), f"{path}: {env} names no Service"
                    urls += 1
    assert urls >= 3


def test_services_and_deployments_agree() -> None:
    pods = [d["spec"]["template"] for _, d in objects("Deployment")]
    claims = {name_of(d) for _, d in objects("PersistentVolumeClaim")}
    for path, doc in objects("Deployment"):
        selector = doc["spec"]["selector"]["matchLabels"]
        assert selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items(), path
        for claim in find_key(doc, "persistentVolumeClaim"):
            assert claim["claimName"] in claims, f"{path}: {claim} is not defined"
    for path, doc in objects("Service"):
        selected = [
            p for p in pods if doc["spec"]["selector"].items() <= p["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, f"{path}: the selector matches {len(selected)} Deployments"
        named = {p.get("name") for c in containers(selected[0]) for p in c.get("ports", [])}
        for port in doc["spec"]["ports"]:
            assert port["targetPort"] in named, f"{path}: targetPort {port['targetPort']}"


def test_core_kinds_and_kustomization() -> None:
    for path, doc in documents():
        if doc["kind"] in CORE_KINDS:
            assert doc["apiVersion"] == CORE_KINDS[doc["kind"]], path
        else:
            assert doc["kind"] in {*CRD_FILES, "Kustomization"}, f"{path}: unchecked kind"
    (_, kustomization), *_ = objects("Kustomization")
    listed = set(kustomization["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert "secret.example.yaml" not in listed, "apply -k must not overwrite real Secrets"
    assert listed == files - {"secret.example.yaml"}, "kustomization.yaml misses files"
    assert kustomization["namespace"] == "knitwork"
    for path, doc in documents():
        namespace = doc.get("metadata", {}).get("namespace")
        assert namespace in (None, "knitwork"), f"{path}: one namespace for everything"
    for _, doc in objects("Job"):
        for script in find_key(doc, "command"):
            assert all(f'"{b}"' in " ".join(script) for b in BUCKETS), "bucket job"
    for _, doc in objects("Deployment"):
        for arg in (a for c in containers(doc) for a in c.get("command", [])):
            if arg.startswith("--artifacts-destination="):
                assert arg.split("//")[1].split("/")[0] in BUCKETS, arg
