"""Table tests for the status writer's pure parts: the merge patch and the stale-event guard."""

from __future__ import annotations

from typing import Any

import pytest

from kadence_operator.statuswriter import _older, merge_patch


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        ({}, {}, {}),
        ({"a": 1}, {"a": 1}, {}),
        ({}, {"a": 1}, {"a": 1}),
        ({"a": 1}, {"a": 2}, {"a": 2}),
        ({"a": 1}, {}, {"a": None}),  # removed keys are nulled
        ({"a": 1, "b": 2}, {"b": 2}, {"a": None}),
        # nested objects are diffed key by key
        ({"c": {"x": 1, "y": 2}}, {"c": {"x": 1, "y": 3}}, {"c": {"y": 3}}),
        ({"c": {"x": 1, "y": 2}}, {"c": {"x": 1}}, {"c": {"y": None}}),
        ({"c": {"x": 1}}, {"c": {"x": 1}}, {}),
        ({"c": {}}, {"c": {"x": 1}}, {"c": {"x": 1}}),
        # lists are replaced whole (JSON merge patch has no list diff)
        ({"runs": [1, 2]}, {"runs": [1, 2]}, {}),
        ({"runs": [1, 2]}, {"runs": [2, 1]}, {"runs": [2, 1]}),
        (
            {"runs": [{"id": "a"}]},
            {"runs": [{"id": "a"}, {"id": "b"}]},
            {"runs": [{"id": "a"}, {"id": "b"}]},
        ),
        # a type change is a replacement
        ({"a": {"x": 1}}, {"a": 5}, {"a": 5}),
        ({"a": 5}, {"a": {"x": 1}}, {"a": {"x": 1}}),
        # an explicit null in the new status is a value to write
        ({"a": 1}, {"a": None}, {"a": None}),
        ({}, {"a": None}, {"a": None}),
        (
            {"counters": {"dispatched": 3, "skipped": 0}, "nextRunTime": "T1"},
            {"counters": {"dispatched": 4, "skipped": 0}, "nextRunTime": "T2"},
            {"counters": {"dispatched": 4}, "nextRunTime": "T2"},
        ),
    ],
)
def test_merge_patch(old: dict[str, Any], new: dict[str, Any], patch: dict[str, Any]) -> None:
    assert merge_patch(old, new) == patch


def _apply(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge-patch application, to check that applying the patch gives ``new``."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _apply(result[key], value)
        else:
            result[key] = value
    return result


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"a": 1, "b": {"c": [1], "d": "x"}}, {"b": {"c": [1, 2]}, "e": True}),
        ({"conditions": [{"type": "Ready"}]}, {"conditions": []}),
        ({"x": {"y": {"z": 1}}}, {"x": {"y": {}}}),
    ],
)
def test_merge_patch_round_trips(old: dict[str, Any], new: dict[str, Any]) -> None:
    assert _apply(old, merge_patch(old, new)) == new


@pytest.mark.parametrize(
    ("new", "cached", "older"),
    [
        ({"uid": "u", "resourceVersion": "5"}, {"uid": "u", "resourceVersion": "7"}, True),
        ({"uid": "u", "resourceVersion": "7"}, {"uid": "u", "resourceVersion": "7"}, False),
        ({"uid": "u", "resourceVersion": "9"}, {"uid": "u", "resourceVersion": "7"}, False),
        # another object (re-created with the same name): never "older"
        ({"uid": "v", "resourceVersion": "5"}, {"uid": "u", "resourceVersion": "7"}, False),
        # opaque (non-integer) versions are not compared
        ({"uid": "u", "resourceVersion": "a5"}, {"uid": "u", "resourceVersion": "7"}, False),
        ({"uid": "u"}, {"uid": "u", "resourceVersion": "7"}, False),
    ],
)
def test_older(new: dict[str, Any], cached: dict[str, Any], older: bool) -> None:
    assert _older(new, cached) is older
