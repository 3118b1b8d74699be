"""What the operator keeps of every Job it has seen (``runtime.KnownJob``)."""

from __future__ import annotations

from typing import Any

import pytest

from kadence_operator.runtime import KnownJob

#: The metadata an Event names the Job by.
IDENTITY = {
    "namespace": "team-a",
    "name": "nightly",
    "uid": "0b1c8a1e-1111-2222-3333-444455556666",
    "resourceVersion": "4711",
}


def _job(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kadence.io/v1alpha1",
        "kind": "Job",
        "metadata": {**IDENTITY, "generation": 3, "managedFields": [{"manager": "kubectl"}]},
        "spec": spec,
        "status": {"active": [{"runId": "r1"}]},
    }


@pytest.mark.parametrize(
    ("history", "limits"),
    [
        (None, (3, 3)),
        ({}, (3, 3)),
        ({"succeeded": 10}, (10, 3)),
        ({"succeeded": 0, "failed": 50}, (0, 50)),
        # An invalid Job is kept too (its Events need it); its Ready condition says what is wrong.
        ({"succeeded": "many", "failed": None}, (3, 3)),
        ("not-a-map", (3, 3)),
    ],
)
def test_history_limits_are_read_once(history: Any, limits: tuple[int, int]) -> None:
    spec: dict[str, Any] = {"queue": "q", "task": "t"}
    if history is not None:
        spec["historyLimits"] = history
    assert KnownJob.of(_job(spec)).limits == limits


def test_the_event_object_names_the_job_and_nothing_else() -> None:
    known = KnownJob.of(_job({"queue": "q", "task": "t"}))
    assert known.event_object() == {
        "apiVersion": "kadence.io/v1alpha1",
        "kind": "Job",
        "metadata": IDENTITY,
    }


def test_a_body_without_metadata_does_not_raise() -> None:
    known = KnownJob.of({"spec": {}})
    assert (known.namespace, known.name, known.uid, known.limits) == ("", "", "", (3, 3))
