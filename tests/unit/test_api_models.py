"""The Queue/Job pydantic models and the operator's semantic validators, without any server.

The tables in :mod:`tests.data.invalid_manifests` are shared with the API-server tests: here every
``schema`` entry must be refused by pydantic and every ``semantic`` entry by the semantic
validators, each naming the offending field.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from kadence_operator.api import (
    API_VERSION,
    MAX_PAYLOAD_BYTES,
    TRIGGER_ANNOTATION,
    Condition,
    InvalidResource,
    Job,
    JobSpec,
    JobStatus,
    Queue,
    QueueSpec,
    QueueStatus,
    RunRecord,
    check_job,
    check_queue,
    cron_has_seconds,
    format_duration,
    job_semantic_problems,
    parse_duration,
    parse_duration_ns,
    parse_job,
    parse_queue,
    queue_semantic_problems,
    validate_cron,
    validate_payload,
    validate_time_zone,
)
from kadence_operator.api.common import ApiModel, CelRule
from tests.data.invalid_manifests import (
    INVALID_MANIFESTS,
    VALID_MANIFESTS,
    InvalidManifest,
    job,
    queue,
)

SCHEMA_CASES = [m for m in INVALID_MANIFESTS if m.rejection == "schema"]
SEMANTIC_CASES = [m for m in INVALID_MANIFESTS if m.rejection == "semantic"]


def _check(manifest: Mapping[str, Any]) -> list[str]:
    return check_job(manifest) if manifest["kind"] == "Job" else check_queue(manifest)


def _spec_model(manifest: Mapping[str, Any]) -> type[JobSpec] | type[QueueSpec]:
    return JobSpec if manifest["kind"] == "Job" else QueueSpec


# --------------------------------------------------------------------------------------------
# The shared tables
# --------------------------------------------------------------------------------------------


def test_the_invalid_table_is_big_and_covers_both_kinds_of_rejection() -> None:
    assert len(INVALID_MANIFESTS) >= 25
    assert len({m.id for m in INVALID_MANIFESTS}) == len(INVALID_MANIFESTS)
    assert {m.rejection for m in INVALID_MANIFESTS} == {"schema", "semantic"}
    assert {m.manifest["kind"] for m in INVALID_MANIFESTS} == {"Job", "Queue"}


@pytest.mark.parametrize("case", SCHEMA_CASES, ids=[m.id for m in SCHEMA_CASES])
def test_schema_rejections_are_refused_by_pydantic_naming_the_field(case: InvalidManifest) -> None:
    if not case.field.startswith("metadata."):
        with pytest.raises(ValidationError):
            _spec_model(case.manifest).model_validate(case.manifest["spec"])
    problems = _check(case.manifest)
    assert any(p.startswith(case.field) for p in problems), problems


@pytest.mark.parametrize("case", SEMANTIC_CASES, ids=[m.id for m in SEMANTIC_CASES])
def test_semantic_rejections_are_found_by_the_semantic_validators(case: InvalidManifest) -> None:
    spec = case.manifest["spec"]
    semantic = job_semantic_problems if case.manifest["kind"] == "Job" else queue_semantic_problems
    problems = semantic(spec)
    assert any(p.startswith(case.field) for p in problems), problems
    # ... and by the operator's entry points, which raise with every problem.
    parse = parse_job if case.manifest["kind"] == "Job" else parse_queue
    with pytest.raises(InvalidResource) as raised:
        parse(case.manifest)
    assert case.field in str(raised.value)


@pytest.mark.parametrize(
    "case",
    [m for m in SEMANTIC_CASES if m.field != "spec.payload"],
    ids=[m.id for m in SEMANTIC_CASES if m.field != "spec.payload"],
)
def test_semantic_rejections_pass_the_schema_models(case: InvalidManifest) -> None:
    """What the API server stores, the schema models accept: only the operator objects."""
    _spec_model(case.manifest).model_validate(case.manifest["spec"])


@pytest.mark.parametrize(
    ("manifest"), [m for _, m in VALID_MANIFESTS], ids=[i for i, _ in VALID_MANIFESTS]
)
def test_valid_manifests_pass_everything(manifest: dict[str, Any]) -> None:
    assert _check(manifest) == []
    model = Job if manifest["kind"] == "Job" else Queue
    resource = model.model_validate(manifest)
    assert resource.metadata.name == manifest["metadata"]["name"]
    assert resource.api_version == API_VERSION
    # Serialising and reading back gives the same object.
    spec = resource.spec
    assert type(spec).model_validate(spec.to_k8s()) == spec


# --------------------------------------------------------------------------------------------
# parse_job / parse_queue
# --------------------------------------------------------------------------------------------


def test_parse_job_returns_the_typed_spec_with_defaults() -> None:
    spec = parse_job(job("daily", schedule={"interval": None, "cron": "0 3 * * *"}))
    assert spec.queue == "reports"
    assert spec.task == "reports.build"
    assert spec.schedule is not None
    assert spec.schedule.cron == "0 3 * * *"
    assert spec.schedule.time_zone == "UTC"
    assert spec.schedule.spread == "none"
    assert spec.suspend is False
    assert spec.concurrency_policy == "Allow"
    assert spec.catch_up.policy == "One"
    assert spec.retry_policy.max_attempts == 3
    assert spec.retry_policy.backoff.initial == "1s"
    assert spec.retry_policy.backoff.factor == 2
    assert spec.retry_policy.backoff.max == "5m"
    assert spec.history_limits.succeeded == 3
    assert spec.history_limits.failed == 3


def test_parse_queue_returns_the_typed_spec_with_defaults() -> None:
    spec = parse_queue({"spec": {}})
    assert (spec.partitions, spec.replicas, spec.storage) == (1, 1, "file")
    assert spec.delivery.ack_wait == "30s"
    assert spec.delivery.max_deliver == 5
    assert spec.dead_letter.enabled is True
    assert spec.retention.discard == "old"
    assert spec.deletion_policy == "Delete"
    assert spec.workers is None
    assert spec.ack_wait_seconds() == 30


def test_parse_job_lists_every_problem_with_its_path() -> None:
    body = job(
        "many-problems",
        queue="Not_A_Label",
        concurrencyPolicy="Never",
        schedule={"interval": None, "cron": "0 3 * * *", "timeZone": "Mars/Base"},
    )
    with pytest.raises(InvalidResource) as raised:
        parse_job(body)
    error = raised.value
    assert error.kind == "Job"
    paths = sorted(problem.split(":", 1)[0] for problem in error.problems)
    assert paths == ["spec.concurrencyPolicy", "spec.queue", "spec.schedule.timeZone"]
    assert str(error).startswith("invalid Job: ")
    assert 'spec.schedule.timeZone: unknown time zone "Mars/Base"' in str(error)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({}, "spec: required", id="no-spec"),
        pytest.param({"spec": None}, "spec: required", id="null-spec"),
        pytest.param({"spec": "every day"}, "spec: required", id="string-spec"),
        pytest.param({"spec": {"queue": "q"}}, "spec.task: Field required", id="missing-task"),
    ],
)
def test_parse_job_rejects_bodies_without_a_usable_spec(
    body: dict[str, Any], expected: str
) -> None:
    with pytest.raises(InvalidResource, match=expected):
        parse_job(body)


class _KopfLikeBody(Mapping[str, Any]):
    """A read-only Mapping that is not a dict, like kopf's Body."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        return _KopfLikeBody(value) if isinstance(value, dict) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def test_parse_accepts_mapping_views_not_just_dicts() -> None:
    body = _KopfLikeBody(job("view", retryPolicy={"backoff": {"factor": 3}}))
    assert parse_job(body).retry_policy.backoff.factor == 3
    assert parse_queue(_KopfLikeBody(queue("view"))).partitions == 3


