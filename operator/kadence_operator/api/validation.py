"""Validation of Queue and Job bodies beyond what the CRD schema can check, and parse helpers.

The API server enforces the generated schema (types, enums, patterns, ranges, CEL rules). Some
things it cannot check; the operator checks them here and reports them on the object (a
``Ready=False`` condition) instead of acting on it:

- a cron expression that has the 5/6-field shape but is not valid cron (``"61 * * * *"``),
  uses the non-deterministic H/R tokens, or never fires (``"0 0 30 2 *"``);
- a time zone name that is well formed but unknown (``"Mars/Base"``);
- a payload larger than 64 KiB (CEL cannot measure serialized JSON);
- duplicate worker environment variable names.

Every problem is a string that starts with the field path, e.g.
``spec.schedule.timeZone: unknown time zone "Mars/Base"``.

The operator's entry points are :func:`parse_job` and :func:`parse_queue` (body -> typed spec,
raising :class:`InvalidResource` listing every problem), or :func:`check_job` /
:func:`check_queue` (body -> list of problems, never raising).

Pure: croniter, zoneinfo and pydantic only; no I/O besides reading the tz database.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from pydantic import ValidationError

from kadence_operator.api.common import DNS_LABEL
from kadence_operator.api.job import MAX_PAYLOAD_BYTES, JobSpec, payload_size
from kadence_operator.api.queue import QueueSpec
from kadence_operator.scheduling.schedule import cron_problem

__all__ = [
    "InvalidResource",
    "check_job",
    "check_queue",
    "cron_has_seconds",
    "format_validation_error",
    "job_semantic_problems",
    "parse_job",
    "parse_queue",
    "queue_semantic_problems",
    "validate_cron",
    "validate_payload",
    "validate_time_zone",
]


SpecT = TypeVar("SpecT", JobSpec, QueueSpec)


class InvalidResource(ValueError):
    """A Queue or Job body that the operator cannot act on.

    ``problems`` lists every problem found, each starting with the field path
    (``spec.schedule.cron: ...``); ``str()`` joins them into one message.
    """

    def __init__(self, kind: str, problems: Sequence[str]) -> None:
        self.kind = kind
        self.problems = list(problems)
        super().__init__(f"invalid {kind}: " + "; ".join(self.problems))


# --------------------------------------------------------------------------------------------
# Semantic checks on single values
# --------------------------------------------------------------------------------------------


def cron_has_seconds(expression: str) -> bool:
    """True for a 6-field expression, whose first field is seconds."""
    return len(expression.split()) == 6


def validate_cron(expression: str, path: str = "spec.schedule.cron") -> list[str]:
    """Problems with a cron expression (syntax, value ranges, H/R tokens, never firing): the
    scheduling core's own check (:func:`kadence_operator.scheduling.schedule.cron_problem`), so
    what passes here is what the scheduler runs."""
    problem = cron_problem(expression)
    return [] if problem is None else [f"{path}: {problem}"]


@functools.lru_cache(maxsize=512)
def _zone_problem(name: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return f'unknown time zone "{name}" (use an IANA name such as "Europe/Berlin" or "UTC")'
    return None


def validate_time_zone(name: str, path: str = "spec.schedule.timeZone") -> list[str]:
    """Problems with an IANA time zone name: it must exist in the tz database."""
    problem = _zone_problem(name)
    return [] if problem is None else [f"{path}: {problem}"]


def validate_payload(payload: Any, path: str = "spec.payload") -> list[str]:
    """Problems with a task payload: it must be JSON and at most 64 KiB as compact JSON."""
    try:
        size = payload_size(payload)
    except (TypeError, ValueError) as error:
        return [f"{path}: not JSON-serializable: {error}"]
    if size > MAX_PAYLOAD_BYTES:
        return [
            f"{path}: payload is {size} bytes as JSON, more than the limit of "
            f"{MAX_PAYLOAD_BYTES} (64 KiB); put large inputs in object storage and use spec.input"
        ]
    return []


# --------------------------------------------------------------------------------------------
# Semantic checks on whole specs
# --------------------------------------------------------------------------------------------


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def job_semantic_problems(spec: Mapping[str, Any] | JobSpec, path: str = "spec") -> list[str]:
    """What the schema cannot check about a Job spec (cron syntax, time zone, payload size).

    Takes the raw spec mapping (camelCase keys, as the API server stores it) or a
    :class:`JobSpec`. Parts with the wrong shape are skipped; those are schema problems.
    """
    raw = spec.to_k8s() if isinstance(spec, JobSpec) else spec
    problems: list[str] = []
    if "payload" in raw and raw["payload"] is not None:
        problems += validate_payload(raw["payload"], f"{path}.payload")
    schedule = _mapping(raw.get("schedule"))
    cron = schedule.get("cron")
    if isinstance(cron, str):
        problems += validate_cron(cron, f"{path}.schedule.cron")
    time_zone = schedule.get("timeZone")
    if isinstance(time_zone, str):
        problems += validate_time_zone(time_zone, f"{path}.schedule.timeZone")
    return problems


def queue_semantic_problems(spec: Mapping[str, Any] | QueueSpec, path: str = "spec") -> list[str]:
    """What the schema cannot check about a Queue spec (duplicate worker env names)."""
    raw = spec.to_k8s() if isinstance(spec, QueueSpec) else spec
    problems: list[str] = []
    workers = _mapping(raw.get("workers"))
    env = workers.get("env")
    if isinstance(env, list):
        seen: set[str] = set()
        for index, item in enumerate(env):
            name = _mapping(item).get("name")
            if isinstance(name, str):
                if name in seen:
                    problems.append(
                        f"{path}.workers.env[{index}].name: duplicate environment variable {name!r}"
                    )
                seen.add(name)
    return problems


# --------------------------------------------------------------------------------------------
# Pydantic errors -> field paths
# --------------------------------------------------------------------------------------------

_GOT_TYPES = (str, int, float, bool)


def _join_path(parts: Iterable[str | int]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif text:
            text += f".{part}"
        else:
            text = str(part)
    return text


def format_validation_error(error: ValidationError, prefix: str = "spec") -> list[str]:
    """One ``path: message`` line per pydantic error, with Kubernetes field names.

    ``prefix`` is the path of the validated object (``"spec"`` for a spec).
    """
    problems: list[str] = []
    for item in error.errors(include_url=False):
        loc: list[str | int] = [prefix] if prefix else []
        loc += list(item["loc"])
        context = item.get("ctx") or {}
        field_path = context.get("field_path") if item["type"] == "cel_rule" else None
        if field_path:
            loc += [part for part in str(field_path).split(".") if part]
        message = str(item["msg"]).removeprefix("Value error, ")
        value = item.get("input")
        if item["type"] not in ("missing", "cel_rule") and isinstance(value, _GOT_TYPES):
            shown = repr(value)
            if len(shown) > 80:
                shown = shown[:77] + "..."
            if shown not in message:
                message += f" (got {shown})"
        problems.append(f"{_join_path(loc) or '<root>'}: {message}")
    return problems


def _plain(value: Any) -> Any:
    """A deep copy with plain dicts and lists (kopf hands out Mapping views)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _spec_of(body: Mapping[str, Any]) -> Any:
    return _plain(body.get("spec")) if isinstance(body, Mapping) else None


