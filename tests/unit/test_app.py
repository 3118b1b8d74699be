"""Task registration, payload validation, settings, and the in-memory StubBroker."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

import kadence
from kadence import App, Context, Fail, Retry
from kadence.app import InvalidPayload, TaskSpec
from kadence.config import Settings
from kadence.protocol import (
    MAX_PAYLOAD_BYTES,
    Backoff,
    DeadLetterReason,
    JobRef,
    OutputLocation,
    RetryPolicy,
    RunRequest,
    RunState,
    encode,
)
from kadence.storage import output_location
from kadence.testing import StubBroker


class Report(BaseModel):
    day: str
    regions: list[str] = Field(min_length=1)
    rows: int = 3


app = App("test")
calls: list[Any] = []


@app.task("reports.build")
async def build(params: Report, ctx: Context) -> dict[str, Any]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["region", "day", "n"])
    for region in params.regions:
        for n in range(params.rows):
            writer.writerow([region, params.day, n])
    written = await ctx.output.aput("report.csv", buffer.getvalue())
    return {"rows": params.rows * len(params.regions), "uri": written.uri}


@app.task("demo.echo")
def echo(payload: Any) -> Any:
    return payload


@app.task("demo.bytes")
def as_bytes(payload: str) -> bytes:
    return payload.encode() * 2


@app.task("demo.flaky")
def flaky(ctx: Context) -> str:
    if ctx.attempt < 3:
        raise Retry("not yet", delay=0.5)
    return "third time lucky"


@app.task("demo.writes_then_retries")
def writes_then_retries(ctx: Context) -> None:
    ctx.output.put("note.txt", f"attempt {ctx.attempt}")
    if ctx.attempt < 2:
        raise Retry("again", delay=0)


@app.task("demo.boom")
def boom(payload: dict[str, str]) -> None:
    raise ValueError(payload.get("why", "boom"))


@app.task("demo.refuse")
async def refuse() -> None:
    raise Fail("bad input, do not retry", error_type="BadInput")


@app.task("demo.sleep")
async def sleep(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slept"


@app.task("files.wordcount")
def wordcount(ctx: Context) -> dict[str, int]:
    with ctx.read_input() as stream:
        text = stream.read().decode()
    ctx.heartbeat()
    return {"words": len(text.split())}


# -- registration ------------------------------------------------------------------------------


def test_tasks_are_registered_by_name_and_stay_callable() -> None:
    assert sorted(app.tasks) == [
        "demo.boom",
        "demo.bytes",
        "demo.echo",
        "demo.flaky",
        "demo.refuse",
        "demo.sleep",
        "demo.writes_then_retries",
        "files.wordcount",
        "reports.build",
    ]
    assert "demo.echo" in app
    assert echo({"a": 1}) == {"a": 1}  # the decorator returns the function unchanged
    spec = app.get("reports.build")
    assert spec is not None
    assert spec.is_async
    assert spec.wants_context
    assert spec.payload_type is Report
    assert not app.tasks["demo.echo"].is_async


def test_default_name_and_duplicates() -> None:
    local = App()

    @local.task()
    def unnamed() -> None: ...

    assert f"{__name__}.test_default_name_and_duplicates.<locals>.unnamed" in local
    local.register("x", unnamed)
    local.register("x", unnamed)  # registering the same function again is harmless
    with pytest.raises(ValueError, match="already registered"):
        local.register("x", echo)
    with pytest.raises(ValueError, match="1 to 253"):
        local.register("", echo)


def _ctx(payload: Any = None) -> Context:
    from kadence.protocol import OutputLocation
    from kadence.storage import OutputWriter

    request = RunRequest(run_id="r1", task="t", payload=payload)
    return Context(
        request=request,
        attempt=1,
        output=OutputWriter(None, OutputLocation(bucket="b", prefix="p")),
    )


def _args(fn: Any, payload: Any = None) -> tuple[list[Any], dict[str, Any]]:
    ctx = _ctx(payload)
    args, kwargs = TaskSpec.from_function("t", fn).call_arguments(payload, ctx)
    return ["ctx" if a is ctx else a for a in args], {
        k: "ctx" if v is ctx else v for k, v in kwargs.items()
    }


def test_signatures() -> None:
    def none() -> None: ...
    def payload_only(p: int) -> None: ...
    def ctx_only(ctx: Any) -> None: ...
    def both(p: int, ctx: Context) -> None: ...
    def reversed_(c: Context, p: int) -> None: ...
    def keyword_ctx(p: int, *, ctx: Context) -> None: ...
    def with_default(p: int, extra: int = 5) -> None: ...

    assert _args(none, 1) == ([], {})
    assert _args(payload_only, "7") == ([7], {})  # validated (and coerced) into the annotation
    assert _args(ctx_only, 1) == (["ctx"], {})
    assert _args(both, 1) == ([1, "ctx"], {})
    assert _args(reversed_, 1) == (["ctx", 1], {})
    assert _args(keyword_ctx, 1) == ([1], {"ctx": "ctx"})
    assert _args(with_default, 1) == ([1], {})


def test_two_payload_parameters_are_refused() -> None:
    def two(a: int, b: int) -> None: ...

    with pytest.raises(TypeError, match="more than one payload parameter"):
        TaskSpec.from_function("t", two)


def test_payload_is_validated_into_the_model() -> None:
    spec = app.tasks["reports.build"]
    report = spec.validate_payload({"day": "2024-05-01", "regions": ["eu"]})
    assert report == Report(day="2024-05-01", regions=["eu"], rows=3)
    with pytest.raises(InvalidPayload, match="regions") as info:
        spec.validate_payload({"day": "2024-05-01", "regions": []})
    assert isinstance(info.value, Fail)  # an invalid payload is never retried


def test_forward_reference_resolved_at_first_call() -> None:
    local = App()

    @local.task("late")
    def late(p: LateModel) -> str:
        return p.name

    spec = local.tasks["late"]
    assert spec.validate_payload({"name": "x"}) == LateModel(name="x")


class LateModel(BaseModel):
    name: str


def test_package_exports() -> None:
    assert kadence.App is App
    assert kadence.Retry is Retry
    assert kadence.Fail is Fail
    assert kadence.Context is Context
    assert kadence.KadenceClient.__name__ == "KadenceClient"
    assert kadence.__doc__
    assert "never on the operator" in kadence.__doc__


# -- settings ----------------------------------------------------------------------------------


def test_settings_from_env_mask_secrets() -> None:
    settings = Settings.from_env(
        {
            "KADENCE_NATS_URL": "nats://a:4222, nats://b:4222",
            "KADENCE_NATS_USER": "worker",
            "KADENCE_NATS_PASSWORD": "hunter2-password",
            "KADENCE_NATS_TOKEN": "tok-secret-123",
            "KADENCE_S3_ENDPOINT": "minio:9000",
            "KADENCE_S3_ACCESS_KEY": "AKIA",
            "KADENCE_S3_SECRET_KEY": "s3-secret-456",
            "KADENCE_S3_SECURE": "false",
            "KADENCE_NAMESPACE": "analytics",
            "KADENCE_WORKER_NAME": "pod-1",
        }
    )
    assert settings.nats_urls == ("nats://a:4222", "nats://b:4222")
    assert settings.s3_secure is False
    assert settings.namespace == "analytics"
    assert settings.output_bucket == "kadence-outputs"
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    for secret in ("hunter2-password", "tok-secret-123", "s3-secret-456"):
        assert secret not in shown
    options = settings.nats_options()
    assert options["password"] == "hunter2-password"
    assert options["token"] == "tok-secret-123"
    assert options["servers"] == ["nats://a:4222", "nats://b:4222"]


def test_settings_defaults_and_errors() -> None:
    settings = Settings.from_env({})
    assert settings.nats_urls == ("nats://127.0.0.1:4222",)
    assert settings.s3_secure is True
    assert not settings.storage_configured
    assert settings.namespace == "default"
    with pytest.raises(ValueError, match="KADENCE_S3_SECURE"):
        Settings.from_env({"KADENCE_S3_SECURE": "maybe"})
    assert Settings.from_env({"KADENCE_NAMESPACE": "a"}, namespace="b").namespace == "b"


# -- StubBroker --------------------------------------------------------------------------------


def test_stub_success_writes_outputs_and_result_json() -> None:
    broker = StubBroker(app, namespace="analytics")
    job = JobRef(namespace="analytics", name="nightly", uid="u1")
    broker.enqueue(
        "reports.build", {"day": "2024-05-01", "regions": ["eu", "us"]}, run_id="r1", job=job
    )
    (run,) = broker.run_until_complete()
    assert run.succeeded
    assert [r.state for r in run.results] == [RunState.RUNNING, RunState.SUCCEEDED]
    assert run.value["rows"] == 6
    assert [o.uri for o in run.outputs] == [
        "s3://kadence-outputs/analytics/nightly/r1/attempt-1/report.csv",
        "s3://kadence-outputs/analytics/nightly/r1/attempt-1/result.json",
    ]
    assert run.output("report.csv").decode().splitlines()[0] == "region,day,n"
    assert run.result_json() == {"rows": 6, "uri": run.outputs[0].uri}
    assert all(o.size > 0 and o.etag for o in run.outputs)


def test_stub_adhoc_outputs_and_bytes_result() -> None:
    broker = StubBroker(app, namespace="ns")
    request = broker.enqueue("demo.bytes", "ab")
    (run,) = broker.run_until_complete()
    assert (
        run.outputs[0].uri
        == f"s3://kadence-outputs/ns/_adhoc/{request.run_id}/attempt-1/result.bin"
    )
    assert run.output("result.bin") == b"abab"


NIGHTLY = JobRef(namespace="analytics", name="nightly", uid="u1")


@pytest.mark.parametrize(
    ("job", "output", "attempt", "token", "expected"),
    [
        (NIGHTLY, None, 1, None, "s3://out/analytics/nightly/r1/attempt-1/"),
        (NIGHTLY, None, 3, 7, "s3://out/analytics/nightly/r1/attempt-3-fence-7/"),
        (None, None, 2, None, "s3://out/ns/_adhoc/r1/attempt-2/"),
        (
            NIGHTLY,
            ("reports", "daily/analytics/nightly/r1/"),
            2,
            0,
            "s3://reports/daily/analytics/nightly/r1/attempt-2-fence-0/",
        ),
        (None, ("reports", "mine"), 1, None, "s3://reports/mine/attempt-1/"),
        (None, ("reports", ""), 1, None, "s3://reports/attempt-1/"),
    ],
    ids=["job", "job-with-lease", "adhoc", "spec-output", "prefix-without-slash", "empty-prefix"],
)
def test_every_attempt_writes_under_a_prefix_of_its_own(
    job: JobRef | None,
    output: tuple[str, str] | None,
    attempt: int,
    token: int | None,
    expected: str,
) -> None:
    request = RunRequest(
        run_id="r1",
        task="t",
        job=job,
        output=OutputLocation(bucket=output[0], prefix=output[1]) if output else None,
    )
    location = output_location(
        request, namespace="ns", bucket="out", attempt=attempt, fencing_token=token
    )
    assert location.uri == expected


def test_stub_attempts_of_one_run_write_apart() -> None:
    broker = StubBroker(app)
    broker.enqueue("demo.writes_then_retries", max_attempts=2)
    (run,) = broker.run_until_complete()
    assert run.succeeded
    prefix = f"default/_adhoc/{run.run_id}"
    assert {key: obj.data for (_, key), obj in broker.storage.objects.items()} == {
        f"{prefix}/attempt-1/note.txt": b"attempt 1",
        f"{prefix}/attempt-2/note.txt": b"attempt 2",
    }
    assert run.output("note.txt") == b"attempt 2"  # what the run reports: its last attempt's


def test_stub_retry_then_success_records_backoff() -> None:
    broker = StubBroker(app)
    broker.enqueue("demo.flaky", max_attempts=5)
    (run,) = broker.run_until_complete()
    assert run.succeeded
    assert run.attempts == 3
    assert run.delays == [0.5, 0.5]  # Retry(delay=...) overrides the backoff
    assert [r.state for r in run.results] == [
        RunState.RUNNING,
        RunState.RETRYING,
        RunState.RUNNING,
        RunState.RETRYING,
        RunState.RUNNING,
        RunState.SUCCEEDED,
    ]
    assert run.result_json() == "third time lucky"


def test_stub_poison_task_is_attempted_max_attempts_times_then_dead_lettered() -> None:
    broker = StubBroker(app)
    policy = RetryPolicy(max_attempts=3, backoff=Backoff(initial_seconds=1, factor=2))
    broker.enqueue("demo.boom", {"why": "disk on fire"}, retry=policy)
    (run,) = broker.run_until_complete()
    assert run.attempts == 3
    assert run.delays == [1.0, 2.0]
    assert run.state is RunState.FAILED
    assert run.error is not None
    assert (run.error.type, run.error.message, run.error.retryable) == (
        "ValueError",
        "disk on fire",
        False,
    )
    assert run.dead_letter is DeadLetterReason.MAX_ATTEMPTS
    assert broker.dead_letters[0][:2] == (DeadLetterReason.MAX_ATTEMPTS, "ValueError: disk on fire")


@pytest.mark.parametrize(
    ("task", "payload", "non_retryable", "error_type"),
    [
        ("demo.refuse", None, (), "BadInput"),
        ("demo.boom", {}, ("ValueError",), "ValueError"),
        ("demo.boom", {}, ("Exception",), "ValueError"),  # a base class name matches too
        ("reports.build", {"day": 1}, (), "InvalidPayload"),
    ],
)
def test_stub_non_retryable_failures_run_once(
    task: str, payload: Any, non_retryable: tuple[str, ...], error_type: str
) -> None:
    broker = StubBroker(app)
    broker.enqueue(task, payload, retry=RetryPolicy(non_retryable_errors=non_retryable))
    (run,) = broker.run_until_complete()
    assert run.attempts == 1
    assert run.state is RunState.FAILED
    assert run.error is not None
    assert run.error.type == error_type
    assert run.dead_letter is DeadLetterReason.NON_RETRYABLE


def test_stub_timeout_retries_then_times_out() -> None:
    broker = StubBroker(app)
    broker.enqueue("demo.sleep", 5, timeout_seconds=0.1, max_attempts=2)
    started = time.monotonic()
    (run,) = broker.run_until_complete()
    assert time.monotonic() - started < 2
    assert [r.state for r in run.results] == [
        RunState.RUNNING,
        RunState.RETRYING,
        RunState.RUNNING,
        RunState.TIMED_OUT,
    ]
    assert run.results[1].error is not None
    assert run.results[1].error.type == "TimedOut"
    assert run.final is run.results[-1]


def test_a_sync_task_past_its_timeout_is_told_and_writes_nothing() -> None:
    local = App("overrun")
    seen: list[tuple[bool, str]] = []

    @local.task("demo.overrun")
    def overrun(seconds: float, ctx: Context) -> None:
        """A sync task that ignores its timeout: it cannot be interrupted, only told."""
        time.sleep(seconds)
        try:
            ctx.output.put("late.txt", b"too late")
            outcome = "written"
        except kadence.Cancelled as error:
            outcome = str(error)
        seen.append((ctx.cancelled, outcome))

    broker = StubBroker(local)
    broker.enqueue("demo.overrun", 0.5, timeout_seconds=0.1, max_attempts=1)
    (run,) = broker.run_until_complete()
    assert run.final is not None
    assert run.final.state is RunState.TIMED_OUT
    assert not run.final.outputs
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)  # the abandoned thread finishes on its own
    assert seen == [(True, "the attempt was cancelled; not writing outputs")]


def test_cancel_flag_is_a_one_way_switch() -> None:
    flag = kadence.app.CancelFlag()
    assert not flag.is_set()
    flag.set()
    flag.set()
    assert flag.is_set()


def test_stub_reads_input_and_counts_heartbeats() -> None:
    broker = StubBroker(app)
    ref = broker.put_input("books/short.txt", "the quick brown fox jumps")
    broker.enqueue("files.wordcount", input=ref)
    (run,) = broker.run_until_complete()
    assert run.result_json() == {"words": 5}
    assert run.heartbeats == 1


def test_stub_bad_messages_are_dead_lettered() -> None:
    broker = StubBroker(app)
    broker.publish(b"{nope")
    broker.enqueue("no.such.task", run_id="lost")
    big = encode(RunRequest(run_id="big", task="demo.echo", payload="x" * MAX_PAYLOAD_BYTES))
    broker.publish(big)
    broker.enqueue("demo.echo", "still serving", run_id="ok")
    runs = {r.run_id: r for r in broker.run_until_complete()}
    reasons = [reason for reason, _, _ in broker.dead_letters]
    assert reasons == [
        DeadLetterReason.DECODE_ERROR,
        DeadLetterReason.UNKNOWN_TASK,
        DeadLetterReason.OVERSIZE,
    ]
    assert runs["lost"].state is RunState.DEAD_LETTERED
    assert runs["big"].state is RunState.DEAD_LETTERED  # salvaged run id: still reported
    assert runs["ok"].result_json() == "still serving"


async def test_stub_join_in_async_tests() -> None:
    broker = StubBroker(app)
    broker.enqueue("demo.echo", {"a": [1, 2]})
    (run,) = await broker.join()
    assert json.loads(run.output("result.json")) == {"a": [1, 2]}


# -- the example App (examples/app.py, served by the demo) -------------------------------------


def _examples() -> App:
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "app.py"
    spec = importlib.util.spec_from_file_location("kadence_examples_app", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the models' annotations through it
    spec.loader.exec_module(module)
    examples: App = module.app
    return examples


def test_example_app_tasks() -> None:
    from datetime import UTC, datetime

    examples = _examples()
    assert {"reports.build", "reports.import", "files.wordcount", "demo.echo", "demo.fail"} <= set(
        examples.tasks
    )
    broker = StubBroker(examples, namespace="demo")
    job = JobRef(namespace="demo", name="heartbeat-report", uid="u")
    slot = datetime(2025, 2, 1, 6, 30, tzinfo=UTC)
    broker.enqueue(
        "reports.build",
        {"report": "heartbeat", "format": "csv"},
        job=job,
        scheduled_at=slot,
        run_id="r-build",
    )
    book = broker.put_input("books/short.txt", "one two  three\nfour five\nsix")
    broker.enqueue("files.wordcount", input=book, run_id="r-words")
    sales = broker.put_input("sales/2025-01-31.csv", "region,units\nemea,3\napac,4.5\n")
    broker.enqueue(
        "reports.import", {"delimiter": ",", "skipHeader": True}, input=sales, run_id="r-import"
    )
    broker.enqueue("demo.fail", {}, max_attempts=2, run_id="r-fail")
    runs = {r.run_id: r for r in broker.run_until_complete()}

    built = runs["r-build"].result_json()
    assert (built["day"], built["rows"]) == ("2025-01-31", 12)  # the previous day of the slot
    csv_text = runs["r-build"].output("report.csv").decode()
    assert csv_text.splitlines()[0] == "day,region,product,units,revenue"
    assert runs["r-words"].result_json() == {"lines": 2, "words": 6, "bytes": 28}
    assert runs["r-import"].result_json()["sums"] == {"units": 7.5}
    assert runs["r-fail"].state is RunState.FAILED
    assert runs["r-fail"].attempts == 2


def test_settings_token_file_is_read_at_every_connect(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first-token\n")
    settings = Settings.from_env(
        {"KADENCE_NATS_TOKEN_FILE": str(token), "KADENCE_NATS_INBOX_PREFIX": "_INBOX.team-a.w"}
    )
    options = settings.nats_options()
    assert options["inbox_prefix"] == "_INBOX.team-a.w"
    read = options["token"]
    assert callable(read)
    assert read() == "first-token"
    token.write_text("rotated-token")  # the kubelet rotates projected tokens in place
    assert read() == "rotated-token"
    assert "token" not in Settings().nats_options()
    assert "inbox_prefix" not in Settings().nats_options()


def test_settings_token_and_token_file_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        Settings.from_env({"KADENCE_NATS_TOKEN": "t", "KADENCE_NATS_TOKEN_FILE": "/t"})
    with pytest.raises(ValueError, match="not a subject prefix"):
        Settings(nats_inbox_prefix="_INBOX.>")