def test_parse_does_not_modify_the_body() -> None:
    body = job("untouched")
    before = copy.deepcopy(body)
    parse_job(body)
    assert body == before


# --------------------------------------------------------------------------------------------
# Field-level behaviour
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        pytest.param({"partitions": True}, "spec.partitions", id="bool-is-not-an-int"),
        pytest.param({"partitions": 2.5}, "spec.partitions", id="float-is-not-an-int"),
        pytest.param(
            {"workers": {"image": "i", "app": "a:b", "env": [{"name": "1X"}]}},
            "spec.workers.env[0].name",
            id="list-index-in-path",
        ),
        pytest.param(
            {"workers": {"image": "", "app": "a:b"}}, "spec.workers.image", id="empty-image"
        ),
        pytest.param(
            {"workers": {"image": "i", "app": "a:b", "replicas": -1}},
            "spec.workers.replicas",
            id="negative-replicas",
        ),
    ],
)
def test_queue_field_errors_name_the_path(spec: dict[str, Any], path: str) -> None:
    problems = check_queue({"spec": spec})
    assert any(p.startswith(path + ":") for p in problems), problems


def test_int_or_string_quantities_become_strings() -> None:
    spec = QueueSpec.model_validate(
        {
            "workers": {
                "image": "i",
                "app": "a:b",
                "resources": {"limits": {"cpu": 2, "memory": "1Gi"}},
            }
        }
    )
    assert spec.workers is not None
    assert spec.workers.resources is not None
    assert spec.workers.resources.limits == {"cpu": "2", "memory": "1Gi"}


