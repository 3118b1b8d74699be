"""The kind cluster comes up and the Kadence CRDs install into it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.kind
def test_cluster_accepts_kadence_crds(kind_cluster: Any) -> None:
    kind_cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    out = kind_cluster.kubectl("get", "crd", "-o", "name")
    assert "customresourcedefinition.apiextensions.k8s.io/jobs.kadence.io" in out
    assert "customresourcedefinition.apiextensions.k8s.io/queues.kadence.io" in out
