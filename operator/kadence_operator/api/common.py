"""Building blocks shared by the Queue and Job API models.

The pydantic models in :mod:`kadence_operator.api` are the single source of the Kadence API:
the CRD schemas in ``crds/`` are generated from them (:mod:`kadence_operator.crdgen`) and the
operator validates custom-resource bodies with them. To keep both sides in agreement, every
constraint is declared once, here or next to the field, in a form that serves both:

- :class:`ApiModel` is the base of every object: camelCase aliases for the Kubernetes field names
  (``ack_wait`` in Python, ``ackWait`` in YAML; the same convention as
  ``kube_custom_resource.schema.BaseModel``), serialisation by alias, unknown fields ignored (the
  API server prunes them anyway).
- :class:`CelRule` is a cross-field rule: its CEL expression goes into the CRD as an
  ``x-kubernetes-validations`` entry and its Python mirror runs in a model validator.
- :class:`Text` constrains a string (pattern, length) with a readable error message and puts the
  same ``pattern``/``maxLength`` into the schema. :data:`Duration`, :data:`DnsLabel` and friends
  are built from it.
- :data:`DateTime` is an RFC 3339 timestamp with an explicit offset (``2025-01-31T09:00:00Z``).
- :class:`Condition` is the Kubernetes-style status condition both kinds report.

Pure: imports only pydantic and the standard library (an import-linter contract forbids
kopf/kubernetes/nats/minio in ``kadence_operator.api``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from kadence_operator.api.durations import DURATION_PATTERN, parse_duration_ns

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "DEFAULTED_OBJECT",
    "DNS_LABEL",
    "DNS_LABEL_PATTERN",
    "DURATION_PATTERN",
    "GROUP",
    "RFC3339_PATTERN",
    "VERSION",
    "ApiModel",
    "CelRule",
    "Condition",
    "ConditionStatus",
    "CrdNames",
    "DateTime",
    "DnsLabel",
    "DnsSubdomain",
    "Duration",
    "IntOrString",
    "ObjectMeta",
    "PrinterColumn",
    "SchemaExtra",
    "Text",
    "go_regex",
    "snake_to_camel",
]

#: The API group of every Kadence resource.
GROUP = "kadence.io"
#: The one served (and stored) version.
VERSION = "v1alpha1"
#: ``apiVersion`` of every Kadence resource.
API_VERSION = f"{GROUP}/{VERSION}"
#: ``kubectl get kadence`` lists every Kadence resource.
CATEGORY = "kadence"

#: RFC 3339 date-time with an explicit offset; what ``format: date-time`` means for Kadence.
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


def snake_to_camel(name: str) -> str:
    """``ack_wait`` -> ``ackWait``; a trailing underscore is dropped (``from_`` -> ``from``)."""
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


# --------------------------------------------------------------------------------------------
# Schema annotations
# --------------------------------------------------------------------------------------------


def go_regex(pattern: str) -> re.Pattern[str]:
    """Compile a schema ``pattern`` so that Python's ``search`` agrees with Go's ``MatchString``.

    The API server checks ``pattern`` with Go's RE2: ``$`` only matches at the very end and
    ``\\s``/``\\d``/``\\w`` are ASCII-only. Python's ``$`` also matches before a final newline,
    so a trailing ``$`` becomes ``\\Z``, and the pattern is compiled with ``re.ASCII``.
    """
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern, re.ASCII)


@dataclass(frozen=True)
class SchemaExtra:
    """Annotation that merges extra keys into the generated JSON schema of a type."""

    items: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, **extra: Any) -> SchemaExtra:
        """``SchemaExtra.of(maxItems=10)``; keys are written to the schema as given."""
        return cls(tuple(extra.items()))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        handler.resolve_ref_schema(json_schema).update(dict(self.items))
        return json_schema


@dataclass(frozen=True)
class Text:
    """Constraints on a string, checked in Python and written to the schema.

    ``pattern`` has search semantics in both places (like Kubernetes), so anchor it.
    ``hint`` says in words what is expected; it is part of the Python error message.
    :meth:`check` returns the value or raises ``PydanticCustomError`` (a ``ValueError``).
    """

    max_length: int
    pattern: str | None = None
    min_length: int | None = None
    hint: str = ""
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.pattern is not None:
            object.__setattr__(self, "_regex", go_regex(self.pattern))

    def check(self, value: str) -> str:
        hint = f" ({self.hint})" if self.hint else ""
        if self.min_length is not None and len(value) < self.min_length:
            raise PydanticCustomError(
                "string_too_short",
                "must be at least {min_length} characters long{hint}",
                {"min_length": self.min_length, "hint": hint},
            )
        if len(value) > self.max_length:
            raise PydanticCustomError(
                "string_too_long",
                "must be at most {max_length} characters long{hint}",
                {"max_length": self.max_length, "hint": hint},
            )
        if self._regex is not None and self._regex.search(value) is None:
            raise PydanticCustomError(
                "string_pattern_mismatch",
                "invalid value {value}: must match {pattern}{hint}",
                {"value": repr(value), "pattern": self.pattern, "hint": hint},
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        target = handler.resolve_ref_schema(json_schema)
        target["maxLength"] = self.max_length
        if self.min_length is not None:
            target["minLength"] = self.min_length
        if self.pattern is not None:
            target["pattern"] = self.pattern
        return json_schema


def _int_to_str(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


@dataclass(frozen=True)
class IntOrString:
    """Annotation for a ``str`` field that also accepts integers (``x-kubernetes-int-or-string``).

    Python always sees a string (``2`` becomes ``"2"``); the schema has no ``type``, as
    Kubernetes requires for int-or-string nodes.
    """

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_before_validator_function(_int_to_str, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        target = handler.resolve_ref_schema(json_schema)
        target.pop("type", None)
        target["x-kubernetes-int-or-string"] = True
        return json_schema


def _check_duration(value: str) -> str:
    try:
        parse_duration_ns(value)
    except ValueError as error:
        raise PydanticCustomError("duration", "{error}", {"error": str(error)}) from None
    return value


@dataclass(frozen=True)
class _DurationAnnotation:
    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(_check_duration, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        handler.resolve_ref_schema(json_schema).update(
            {"pattern": DURATION_PATTERN, "maxLength": 64}
        )
        return json_schema


#: A Go-style duration string: ``"30s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``.
Duration = Annotated[str, _DurationAnnotation()]

_RFC3339 = go_regex(RFC3339_PATTERN)


def _check_rfc3339(value: object) -> object:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _RFC3339.search(value):
        return value
    raise PydanticCustomError(
        "date_time",
        "invalid date-time {value}: expected RFC 3339 with an offset, e.g. 2025-01-31T09:00:00Z",
        {"value": repr(value)},
    )


#: An RFC 3339 timestamp with an explicit offset (``Z`` or ``+01:00``); a timezone-aware
#: ``datetime`` in Python, ``format: date-time`` in the schema (a CEL ``timestamp``).
DateTime = Annotated[
    AwareDatetime,
    BeforeValidator(_check_rfc3339),
    SchemaExtra.of(pattern=RFC3339_PATTERN, maxLength=64),
]

#: A DNS-1123 label: the name of an object in the same namespace (a Queue, a Secret, ...).
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: Queue and Job names, and references to them: they end up in NATS subjects and stream names,
#: where a "." would be a token separator.
DNS_LABEL = Text(
    max_length=63,
    pattern=DNS_LABEL_PATTERN,
    hint="a DNS-1123 label: lowercase letters, digits and '-', "
    "starting and ending with a letter or digit, at most 63 characters",
)
DnsLabel = Annotated[str, DNS_LABEL]

#: A DNS-1123 subdomain (service account names and the like).
DnsSubdomain = Annotated[
    str,
    Text(
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        hint="a DNS-1123 subdomain: lowercase letters, digits, '-' and '.'",
    ),
]


# --------------------------------------------------------------------------------------------
# Cross-field rules
# --------------------------------------------------------------------------------------------

CelReason = Literal["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired"]


@dataclass(frozen=True)
class CelRule:
    """A cross-field validation rule, declared once for the CRD and for Python.

    ``rule`` is the CEL expression (``self`` is the object the rule sits on) and goes into the
    object's ``x-kubernetes-validations`` together with ``message``, ``fieldPath`` and ``reason``.
    ``check`` is the same rule in Python (it gets the model instance and returns True when the
    object is valid); ``None`` for rules Python cannot evaluate, such as transition rules that
    compare with ``oldSelf``. ``field_path`` is relative to the object (``".endAt"``).
    """

    rule: str
    message: str
    check: Callable[[Any], bool] | None
    field_path: str | None = None
    reason: CelReason | None = None

    def to_schema(self) -> dict[str, str]:
        """The ``x-kubernetes-validations`` entry."""
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        if self.reason:
            entry["reason"] = self.reason
        return entry


class ApiModel(BaseModel):
    """Base of every Kadence API object (see the module docstring for the conventions).

    Subclasses list their cross-field rules in ``__cel_rules__``.
    """

    model_config = ConfigDict(
        alias_generator=snake_to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        validate_assignment=True,
        extra="ignore",
    )

    __cel_rules__: ClassVar[tuple[CelRule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        if cls.__cel_rules__:
            handler.resolve_ref_schema(json_schema)["x-kubernetes-validations"] = [
                rule.to_schema() for rule in cls.__cel_rules__
            ]
        return json_schema

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Self:
        for rule in type(self).__cel_rules__:
            if rule.check is not None and not rule.check(self):
                raise PydanticCustomError(
                    "cel_rule", rule.message, {"field_path": rule.field_path or ""}
                )
        return self

    def to_k8s(self) -> dict[str, Any]:
        """The object as Kubernetes JSON: camelCase keys, unset (None) fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------------------------------