def test_python_names_are_snake_case_and_kubernetes_names_camel_case() -> None:
    spec = JobSpec(queue="q", task="t", concurrency_policy="Forbid")
    dumped = spec.to_k8s()
    assert dumped["concurrencyPolicy"] == "Forbid"
    assert "concurrency_policy" not in dumped
    assert dumped["retryPolicy"]["backoff"]["initial"] == "1s"
    assert "payload" not in dumped  # unset fields are left out, not null


def test_backfill_from_is_spelled_from_in_kubernetes() -> None:
    spec = JobSpec.model_validate(
        {
            "queue": "q",
            "task": "t",
            "schedule": {"interval": "1h"},
            "backfill": {"from": "2025-01-01T00:00:00Z", "to": "2025-01-02T00:00:00+01:00"},
        }
    )
    assert spec.backfill is not None
    assert spec.backfill.from_ == datetime(2025, 1, 1, tzinfo=UTC)
    assert spec.to_k8s()["backfill"] == {
        "from": "2025-01-01T00:00:00Z",
        "to": "2025-01-02T00:00:00+01:00",
    }


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("2025-01-01", id="date-only"),
        pytest.param("2025-01-01 00:00:00Z", id="space-separator"),
        pytest.param("2025-01-01T00:00:00", id="no-offset"),
        pytest.param(1735689600, id="unix-seconds"),
        pytest.param("2025-01-01T00:00:00Z\n", id="trailing-newline"),
    ],
)
def test_date_times_must_be_rfc3339_with_an_offset(value: object) -> None:
    problems = check_job(job("t", **{"schedule": {"startAt": value}}))
    assert any(p.startswith("spec.schedule.startAt:") for p in problems), problems


def _with_payload(payload: object) -> dict[str, Any]:
    body = job("t")
    body["spec"]["payload"] = payload
    return body


def test_payload_limit_is_inclusive() -> None:
    overhead = len('{"b":""}')
    exactly = {"b": "x" * (MAX_PAYLOAD_BYTES - overhead)}
    assert validate_payload(exactly) == []
    assert check_job(_with_payload(exactly)) == []
    over = {"b": "x" * (MAX_PAYLOAD_BYTES - overhead + 1)}
    assert validate_payload(over)[0].startswith("spec.payload: payload is 65537 bytes")
    # one problem, not one from pydantic and another from the semantic check
    problems = check_job(_with_payload(over))
    assert len(problems) == 1
    assert problems[0].startswith("spec.payload: payload is 65537 bytes")


def test_payload_size_counts_utf8_bytes() -> None:
    euro = "€" * (MAX_PAYLOAD_BYTES // 3)  # 3 bytes each in UTF-8
    assert validate_payload(euro) != []


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"a": [1, 2.5, None, True]}, id="object"),
        pytest.param([1, 2, 3], id="array"),
        pytest.param("just a string", id="string"),
        pytest.param(42, id="number"),
    ],
)
def test_payload_is_any_json(payload: object) -> None:
    assert parse_job(_with_payload(payload)).payload == payload


# --------------------------------------------------------------------------------------------
# CEL rules mirrored in Python
# --------------------------------------------------------------------------------------------