def _name_problems(body: Mapping[str, Any]) -> list[str]:
    """The CRDs restrict names to DNS-1123 labels (they end up in NATS names)."""
    metadata = body.get("metadata") if isinstance(body, Mapping) else None
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(name, str):
        return []
    try:
        DNS_LABEL.check(name)
    except ValueError as error:
        return [f"metadata.name: {error}"]
    return []


def check_job(body: Mapping[str, Any]) -> list[str]:
    """Every problem with a Job body (name, spec schema rules, semantic checks); never raises."""
    return _name_problems(body) + _check(JobSpec, job_semantic_problems, _spec_of(body))[1]


def check_queue(body: Mapping[str, Any]) -> list[str]:
    """Every problem with a Queue body (name, spec schema rules, semantic checks); never raises."""
    return _name_problems(body) + _check(QueueSpec, queue_semantic_problems, _spec_of(body))[1]


def parse_job(body: Mapping[str, Any]) -> JobSpec:
    """Validate a Job body (as the API server returns it) and return its typed spec.

    Raises :class:`InvalidResource` listing every problem, each naming its field path.
    """
    spec, problems = _check(JobSpec, job_semantic_problems, _spec_of(body))
    problems = _name_problems(body) + problems
    if problems or spec is None:
        raise InvalidResource("Job", problems or ["spec: required"])
    return spec


def parse_queue(body: Mapping[str, Any]) -> QueueSpec:
    """Validate a Queue body (as the API server returns it) and return its typed spec.

    Raises :class:`InvalidResource` listing every problem, each naming its field path.
    """
    spec, problems = _check(QueueSpec, queue_semantic_problems, _spec_of(body))
    problems = _name_problems(body) + problems
    if problems or spec is None:
        raise InvalidResource("Queue", problems or ["spec: required"])
    return spec


def _check(
    model: type[SpecT],
    semantic: Callable[[Mapping[str, Any]], list[str]],
    raw: Any,
) -> tuple[SpecT | None, list[str]]:
    if not isinstance(raw, Mapping):
        return None, ["spec: required, must be an object"]
    spec: SpecT | None = None
    problems: list[str] = []
    try:
        spec = model.model_validate(raw)
    except ValidationError as error:
        problems = format_validation_error(error, "spec")
    reported = {problem.split(":", 1)[0] for problem in problems}
    problems += [p for p in semantic(raw) if p.split(":", 1)[0] not in reported]
    return (spec if not problems else None), problems
