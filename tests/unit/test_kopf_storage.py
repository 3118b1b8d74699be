"""The diff base kopf keeps per object is skipped for Jobs, which have no change handlers."""

from __future__ import annotations

import json
from typing import Any

import kopf
import pytest

from kadence_operator import handlers
from kadence_operator.api import GROUP, VERSION, Job, Queue
from kadence_operator.kopfstorage import DiffBaseStorage
from kadence_operator.settings import OperatorSettings

ANNOTATION = f"{GROUP}/last-handled-configuration"


def _storage() -> DiffBaseStorage:
    return DiffBaseStorage(
        untracked=handlers.UNTRACKED_KINDS, prefix=GROUP, key="last-handled-configuration"
    )


def _body(kind: str, *, stored: dict[str, Any] | None = None) -> kopf.Body:
    annotations = {ANNOTATION: json.dumps(stored)} if stored is not None else {}
    return kopf.Body(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {
                "namespace": "ns",
                "name": "x",
                "uid": "u-1",
                "labels": {"team": "a"},
                "annotations": annotations,
            },
            "spec": {"partitions": 2},
            "status": {"phase": "whatever"},
        }
    )


def test_the_untracked_kinds_have_no_change_handlers_timers_or_daemons() -> None:
    # The premise of skipping their diff base: kopf would compare it only for these handlers.
    registry = kopf.OperatorRegistry()
    handlers.register(registry, OperatorSettings())
    untracked = {kind for _, kind in handlers.UNTRACKED_KINDS}
    assert untracked == {Job.crd.kind}
    plurals = {Job.crd.plural}
    selecting = [
        handler.id
        for handler in [
            *registry._changing.get_all_handlers(),
            *registry._spawning.get_all_handlers(),
        ]
        if handler.selector is not None and handler.selector.any_name in plurals
    ]
    assert selecting == []
    # ...and they are still watched (the scheduler needs every event).
    watched = [h.selector.any_name for h in registry._watching.get_all_handlers() if h.selector]
    assert Job.crd.plural in watched


@pytest.mark.parametrize("stored", [None, {"spec": {"partitions": 1}}])
def test_a_job_has_an_empty_diff_base_stored_or_not(stored: dict[str, Any] | None) -> None:
    storage, body = _storage(), _body(Job.crd.kind, stored=stored)
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) == {}


def test_other_kinds_are_tracked_as_kopf_does() -> None:
    storage = _storage()
    plain = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    body = _body(Queue.crd.kind, stored={"spec": {"partitions": 1}})
    essence = storage.build(body=body)
    assert essence == plain.build(body=body)
    assert essence["spec"] == {"partitions": 2}
    assert storage.fetch(body=body) == {"spec": {"partitions": 1}}