def _models() -> list[type[ApiModel]]:
    seen: list[type[ApiModel]] = []
    stack: list[type[ApiModel]] = [Job, Queue]
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen.append(model)
        for info in model.model_fields.values():
            annotation = info.annotation
            for candidate in [annotation, *getattr(annotation, "__args__", ())]:
                for inner in [candidate, *getattr(candidate, "__args__", ())]:
                    if isinstance(inner, type) and issubclass(inner, ApiModel):
                        stack.append(inner)
    return seen


def test_every_cel_rule_has_a_message_and_a_python_mirror_unless_transition() -> None:
    rules: list[CelRule] = [rule for model in _models() for rule in model.__cel_rules__]
    assert len(rules) >= 10
    for rule in rules:
        assert rule.message
        assert "oldSelf" not in rule.rule  # transition rules go on fields, not here
        assert rule.check is not None, rule.rule


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        pytest.param({"interval": "1s"}, None, id="interval-1s-ok"),
        pytest.param({"interval": "999ms"}, "spec.schedule.interval", id="interval-999ms"),
        pytest.param({"interval": "1m", "jitter": "59s"}, None, id="jitter-below-interval"),
        pytest.param({"interval": "1m", "jitter": "1m"}, "spec.schedule.jitter", id="jitter-equal"),
        pytest.param(
            {"interval": None, "cron": "0 * * * *", "jitter": "2h"}, None, id="cron-jitter-free"
        ),
        pytest.param(
            {"startAt": "2025-01-01T01:00:00+01:00", "endAt": "2025-01-01T00:00:00Z"},
            "spec.schedule.endAt",
            id="same-instant-different-offsets",
        ),
        pytest.param(
            {"startAt": "2025-01-01T00:00:00Z", "endAt": "2025-01-01T00:00:01Z"},
            None,
            id="end-one-second-later",
        ),
    ],
)
def test_schedule_rules(schedule: dict[str, Any], problem: str | None) -> None:
    problems = check_job(job("t", schedule=schedule))
    if problem is None:
        assert problems == []
    else:
        assert [p.split(":", 1)[0] for p in problems] == [problem]


def test_autoscale_min_defaults_to_one_and_must_not_exceed_max() -> None:
    workers = {"image": "i", "app": "a:b", "autoscale": {"max": 1}}
    spec = QueueSpec.model_validate({"workers": workers})
    assert spec.workers is not None
    assert spec.workers.autoscale is not None
    assert spec.workers.autoscale.min == 1
    problems = check_queue({"spec": {"workers": {**workers, "autoscale": {"min": 2, "max": 1}}}})
    assert problems == ["spec.workers.autoscale.min: min must be less than or equal to max"]


def test_workers_with_a_command_need_no_app() -> None:
    workers = {"image": "i", "command": ["python", "-m", "worker"]}
    assert check_queue({"spec": {"workers": workers}}) == []


def test_rules_also_run_on_assignment() -> None:
    spec = JobSpec.model_validate({"queue": "q", "task": "t", "schedule": {"interval": "5m"}})
    assert spec.schedule is not None
    with pytest.raises(ValidationError, match="exactly one of interval or cron"):
        spec.schedule.cron = "* * * * *"


# --------------------------------------------------------------------------------------------
# Semantic validators
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        pytest.param("*/5 * * * *", None, id="every-5-minutes"),
        pytest.param("0 3 * * MON-FRI", None, id="weekday-names"),
        pytest.param("  0   3 * * *  ", None, id="extra-spaces"),
        pytest.param("0 0 L * *", None, id="last-day-of-month"),
        pytest.param("0 0 * * 5#3", None, id="third-friday"),
        pytest.param("*/10 * * * * *", None, id="six-fields-seconds-first"),
        pytest.param("0 0 29 2 *", None, id="leap-day"),
        pytest.param("@hourly", None, id="shorthand"),
        pytest.param("61 * * * *", "invalid cron expression", id="minute-61"),
        pytest.param("* 24 * * *", "invalid cron expression", id="hour-24"),
        pytest.param("60 * * * * *", "invalid cron expression", id="second-60"),
        pytest.param("0 0 12 * * MON 2025", "must have 5 fields", id="seven-fields"),
        pytest.param("0 0 30 2 *", "never fires", id="february-30"),
        pytest.param("H * * * *", "uses H or R", id="hash"),
        pytest.param("0 R * * *", "uses H or R", id="random"),
        pytest.param("@often", "unknown cron shorthand", id="bad-shorthand"),
    ],
)
def test_validate_cron(expression: str, problem: str | None) -> None:
    problems = validate_cron(expression)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert problems[0].startswith("spec.schedule.cron: ")
        assert problem in problems[0]


