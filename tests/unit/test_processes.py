"""``isolation="process"``: what registration refuses, and how tasks, exceptions and the store
cross the process boundary (the children themselves run in
tests/integration/test_worker_isolation.py)."""

from __future__ import annotations

import functools
import pickle
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from kadence import App, Fail, Retry
from kadence.app import Isolation
from kadence.outcomes import classify
from kadence.processes import TaskProcessError, TaskRef, _portable, _RaisedElsewhere
from kadence.protocol import RetryPolicy, RunRequest
from kadence.storage import S3Storage
from kadence.testing import StubBroker


def module_level(payload: int) -> int:
    return payload


async def asynchronous() -> None:
    return None


def test_a_sync_module_level_function_may_run_in_a_process() -> None:
    app = App()
    spec = app.register("t", module_level, isolation="process")
    assert spec.isolation is Isolation.PROCESS
    assert app.register("u", module_level).isolation is Isolation.THREAD  # the default


def nested() -> Any:
    def inner() -> None:
        return None

    return inner


@pytest.mark.parametrize(
    ("fn", "error", "match"),
    [
        (asynchronous, TypeError, "for sync functions"),
        (nested(), TypeError, "defined at module level"),
        (lambda: None, TypeError, "defined at module level"),
        (functools.partial(module_level, 1), TypeError, "defined at module level"),
    ],
    ids=["async", "nested", "lambda", "partial"],
)
def test_registration_refuses_what_a_process_cannot_run(
    fn: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        App().register("t", fn, isolation="process")


def test_an_unknown_isolation_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="'thread', 'process'"):
        App().task("t", isolation="fork")(module_level)


def test_a_task_is_found_by_module_and_name_or_from_its_file(tmp_path: Path) -> None:
    spec = App().register("t", module_level, isolation="process")
    assert TaskRef.of(spec).resolve() is module_level
    # An app loaded from a path (kadence worker --app dir/tasks.py:app) is not importable by
    # name in a fresh process: its file is loaded instead.
    source = tmp_path / "w29_path_loaded_tasks.py"
    source.write_text(
        textwrap.dedent("""
        def handler() -> str:
            return "from the file"
    """)
    )
    ref = TaskRef(task="t", module="w29_path_loaded_tasks", qualname="handler", file=str(source))
    try:
        assert ref.resolve()() == "from the file"
    finally:
        sys.modules.pop("w29_path_loaded_tasks", None)
    missing = TaskRef(task="t", module="no_such_module_w29", qualname="f", file=None)
    with pytest.raises(Fail, match=r"cannot import no_such_module_w29\.f") as failed:
        missing.resolve()
    assert failed.value.error_type == "TaskNotImportable"


class TwoArguments(Exception):
    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


def raised(error: Exception) -> Exception:
    try:
        raise error
    except Exception as caught:
        return caught


def test_exceptions_come_back_as_their_own_class() -> None:
    request = RunRequest(
        run_id="r",
        task="t",
        retry=RetryPolicy(max_attempts=3, non_retryable_errors=("TwoArguments",)),
    )
    # Retry pickles: its delay comes back with it, and the child's traceback as a note.
    retry = pickle.loads(pickle.dumps(_portable(raised(Retry("later", delay=7)))))
    assert isinstance(retry, Retry)
    assert retry.delay == 7
    assert "in the task's process" in retry.__notes__[0]
    # One that pickle cannot rebuild is described, and rebuilt as its class without __init__.
    described = _portable(raised(TwoArguments(7, "no")))
    assert isinstance(described, _RaisedElsewhere)
    rebuilt = pickle.loads(pickle.dumps(described)).rebuild()
    assert type(rebuilt) is TwoArguments
    assert str(rebuilt) == "no"
    outcome = classify(rebuilt, request=request, attempt=1)
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.retryable) == ("TwoArguments", False)
    # A class the worker cannot find either: its name and message, retried as any error.
    lost = _RaisedElsewhere(module="gone", qualname="Gone", args=("x",), message="x", trace="")
    assert isinstance(lost.rebuild(), TaskProcessError)
    assert str(lost.rebuild()) == "Gone: x"


def test_the_s3_store_pickles_as_its_settings() -> None:
    store = S3Storage(endpoint="127.0.0.1:9", access_key="a", secret_key="s3cr3t", secure=False)
    copy = pickle.loads(pickle.dumps(store))
    assert isinstance(copy, S3Storage)
    assert copy.endpoint == store.endpoint
    assert copy.client is not store.client
    assert "s3cr3t" not in repr(copy)


def doubled(payload: int) -> int:
    return 2 * payload


def test_the_stub_broker_runs_a_process_task_in_its_thread() -> None:
    app = App()
    app.register("double", doubled, isolation="process")
    broker = StubBroker(app)
    broker.enqueue("double", 21)
    (run,) = broker.run_until_complete()
    assert run.succeeded
    assert run.result_json() == 42