# Metadata, conditions and CRD-level information
# --------------------------------------------------------------------------------------------


class ObjectMeta(ApiModel):
    """The subset of Kubernetes object metadata Kadence reads (other fields are ignored)."""

    name: str | None = Field(None, description="Name of the object, unique in its namespace.")
    namespace: str | None = Field(None, description="Namespace of the object.")
    uid: str | None = Field(None, description="UID assigned by the API server.")
    generation: int | None = Field(None, description="Generation of the desired state (spec).")
    resource_version: str | None = Field(None, description="Opaque version for concurrency.")
    creation_timestamp: datetime | None = Field(None, description="When the object was created.")
    deletion_timestamp: datetime | None = Field(None, description="When deletion was requested.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels of the object.")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations of the object."
    )


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """One aspect of the object's current state, in the standard Kubernetes condition shape."""

    type: Annotated[str, Text(max_length=316)] = Field(
        description="Type of the condition in CamelCase, e.g. Ready."
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    reason: (
        Annotated[
            str,
            Text(
                max_length=1024,
                pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                hint="a CamelCase machine-readable reason",
            ),
        ]
        | None
    ) = Field(None, description="Machine-readable CamelCase reason for the last transition.")
    message: Annotated[str, Text(max_length=32768)] | None = Field(
        None, description="Human-readable details about the last transition."
    )
    last_transition_time: DateTime | None = Field(None, description="When the status last changed.")
    observed_generation: int | None = Field(
        None, ge=0, description="The .metadata.generation the condition was computed from."
    )


#: ``json_schema_extra`` for an object field whose members all have defaults: the CRD defaults it
#: to ``{}``, so the API server fills in (and ``kubectl get -o yaml`` shows) every member default.
DEFAULTED_OBJECT: dict[str, Any] = {"default": {}}


def conditions_field(description: str) -> Any:
    """A ``conditions`` list field: a list-map keyed by ``type`` (server-side-apply friendly)."""
    return Field(
        default_factory=list,
        description=description,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )


@dataclass(frozen=True)
class PrinterColumn:
    """An ``additionalPrinterColumns`` entry (``kubectl get`` columns)."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str
    priority: int = 0

    def to_crd(self) -> dict[str, Any]:
        column: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.priority:
            column["priority"] = self.priority
        return column


@dataclass(frozen=True)
class CrdNames:
    """Names and presentation of one custom resource kind (turned into a CRD by crdgen)."""

    kind: str
    singular: str
    plural: str
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
    categories: tuple[str, ...] = (CATEGORY,)

    @property
    def crd_name(self) -> str:
        """``<plural>.<group>``, the name of the CustomResourceDefinition object."""
        return f"{self.plural}.{GROUP}"