def test_cron_has_seconds() -> None:
    assert cron_has_seconds("* * * * * *")
    assert not cron_has_seconds("* * * * *")
    assert not cron_has_seconds("@daily")


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        pytest.param("UTC", True, id="utc"),
        pytest.param("Europe/Berlin", True, id="berlin"),
        pytest.param("America/Argentina/Buenos_Aires", True, id="three-parts"),
        pytest.param("Etc/GMT+5", True, id="etc-offset"),
        pytest.param("Mars/Base", False, id="mars"),
        pytest.param("Europe/Berlinn", False, id="typo"),
        pytest.param("/etc/passwd", False, id="absolute-path"),
        pytest.param("", False, id="empty"),
    ],
)
def test_validate_time_zone(name: str, ok: bool) -> None:
    problems = validate_time_zone(name, "spec.schedule.timeZone")
    if ok:
        assert problems == []
    else:
        assert problems == [
            f'spec.schedule.timeZone: unknown time zone "{name}" '
            '(use an IANA name such as "Europe/Berlin" or "UTC")'
        ]


def test_semantic_validators_accept_models_too() -> None:
    spec = JobSpec.model_validate(
        {"queue": "q", "task": "t", "schedule": {"cron": "0 3 * * *", "timeZone": "Asia/Tokyo"}}
    )
    assert job_semantic_problems(spec) == []
    assert queue_semantic_problems(QueueSpec()) == []


def test_semantic_validators_skip_malformed_parts() -> None:
    """Wrong shapes are schema problems; the semantic pass must not crash on them."""
    assert job_semantic_problems({"schedule": "daily"}) == []
    assert job_semantic_problems({"schedule": {"cron": 5, "timeZone": None}}) == []
    assert queue_semantic_problems({"workers": {"env": "X=1"}}) == []
    assert queue_semantic_problems({"workers": {"env": [None, {"name": 3}]}}) == []


