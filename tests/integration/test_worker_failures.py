"""Failures: retries, poison tasks, bad messages, timeouts and an S3 outage — on real servers."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from minio import Minio

from kadence import App, Context, Fail
from kadence.constants import (
    DLQ_DELIVERIES_HEADER,
    DLQ_ERROR_HEADER,
    DLQ_REASON_HEADER,
    DLQ_STREAM_SEQ_HEADER,
    DLQ_SUBJECT_HEADER,
    subject,
)
from kadence.protocol import (
    MAX_PAYLOAD_BYTES,
    Backoff,
    JobRef,
    RetryPolicy,
    RunRequest,
    RunState,
    encode,
)
from kadence.storage import S3Storage
from kadence_devstack.nats import NatsServer
from kadence_devstack.s3 import S3Server
from tests.integration.test_worker_support import (
    connected,
    dead_letters,
    final,
    fresh_queue,
    running_worker,
    states,
    stream_messages,
    unique,
    wait_results,
)

pytestmark = pytest.mark.integration

app = App("failures")
poison_calls: list[int] = []


@app.task("demo.poison")
def poison(ctx: Context) -> None:
    poison_calls.append(ctx.attempt)
    raise ValueError(f"poisoned on attempt {ctx.attempt}")


@app.task("demo.refuse")
async def refuse() -> None:
    raise Fail("the payload names a customer that does not exist", error_type="NoSuchCustomer")


@app.task("demo.echo")
def echo(payload: object) -> object:
    return payload


@app.task("demo.sleep")
async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


@app.task("reports.write")
async def write(ctx: Context) -> str:
    await ctx.output.aput("report.txt", "quarterly numbers\n")
    return "written"


def job() -> JobRef:
    return JobRef(namespace="default", name=unique("job-"), uid=unique("uid-"))


FAST = Backoff(initial_seconds=0.2, factor=1.0, max_seconds=0.2)


async def test_poison_task_attempted_exactly_max_attempts_then_dead_lettered(
    nats_server: NatsServer,
) -> None:
    poison_calls.clear()
    owner = job()
    async with connected(nats_server) as client, fresh_queue(client, max_deliver=20) as queue:
        request = RunRequest(
            run_id=unique("run-"),
            task="demo.poison",
            job=owner,
            retry=RetryPolicy(max_attempts=3, backoff=FAST),
        )
        data = encode(request)
        async with running_worker(app, nats_server, queue=queue):
            await client.publish(queue.name, data, msg_id=request.run_id)
            results = await wait_results(client, final, job=owner.name, run_id=request.run_id)
            await asyncio.sleep(1.0)  # time for a wrong extra attempt to show up
        assert poison_calls == [1, 2, 3]
        assert states(results) == [
            (1, RunState.RUNNING),
            (1, RunState.RETRYING),
            (2, RunState.RUNNING),
            (2, RunState.RETRYING),
            (3, RunState.RUNNING),
            (3, RunState.FAILED),
        ]
        last = results[-1].error
        assert last is not None
        assert (last.type, last.message, last.retryable) == (
            "ValueError",
            "poisoned on attempt 3",
            False,
        )
        (letter,) = await dead_letters(client, queue)
        assert letter.data == data
        headers = letter.headers or {}
        assert headers[DLQ_REASON_HEADER] == "MaxAttempts"
        assert headers[DLQ_DELIVERIES_HEADER] == "3"
        assert headers[DLQ_ERROR_HEADER] == "ValueError: poisoned on attempt 3"
        assert headers[DLQ_SUBJECT_HEADER] == subject(queue.namespace, queue.name, 0)
        assert headers[DLQ_STREAM_SEQ_HEADER] == "1"
        assert await stream_messages(client, queue) == 0


async def test_non_retryable_failure_runs_once(nats_server: NatsServer) -> None:
    owner = job()
    async with connected(nats_server) as client, fresh_queue(client) as queue:
        request = RunRequest(run_id=unique("run-"), task="demo.refuse", job=owner)
        async with running_worker(app, nats_server, queue=queue):
            await client.publish(queue.name, encode(request), msg_id=request.run_id)
            results = await wait_results(client, final, job=owner.name, run_id=request.run_id)
        assert states(results) == [(1, RunState.RUNNING), (1, RunState.FAILED)]
        assert results[-1].error is not None
        assert results[-1].error.type == "NoSuchCustomer"
        (letter,) = await dead_letters(client, queue)
        assert (letter.headers or {})[DLQ_REASON_HEADER] == "NonRetryable"


async def test_bad_messages_are_dead_lettered_and_the_worker_keeps_serving(
    nats_server: NatsServer,
) -> None:
    owner = job()
    async with connected(nats_server) as client, fresh_queue(client) as queue:
        unknown = RunRequest(run_id=unique("run-"), task="no.such.task", job=owner)
        oversize = RunRequest(
            run_id=unique("run-"), task="demo.echo", job=owner, payload="x" * MAX_PAYLOAD_BYTES
        )
        good = RunRequest(run_id=unique("run-"), task="demo.echo", job=owner, payload="ok")
        bad: list[tuple[bytes, str]] = [
            (b'{"run_id": "r1", "task": ', "DecodeError"),
            (
                json.dumps({"version": 9, "run_id": "r2", "task": "demo.echo"}).encode(),
                "DecodeError",
            ),
            (encode(unknown), "UnknownTask"),
            (encode(oversize), "Oversize"),
            (b'{"run_id": "big", "pad": "' + b"y" * 300_000 + b'"}', "Oversize"),
        ]
        async with running_worker(app, nats_server, queue=queue) as worker:
            for data, _ in bad:
                await client.publish(queue.name, data, partition=0)
            await client.publish(queue.name, encode(good), msg_id=good.run_id)
            results = await wait_results(
                client, lambda rs: len([r for r in rs if r.is_final]) == 3, job=owner.name
            )
            assert worker.ready.is_set()
            assert worker.metrics.registry.get_sample_value("kadence_tasks_in_flight") == 0
        by_run = {r.run_id: r for r in results if r.is_final}
        assert by_run[good.run_id].state is RunState.SUCCEEDED
        assert by_run[unknown.run_id].state is RunState.DEAD_LETTERED
        assert by_run[oversize.run_id].state is RunState.DEAD_LETTERED  # run id salvaged
        letters = await dead_letters(client, queue)
        assert [(m.headers or {})[DLQ_REASON_HEADER] for m in letters] == [r for _, r in bad]
        errors = [(m.headers or {})[DLQ_ERROR_HEADER] for m in letters]
        assert "not valid JSON" in errors[0]
        assert "'version'" in errors[1]
        assert "no task named 'no.such.task'" in errors[2]
        assert "payload is" in errors[3]
        assert "over the 262144-byte limit" in errors[4]
        assert await stream_messages(client, queue) == 0


async def test_timeout_cancels_the_handler_and_retries(nats_server: NatsServer) -> None:
    owner = job()
    async with connected(nats_server) as client, fresh_queue(client) as queue:
        request = RunRequest(
            run_id=unique("run-"),
            task="demo.sleep",
            payload=30,
            job=owner,
            timeout_seconds=0.5,
            retry=RetryPolicy(max_attempts=2, backoff=FAST),
        )
        started = time.monotonic()
        async with running_worker(app, nats_server, queue=queue):
            await client.publish(queue.name, encode(request), msg_id=request.run_id)
            results = await wait_results(client, final, job=owner.name, run_id=request.run_id)
        assert time.monotonic() - started < 10
        assert states(results) == [
            (1, RunState.RUNNING),
            (1, RunState.RETRYING),
            (2, RunState.RUNNING),
            (2, RunState.TIMED_OUT),
        ]
        assert results[1].error is not None
        assert results[1].error.type == "TimedOut"
        (letter,) = await dead_letters(client, queue)
        assert (letter.headers or {})[DLQ_REASON_HEADER] == "MaxAttempts"


async def test_s3_outage_retries_and_never_reports_success_without_the_object(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    s3 = S3Server(tmp_path / "s3")
    s3.start()
    try:
        storage = S3Storage(
            endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False
        )
        bucket = unique("out-")
        owner = job()
        async with connected(nats_server) as client, fresh_queue(client) as queue:
            request = RunRequest(
                run_id=unique("run-"),
                task="reports.write",
                job=owner,
                retry=RetryPolicy(
                    max_attempts=30, backoff=Backoff(initial_seconds=0.5, factor=1.5, max_seconds=2)
                ),
            )
            async with running_worker(
                app, nats_server, queue=queue, storage=storage, output_bucket=bucket
            ):
                s3.stop()
                await client.publish(queue.name, encode(request), msg_id=request.run_id)
                await wait_results(
                    client,
                    lambda rs: any(r.state is RunState.RETRYING for r in rs),
                    job=owner.name,
                    run_id=request.run_id,
                )
                await asyncio.sleep(2.0)
                back = time.monotonic()
                await asyncio.to_thread(s3.restart)
                restarted = time.monotonic()
                results = await wait_results(
                    client, final, job=owner.name, run_id=request.run_id, within=25
                )
        retries = [r for r in results if r.state is RunState.RETRYING]
        assert retries
        assert all(r.error is not None and r.error.type == "StorageError" for r in retries)
        (success,) = [r for r in results if r.state is RunState.SUCCEEDED]
        assert results[-1] is success
        assert success.attempt == len(retries) + 1
        assert success.finished_at is not None
        assert restarted - back < 60
        # The success was reported only with its objects in place: they exist as reported.
        s3_client = Minio(
            s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False
        )
        assert [o.uri.rsplit("/", 1)[1] for o in success.outputs] == ["report.txt", "result.json"]
        for output in success.outputs:
            stat = s3_client.stat_object(bucket, output.uri.removeprefix(f"s3://{bucket}/"))
            assert (stat.size, stat.etag) == (output.size, output.etag)
    finally:
        s3.stop()
