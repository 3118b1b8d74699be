"""Task authoring: the :class:`App` registry, ``@app.task`` and the run :class:`Context`.

A task is a plain function, sync or async, registered under a name the Job spec refers to::

    app = kadence.App()

    @app.task("reports.build")
    async def build(params: ReportParams, ctx: kadence.Context) -> dict[str, int]:
        await ctx.output.aput("report.csv", render(params))
        return {"rows": 42}

The handler receives the run's payload (validated into its annotated type, e.g. a pydantic model)
and, if it asks for one, a :class:`Context`. It finishes by returning (the value is stored as
``result.json``, or ``result.bin`` for bytes), by raising :class:`Retry` to be attempted again, by
raising :class:`Fail` to fail for good, or by raising anything else (retried per the Job's
retryPolicy). This module only describes tasks; :mod:`kadence.runtime` runs them.

A sync task runs in one of the worker's threads, which cannot be interrupted: past its timeout
it runs on until it returns. ``@app.task(isolation="process")`` runs it in a child process
instead, which the worker kills when the attempt ends early (:mod:`kadence.processes`).
"""

from __future__ import annotations

import enum
import inspect
import logging
import threading
import typing
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from kadence.protocol import JobRef, RunRequest
from kadence.storage import Cancelled, InputStream, ObjectStore, OutputWriter, StorageNotConfigured

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "App",
    "CancelFlag",
    "CancelSignal",
    "Cancelled",
    "Context",
    "Fail",
    "InvalidPayload",
    "Isolation",
    "Retry",
    "TaskSpec",
]


class Retry(Exception):
    """Raise to have the run attempted again (counts as an attempt).

    ``delay`` (seconds) overrides the Job's backoff for this retry. When no attempts are left the
    run fails with this error.
    """

    def __init__(self, message: str = "retry requested by the task", *, delay: float | None = None):
        super().__init__(message)
        self.message = message
        self.delay = delay


class Fail(Exception):
    """Raise to fail the run now, without retrying; the message is reported as the error."""

    def __init__(self, message: str = "failed by the task", *, error_type: str | None = None):
        super().__init__(message)
        self.message = message
        self.error_type = error_type


class InvalidPayload(Fail):
    """The payload does not match the handler's annotated type (never retried)."""


class Isolation(enum.StrEnum):
    """Where a sync handler runs (``@app.task(isolation=...)``)."""

    #: In one of the worker's threads (the default). A thread cannot be interrupted: when the
    #: attempt ends first (timeout, lost Lease, Replace, shutdown) the handler runs on until it
    #: returns; ``ctx.cancelled`` turns true and SDK calls raise ``Cancelled``.
    THREAD = "thread"
    #: In a child process of the worker, which gets SIGTERM when the attempt ends first and
    #: SIGKILL after a grace period. Payload and return value must pickle; the function must be
    #: importable (module level). See :mod:`kadence.processes`.
    PROCESS = "process"