# --------------------------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("1s", timedelta(seconds=1), id="1s"),
        pytest.param("5m", timedelta(minutes=5), id="5m"),
        pytest.param("1h30m", timedelta(hours=1, minutes=30), id="1h30m"),
        pytest.param("1.5h", timedelta(minutes=90), id="fraction"),
        pytest.param("250ms", timedelta(milliseconds=250), id="ms"),
        pytest.param("10us", timedelta(microseconds=10), id="us"),
        pytest.param("10µs", timedelta(microseconds=10), id="micro-sign"),
        pytest.param("1500ns", timedelta(microseconds=1), id="ns-truncated"),
        pytest.param("2h45m30.5s", timedelta(hours=2, minutes=45, seconds=30.5), id="compound"),
        pytest.param("1m1m", timedelta(minutes=2), id="repeated-unit"),
        pytest.param("0s", timedelta(0), id="zero"),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("5", id="no-unit"),
        pytest.param("0", id="bare-zero"),
        pytest.param("-5s", id="negative"),
        pytest.param("+5s", id="plus"),
        pytest.param("5 m", id="space"),
        pytest.param("5min", id="long-unit"),
        pytest.param("1d", id="days"),
        pytest.param(".5s", id="leading-dot"),
        pytest.param("5.s", id="trailing-dot"),
        pytest.param("5s\n", id="trailing-newline"),
        pytest.param("2562048h", id="overflow"),
    ],
)
def test_parse_duration_rejects_with_the_value_in_the_message(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as raised:
        parse_duration(text)
    assert repr(text) in str(raised.value)


def test_parse_duration_limits_are_gos() -> None:
    assert parse_duration_ns("2562047h47m16.854775807s") == 2**63 - 1
    with pytest.raises(ValueError, match="maximum"):
        parse_duration_ns("2562047h47m16.854775808s")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(timedelta(0), "0s", id="zero"),
        pytest.param(timedelta(seconds=5), "5s", id="seconds"),
        pytest.param(timedelta(hours=1, minutes=30), "1h30m", id="hours-minutes"),
        pytest.param(timedelta(days=2), "48h", id="days-as-hours"),
        pytest.param(timedelta(milliseconds=250), "250ms", id="ms"),
        pytest.param(timedelta(microseconds=1500), "1500us", id="us"),
        pytest.param(timedelta(minutes=1, milliseconds=500), "1m0.5s", id="fractional-seconds"),
    ],
)
def test_format_duration_round_trips(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(text) == value


def test_format_duration_rejects_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_duration(timedelta(seconds=-1))


# --------------------------------------------------------------------------------------------
# Resources, status and the trigger annotation
# --------------------------------------------------------------------------------------------


def test_trigger_annotation() -> None:
    assert TRIGGER_ANNOTATION == "kadence.io/trigger"
    body = job("t")
    assert Job.model_validate(body).trigger() is None
    body["metadata"]["annotations"] = {TRIGGER_ANNOTATION: "1738300000"}
    assert Job.model_validate(body).trigger() == "1738300000"


def test_resource_bodies_from_the_api_server_validate_with_unknown_metadata() -> None:
    body = job("from-server")
    body["metadata"].update(
        {
            "namespace": "demo",
            "uid": "0b7c",
            "generation": 4,
            "resourceVersion": "123",
            "creationTimestamp": "2025-01-31T09:00:00Z",
            "managedFields": [{"manager": "kubectl"}],
        }
    )
    body["status"] = {"observedGeneration": 3, "lastResult": "Succeeded", "somethingNew": 1}
    resource = Job.model_validate(body)
    assert resource.metadata.generation == 4
    assert resource.status.observed_generation == 3
    assert resource.status.last_result == "Succeeded"


def test_wrong_kind_or_api_version_is_refused() -> None:
    with pytest.raises(ValidationError, match="kind"):
        Job.model_validate({**job("t"), "kind": "Queue"})
    with pytest.raises(ValidationError, match="apiVersion"):
        Queue.model_validate({**queue("t"), "apiVersion": "kadence.io/v1"})


def test_status_serialises_to_kubernetes_json() -> None:
    now = datetime(2025, 1, 31, 9, 0, tzinfo=UTC)
    status = JobStatus(
        observed_generation=2,
        next_run_time=now + timedelta(minutes=5),
        last_schedule_time=now,
        last_result="Failed",
        conditions=[
            Condition(type="Ready", status="True", reason="Valid", last_transition_time=now)
        ],
        runs=[RunRecord(run_id="r-1", state="Failed", attempts=3, error="ValueError: boom")],
    )
    dumped = status.to_k8s()
    assert dumped["nextRunTime"] == "2025-01-31T09:05:00Z"
    assert dumped["lastScheduleTime"] == "2025-01-31T09:00:00Z"
    assert dumped["conditions"] == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Valid",
            "lastTransitionTime": "2025-01-31T09:00:00Z",
        }
    ]
    assert dumped["runs"][0] == {
        "runId": "r-1",
        "attempts": 3,
        "state": "Failed",
        "output": [],
        "error": "ValueError: boom",
    }
    assert dumped["counters"]["deadLettered"] == 0
    assert JobStatus.model_validate(dumped) == status


def test_status_refuses_naive_datetimes() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        JobStatus(next_run_time=datetime(2025, 1, 1))


def test_queue_status_round_trips() -> None:
    status = QueueStatus.model_validate(
        {
            "stream": "KADENCE_demo_reports",
            "subjects": ["kadence.demo.reports.0"],
            "pending": 3,
            "ackPending": 1,
            "workers": {"desired": 2, "ready": 1},
            "lastSyncTime": "2025-01-31T09:00:00.5Z",
        }
    )
    assert status.ack_pending == 1
    assert status.workers is not None
    assert status.workers.ready == 1
    assert QueueStatus.model_validate(status.to_k8s()) == status
