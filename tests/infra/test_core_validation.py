"""The core Kubernetes kinds under infra/ (Namespace, Secret, Service, PVC, Deployment, Job,
Role, RoleBinding) against the Kubernetes API schemas bundled with kubernetes-validate, in
strict mode (unknown fields rejected, as the API server's strict field validation does).
Offline: the schemas ship inside the package. RayCluster/RayJob are checked against the
KubeRay CRDs in test_manifests.py."""

from __future__ import annotations

import copy
import re
import tomllib

import kubernetes_validate
import pytest

from tests.infra.manifests import CORE_KINDS, CRD_FILES, ROOT, documents, name_of, objects

# The Kubernetes version the manifests target. Nothing in docs/ or infra/ names one; the
# kubernetes Python client is pinned to 30.1.0 in pyproject.toml (kfp needs <31), and client
# 30.x is the client for Kubernetes 1.30, so 1.30 it is (test_version_follows_the_client_pin).
# The manifests also validate unchanged against every schema kubernetes-validate 1.37.0 bundles
# (1.25 to 1.37).
KUBERNETES_VERSION = "1.30"

CORE = objects(*CORE_KINDS)
CORE_IDS = [f"{path}:{doc['kind']}/{name_of(doc)}" for path, doc in CORE]


def core_error(doc: dict) -> str | None:
    """None when the document validates strictly against KUBERNETES_VERSION, else the error
    kubernetes-validate reports first, as 'field.path: message'."""
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(map(str, error.absolute_path)) or "(root)"
        return f"{where}: {error.message}"
    return None


@pytest.mark.parametrize("path, doc", CORE, ids=CORE_IDS)
def test_core_objects_match_kubernetes_schema(path: str, doc: dict) -> None:
    error = core_error(doc)
    if error:
        pytest.fail(
            f"{path}: {doc['kind']}/{name_of(doc)} does not validate against Kubernetes "
            f"{KUBERNETES_VERSION} (kubernetes-validate, strict): {error}"
        )


def test_every_core_kind_is_checked() -> None:
    """The parametrised check is not empty, and no document under infra/ with a schema in
    kubernetes-validate (a core kind missing from CORE_KINDS) escapes it."""
    assert {doc["kind"] for _, doc in CORE} == set(CORE_KINDS)
    for path, doc in documents():
        if doc["kind"] in CORE_KINDS:
            continue
        assert doc["kind"] in {*CRD_FILES, "Kustomization"}, f"{path}: unchecked {doc['kind']}"
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def _container(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]["containers"][0]


BROKEN = {
    "misspelt-field": ("Deployment", lambda d: d["spec"].update(replica=1)),
    "wrong-type": ("Deployment", lambda d: d["spec"].update(replicas="1")),
    "misspelt-container-field": ("Deployment", lambda d: _container(d).update(
        imagePullPolice="Always")),
    "misspelt-secret-ref": ("Deployment", lambda d: _container(d)["env"][0]["valueFrom"][
        "secretKeyRef"].update(nam="knitwork-s3")),
    "missing-field": ("Deployment", lambda d: d["spec"].pop("selector")),
    "misspelt-metadata": ("Service", lambda d: d["metadata"].update(lables={})),
    "port-as-string": ("Service", lambda d: d["spec"]["ports"][0].update(port="9000")),
    "job-without-containers": ("Job", lambda d: d["spec"]["template"]["spec"].pop("containers")),
    "secret-data-not-a-map": ("Secret", lambda d: d.update(stringData=["CHANGE-ME"])),
    "role-verbs-not-a-list": ("Role", lambda d: d["rules"][0].update(verbs="create")),
    "binding-without-role-name": ("RoleBinding", lambda d: d["roleRef"].pop("name")),
}  # fmt: skip
NEEDLES = {
    "misspelt-field": "spec: Additional properties are not allowed ('replica' was unexpected)",
    "wrong-type": "spec.replicas: '1' is not of type 'integer'",
    "misspelt-container-field": "'imagePullPolice' was unexpected",
    "misspelt-secret-ref": "secretKeyRef: Additional properties are not allowed ('nam'",
    "missing-field": "spec: 'selector' is a required property",
    "misspelt-metadata": "metadata: Additional properties are not allowed ('lables'",
    "port-as-string": "spec.ports.0.port: '9000' is not of type 'integer'",
    "job-without-containers": "spec.template.spec: 'containers' is a required property",
    "secret-data-not-a-map": "stringData: ['CHANGE-ME'] is not of type 'object'",
    "role-verbs-not-a-list": "rules.0.verbs: 'create' is not of type 'array'",
    "binding-without-role-name": "roleRef: 'name' is a required property",
}


@pytest.mark.parametrize("case", BROKEN)
def test_core_check_rejects_broken_documents(case: str) -> None:
    """The check can fail: misspelt and unknown fields (strict mode), wrong types, missing
    required fields, on copies of our own manifests."""
    kind, change = BROKEN[case]
    doc = copy.deepcopy(objects(kind)[0][1])
    assert core_error(doc) is None
    change(doc)
    error = core_error(doc)
    assert error is not None and NEEDLES[case] in error, error


def test_version_follows_the_client_pin() -> None:
    """KUBERNETES_VERSION moves with the kubernetes client pin (client 30.x is Kubernetes
    1.30), and the pinned kubernetes-validate bundles its schemas."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = project["dependencies"] + project["optional-dependencies"]["dev"]
    (client,) = [m for p in pins if (m := re.fullmatch(r"kubernetes==(\d+)\.\d+\.\d+", p))]
    assert f"1.{client[1]}" == KUBERNETES_VERSION, (client[0], KUBERNETES_VERSION)
    (validator,) = [p for p in pins if p.startswith("kubernetes-validate==")]
    assert validator == f"kubernetes-validate=={kubernetes_validate.__version__}"
    bundled = kubernetes_validate.utils.all_versions()  # else it falls back to an older one
    assert f"{KUBERNETES_VERSION}.0" in bundled, bundled