class _RunLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every message with the run and attempt, so interleaved runs stay readable."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        return f"[{extra.get('run_id')} #{extra.get('attempt')}] {msg}", kwargs


class CancelFlag:
    """Set once when an attempt is cancelled; read from the task's thread by the SDK's calls.

    ``threading.Event`` without ``wait``, which nothing here needs: an Event builds a
    ``Condition`` and a lock, about 5-8 µs for every attempt of a short task.
    """

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


#: What a :class:`Context` reads cancellation from (a ``threading.Event`` works too).
CancelSignal = CancelFlag | threading.Event


class Context:
    """What a task knows about its run, and its handles to heartbeats, input and output."""

    def __init__(
        self,
        *,
        request: RunRequest,
        attempt: int,
        output: OutputWriter,
        input_store: ObjectStore | None = None,
        heartbeat: Callable[[], None] = lambda: None,
        worker: str = "",
        fencing_token: int | None = None,
        cancel_event: CancelSignal | None = None,
    ) -> None:
        self.request = request
        self.attempt = attempt
        self.output = output
        self.worker = worker
        self.fencing_token = fencing_token
        self._input_store = input_store
        self._heartbeat = heartbeat
        self._cancel: CancelSignal = cancel_event or CancelFlag()
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger (``kadence.task.<task>``) that prefixes each line with the run and attempt."""
        if self._logger is None:  # made on first use: most tasks never log
            self._logger = _RunLogger(
                logging.getLogger(f"kadence.task.{self.request.task}"),
                {"run_id": self.request.run_id, "attempt": self.attempt},
            )
        return self._logger

    @property
    def run_id(self) -> str:
        return self.request.run_id

    @property
    def task(self) -> str:
        return self.request.task

    @property
    def job(self) -> JobRef | None:
        """The Job this run belongs to; None for ad-hoc runs."""
        return self.request.job

    @property
    def scheduled_at(self) -> datetime | None:
        return self.request.scheduled_at

    @property
    def payload(self) -> Any:
        """The raw (unvalidated) payload."""
        return self.request.payload

    @property
    def max_attempts(self) -> int:
        return self.request.retry.max_attempts

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.request.retry.max_attempts

    @property
    def cancelled(self) -> bool:
        """True once the attempt was cancelled (timeout, lost lease, shutdown)."""
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if the attempt was cancelled (for long sync loops)."""
        if self._cancel.is_set():
            raise Cancelled("the attempt was cancelled")

    def heartbeat(self) -> None:
        """Tell JetStream the run is still being worked on (an in-progress ack).

        The worker already does this every third of the ack wait while the task runs, so this is
        only needed to signal progress explicitly. Safe to call from sync tasks' threads.
        """
        self.check_cancelled()
        self._heartbeat()

    @property
    def has_input(self) -> bool:
        return self.request.input is not None

    def read_input(self) -> InputStream:
        """Stream the run's input object (``spec.input`` of the Job)."""
        if self.request.input is None:
            raise ValueError(f"run {self.run_id} has no input object")
        if self._input_store is None:
            raise StorageNotConfigured(
                "no object storage: set KADENCE_S3_ENDPOINT (and credentials) to read inputs"
            )
        return InputStream(self._input_store, self.request.input, cancelled=self._cancel.is_set)


def _is_context(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return annotation == "Context" or annotation.endswith(".Context")
    return inspect.isclass(annotation) and issubclass(annotation, Context)


@dataclass
class TaskSpec:
    """A registered task: its name, function and how to call it."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    #: The parameters in call order: ("payload" | "context", name, keyword-only?).
    params: tuple[tuple[str, str, bool], ...]
    isolation: Isolation = Isolation.THREAD
    _annotation: Any = None
    _adapter: TypeAdapter[Any] | None = field(default=None, repr=False)
    _resolved: bool = field(default=False, repr=False)

    @classmethod
    def from_function(
        cls, name: str, fn: Callable[..., Any], *, isolation: Isolation | str = Isolation.THREAD
    ) -> TaskSpec:
        isolation = _isolation(name, fn, isolation)
        signature = inspect.signature(fn)
        hints = _type_hints(fn)
        params: list[tuple[str, str, bool]] = []
        payload_annotation: Any = None
        for param in signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            annotation = hints.get(param.name, param.annotation)
            keyword = param.kind is param.KEYWORD_ONLY
            if param.name == "ctx" or _is_context(annotation):
                params.append(("context", param.name, keyword))
            elif any(kind == "payload" for kind, _, _ in params):
                if param.default is param.empty:
                    raise TypeError(
                        f"task {name!r}: {fn.__qualname__} takes more than one payload parameter "
                        f"({param.name!r}); a task takes (payload, ctx) at most"
                    )
            else:
                params.append(("payload", param.name, keyword))
                payload_annotation = annotation
        spec = cls(
            name=name,
            fn=fn,
            is_async=inspect.iscoroutinefunction(fn),
            params=tuple(params),
            isolation=isolation,
            _annotation=payload_annotation,
        )
        spec._resolve()
        return spec

    @property
    def wants_context(self) -> bool:
        return any(kind == "context" for kind, _, _ in self.params)

    @property
    def payload_type(self) -> Any:
        return self._annotation

    def _resolve(self) -> None:
        """Build the payload validator, once the annotation can be resolved."""
        if self._resolved:
            return
        annotation = self._annotation
        if isinstance(annotation, str):
            hints = _type_hints(self.fn)
            payload = next((n for k, n, _ in self.params if k == "payload"), None)
            if payload is None or payload not in hints:
                return  # still a forward reference; try again when the task is called
            annotation = self._annotation = hints[payload]
        if annotation not in (None, inspect.Parameter.empty, Any):
            self._adapter = TypeAdapter(annotation)
        self._resolved = True

    def validate_payload(self, payload: Any) -> Any:
        """The payload as the handler wants it; :class:`InvalidPayload` if it does not fit."""
        self._resolve()
        if not self._resolved:
            raise TypeError(
                f"task {self.name!r}: cannot resolve the payload annotation {self._annotation!r}"
            )
        if self._adapter is None:
            return payload
        try:
            return self._adapter.validate_python(payload)
        except ValidationError as error:
            raise InvalidPayload(
                f"payload does not match {self.name}'s parameter type: "
                f"{error.error_count()} error(s): {_first_error(error)}",
                error_type="InvalidPayload",
            ) from None

    def call_arguments(self, payload: Any, ctx: Context) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword arguments for the handler."""
        value = (
            self.validate_payload(payload)
            if any(k == "payload" for k, _, _ in self.params)
            else None
        )
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for kind, name, keyword in self.params:
            argument = ctx if kind == "context" else value
            if keyword:
                kwargs[name] = argument
            else:
                args.append(argument)
        return args, kwargs


def _isolation(name: str, fn: Callable[..., Any], isolation: Isolation | str) -> Isolation:
    """``isolation`` checked against ``fn``: a process runs only what it can import by name."""
    try:
        chosen = Isolation(isolation)
    except ValueError:
        choices = ", ".join(repr(i.value) for i in Isolation)
        raise ValueError(
            f"task {name!r}: isolation must be one of {choices}, got {isolation!r}"
        ) from None
    if chosen is not Isolation.PROCESS:
        return chosen
    if inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"task {name!r}: isolation='process' is for sync functions; an async task is "
            "cancelled on the event loop when its attempt ends"
        )
    qualname = getattr(fn, "__qualname__", None)
    if not inspect.isfunction(fn) or qualname is None or "<" in qualname:
        raise TypeError(
            f"task {name!r}: a task with isolation='process' must be a function defined at "
            f"module level, which its process imports by name; got {qualname or fn!r}"
        )
    return chosen


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "payload"
    return f"{where}: {first['msg']}"


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except (NameError, TypeError, AttributeError):
        # A forward reference that is not defined yet (e.g. a model declared after the task);
        # TaskSpec retries when the task first runs.
        return {}


class App:
    """A registry of tasks, served by ``kadence worker --app module:app``."""

    def __init__(self, name: str = "kadence") -> None:
        self.name = name
        self._tasks: dict[str, TaskSpec] = {}

    def __repr__(self) -> str:
        return f"App({self.name!r}, tasks={sorted(self._tasks)})"

    @property
    def tasks(self) -> Mapping[str, TaskSpec]:
        return dict(self._tasks)

    def get(self, name: str) -> TaskSpec | None:
        return self._tasks.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def task(
        self, name: str | None = None, *, isolation: Isolation | str = Isolation.THREAD
    ) -> Callable[[F], F]:
        """Register the decorated function as task ``name`` (default ``module.function``).

        The function is returned unchanged, so it can still be called directly in tests.
        ``isolation="process"`` runs a sync function in a child process that is killed when its
        attempt ends early (timeout, lost Lease, Replace, shutdown); see :class:`Isolation`.
        """

        def register(fn: F) -> F:
            self.register(name or f"{fn.__module__}.{fn.__qualname__}", fn, isolation=isolation)
            return fn

        return register

    def register(
        self, name: str, fn: Callable[..., Any], *, isolation: Isolation | str = Isolation.THREAD
    ) -> TaskSpec:
        if not name or len(name) > 253:
            raise ValueError(f"task name must be 1 to 253 characters, got {name!r}")
        if name in self._tasks and self._tasks[name].fn is not fn:
            raise ValueError(f"task {name!r} is already registered")
        spec = TaskSpec.from_function(name, fn, isolation=isolation)
        self._tasks[name] = spec
        return spec
