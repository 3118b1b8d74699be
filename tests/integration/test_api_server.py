"""The generated CRDs on the real API server: examples apply, bad manifests are refused by field,
``kubectl explain`` prints the field docs and ``kubectl get kadence`` shows the printer columns.

Semantic problems (bad cron syntax, unknown time zone, payload size …) are stored by the API server
and reported by the operator as ``Ready=False``: see ``test_operator.py`` for that path.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from kadence_devstack.kube import KubeControlPlane
from tests.data.invalid_manifests import INVALID_MANIFESTS, VALID_MANIFESTS

from .harness import REPO, install_crds, kubectl

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def namespace(kube: KubeControlPlane) -> str:
    install_crds(kube)
    name = f"api-{uuid.uuid4().hex[:6]}"
    kubectl(kube, "create", "namespace", name)
    return name


def _apply(kube: KubeControlPlane, namespace: str, manifest: dict[str, Any]) -> str:
    return kubectl(kube, "apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))


def test_examples_apply_and_show_in_get_kadence(kube: KubeControlPlane, namespace: str) -> None:
    out = kubectl(kube, "apply", "-n", namespace, "-f", str(REPO / "examples"))
    assert "created" in out
    table = kubectl(kube, "get", "kadence", "-n", namespace)
    header = table.splitlines()[0].split()
    for column in ("PARTITIONS", "REPLICAS", "PENDING", "READY", "QUEUE", "SCHEDULE", "SUSPEND"):
        assert column in header or column in table, table
    assert "queue.kadence.io/" in table
    assert "job.kadence.io/" in table


def test_kubectl_explain_prints_field_docs(kube: KubeControlPlane, namespace: str) -> None:
    out = kubectl(kube, "explain", "jobs.kadence.io.spec.schedule")
    assert "interval" in out
    assert "cron" in out
    assert "timeZone" in out
    out = kubectl(kube, "explain", "queues.kadence.io.spec.delivery.ackWait")
    assert "ack" in out.lower()


@pytest.mark.parametrize(
    "case", [c for c in INVALID_MANIFESTS if c.rejection == "schema"], ids=lambda c: c.id
)
def test_invalid_manifest_is_refused_naming_the_field(
    kube: KubeControlPlane, namespace: str, case: Any
) -> None:
    with pytest.raises(RuntimeError) as info:
        _apply(kube, namespace, case.manifest)
    assert case.field in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "case", [c for c in INVALID_MANIFESTS if c.rejection == "semantic"], ids=lambda c: c.id
)
def test_semantic_problems_are_stored_for_the_operator(
    kube: KubeControlPlane, namespace: str, case: Any
) -> None:
    # The schema cannot see these; the operator reports them (Ready=False naming the field).
    _apply(kube, namespace, case.manifest)


@pytest.mark.parametrize(
    ("case_id", "manifest"), VALID_MANIFESTS, ids=[v[0] for v in VALID_MANIFESTS]
)
def test_valid_manifest_is_accepted(
    kube: KubeControlPlane, namespace: str, case_id: str, manifest: dict[str, Any]
) -> None:
    _apply(kube, namespace, manifest)
