"""Sync tasks with ``isolation="process"``: run in a child process that is killed when the attempt
ends early (its timeout, a shutdown), on the real NATS and S3 servers."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from minio import Minio
from pydantic import BaseModel

from kadence import App, Context, KadenceClient
from kadence.protocol import JobRef, ObjectRef, RetryPolicy, RunRequest, RunState, encode
from kadence.storage import S3Storage
from kadence_devstack.nats import NatsServer
from kadence_devstack.s3 import S3Server
from tests.integration.test_worker_support import (
    QueueUnderTest,
    connected,
    final,
    fresh_queue,
    running_worker,
    unique,
    wait_results,
)

pytestmark = pytest.mark.integration

#: What the tests give a child between SIGTERM and SIGKILL.
GRACE = 1.0
#: Slack for a loaded machine: spawn, scheduling, the result's way back.
SLACK = 3.0

app = App("isolation")


class Sleep(BaseModel):
    dir: str
    seconds: float
    ignore_sigterm: bool = False


@app.task("iso.sleep", isolation="process")
def sleep(params: Sleep, ctx: Context) -> str:
    folder = Path(params.dir)
    if params.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    (folder / f"pid-{ctx.attempt}").write_text(str(os.getpid()))
    time.sleep(params.seconds)
    (folder / f"woke-{ctx.attempt}").write_text("the handler ran on after its attempt ended")
    return "slept"


class Report(BaseModel):
    day: str
    regions: list[str]


@app.task("iso.report", isolation="process")
def report(params: Report, ctx: Context) -> dict[str, Any]:
    with ctx.read_input() as stream:
        header = stream.read().decode().splitlines()[0]
    ctx.heartbeat()
    ctx.logger.info("building the report of %s", params.day)
    rows = [f"{region},{params.day}" for region in params.regions]
    ctx.output.put("report.csv", header + "\n" + "\n".join(rows) + "\n")
    return {"rows": len(rows), "pid": os.getpid(), "cancelled": ctx.cancelled}


@app.task("iso.local_model", isolation="process")
def local_model() -> Any:
    class Local(BaseModel):  # serialisable as JSON, but not importable: it cannot be pickled
        x: int = 1

    return Local()


class Refused(Exception):
    """An exception whose constructor pickle cannot call again (two arguments, one passed on)."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


@app.task("iso.refuse", isolation="process")
def refuse() -> None:
    raise Refused(7, "no, thank you")


def storage_for(s3: S3Server) -> S3Storage:
    return S3Storage(
        endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False
    )


def a_job() -> JobRef:
    return JobRef(namespace="default", name=unique("iso-"), uid=unique("uid-"))


def gone(pid: int) -> bool:
    """True once ``pid`` is no process at all (exited and reaped by its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def wait_gone(pid: int, within: float) -> float | None:
    """Seconds until ``pid`` is gone, or None if it is still there after ``within``."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if gone(pid):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    return None


def read_pid(folder: Path, attempt: int) -> int:
    return int((folder / f"pid-{attempt}").read_text())


async def warm_up(client: KadenceClient, queue: QueueUnderTest, folder: Path) -> int:
    """Run a short call first, so the worker's child has started Python and imported this module
    (seconds on a busy machine) before a test times the next call; returns the child's pid."""
    await asyncio.to_thread(folder.mkdir)
    owner = a_job()
    request = RunRequest(
        run_id=unique("warm-"),
        task="iso.sleep",
        payload={"dir": str(folder), "seconds": 0},
        job=owner,
    )
    await client.publish(queue.name, encode(request), msg_id=request.run_id)
    results = await wait_results(client, final, job=owner.name, run_id=request.run_id, within=60)
    assert results[-1].state is RunState.SUCCEEDED, results[-1].error
    return read_pid(folder, 1)


@pytest.mark.parametrize("ignore_sigterm", [False, True], ids=["stops-on-sigterm", "needs-sigkill"])
async def test_a_process_task_past_its_timeout_is_killed_and_reported_timed_out(
    nats_server: NatsServer, tmp_path: Path, ignore_sigterm: bool
) -> None:
    owner = a_job()
    timeout = 1.0
    request = RunRequest(
        run_id=unique("run-"),
        task="iso.sleep",
        payload={"dir": str(tmp_path), "seconds": 30, "ignore_sigterm": ignore_sigterm},
        job=owner,
        timeout_seconds=timeout,
        retry=RetryPolicy(max_attempts=1),
    )
    async with (
        connected(nats_server) as client,
        fresh_queue(client) as queue,
        running_worker(app, nats_server, queue=queue, kill_grace=GRACE),
    ):
        warm = await warm_up(client, queue, tmp_path / "warm")
        await client.publish(queue.name, encode(request), msg_id=request.run_id)
        results = await wait_results(client, final, job=owner.name, run_id=request.run_id)
        reported = time.monotonic()
        pid = read_pid(tmp_path, 1)
        assert pid != os.getpid()  # the handler ran in a child process
        assert pid == warm  # the child that ran the short call, waiting for the next one
        # The child is stopped (SIGTERM, then SIGKILL after the grace) and reaped.
        waited = await wait_gone(pid, within=GRACE + SLACK)
    assert waited is not None, f"the task's process {pid} still runs after the timeout"
    print(f"child {pid} gone {waited:.2f}s after the TimedOut report")
    assert [r.state for r in results] == [RunState.RUNNING, RunState.TIMED_OUT]
    done = results[-1]
    assert done.error is not None
    assert done.error.type == "TimedOut"
    assert done.started_at is not None
    assert done.finished_at is not None
    assert (done.finished_at - done.started_at).total_seconds() < timeout + SLACK
    assert time.monotonic() - reported < GRACE + SLACK
    assert not (tmp_path / "woke-1").exists()  # it never ran on past its timeout


async def test_a_worker_shutdown_kills_the_running_process_task(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    owner = a_job()
    request = RunRequest(
        run_id=unique("run-"),
        task="iso.sleep",
        payload={"dir": str(tmp_path), "seconds": 30},
        job=owner,
    )
    async with connected(nats_server) as client, fresh_queue(client) as queue:
        async with running_worker(
            app, nats_server, queue=queue, kill_grace=GRACE, grace_period=0.5
        ):
            await warm_up(client, queue, tmp_path / "warm")
            await client.publish(queue.name, encode(request), msg_id=request.run_id)
            await wait_results(
                client, lambda rs: len(rs) >= 1, job=owner.name, run_id=request.run_id
            )
            for _ in range(200):  # bounded: the child writes its pid as it starts the handler
                if (tmp_path / "pid-1").exists():
                    break
                await asyncio.sleep(0.05)
            pid = read_pid(tmp_path, 1)
            stopping = time.monotonic()
        # The worker has stopped: its grace period passed, the child was stopped with it.
        assert time.monotonic() - stopping < 0.5 + GRACE + SLACK + 10
        assert await wait_gone(pid, within=GRACE + SLACK) is not None
        results = await wait_results(
            client,
            lambda rs: any(r.state is RunState.RETRYING for r in rs),
            job=owner.name,
            run_id=request.run_id,
        )
    stopped = [r for r in results if r.state is RunState.RETRYING]
    assert stopped[0].error is not None
    assert stopped[0].error.type == "WorkerShutdown"
    assert not (tmp_path / "woke-1").exists()


async def test_a_process_task_succeeds_with_its_outputs_and_its_child_is_reused(
    nats_server: NatsServer, s3_server: S3Server
) -> None:
    bucket = unique("iso-")
    s3 = Minio(
        s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
    )
    s3.make_bucket(bucket)
    data = b"region,day\n"
    s3.put_object(bucket, "in/header.csv", io.BytesIO(data), len(data))
    owner = a_job()
    requests = [
        RunRequest(
            run_id=unique("run-"),
            task="iso.report",
            payload={"day": day, "regions": ["emea", "apac"]},
            job=owner,
            input=ObjectRef(bucket=bucket, key="in/header.csv"),
            timeout_seconds=60,
        )
        for day in ("2025-01-30", "2025-01-31")
    ]
    async with (
        connected(nats_server) as client,
        fresh_queue(client) as queue,
        running_worker(
            app,
            nats_server,
            queue=queue,
            storage=storage_for(s3_server),
            output_bucket=bucket,
            kill_grace=GRACE,
        ),
    ):
        done = []
        for request in requests:  # one after the other: the second finds the child idle
            await client.publish(queue.name, encode(request), msg_id=request.run_id)
            results = await wait_results(
                client, final, job=owner.name, run_id=request.run_id, within=60
            )
            done.append(results[-1])
    pids = set()
    for request, result in zip(requests, done, strict=True):
        assert result.state is RunState.SUCCEEDED, result.error
        prefix = f"s3://{bucket}/default/{owner.name}/{request.run_id}/attempt-1/"
        assert [o.uri for o in result.outputs] == [prefix + "report.csv", prefix + "result.json"]
        for output in result.outputs:
            stat = s3.stat_object(bucket, output.uri.removeprefix(f"s3://{bucket}/"))
            assert (stat.size, stat.etag) == (output.size, output.etag)
        response = s3.get_object(bucket, result.outputs[1].uri.removeprefix(f"s3://{bucket}/"))
        try:
            value = json.loads(response.read())
        finally:
            response.close()
            response.release_conn()
        assert value["rows"] == 2
        assert value["cancelled"] is False
        assert value["pid"] != os.getpid()
        pids.add(value["pid"])
        response = s3.get_object(bucket, result.outputs[0].uri.removeprefix(f"s3://{bucket}/"))
        try:
            assert response.read().decode().splitlines() == [
                "region,day",
                f"emea,{request.payload['day']}",
                f"apac,{request.payload['day']}",
            ]
        finally:
            response.close()
            response.release_conn()
    assert len(pids) == 1  # the second run went to the same, idle child
    # The worker stopped its idle child when it shut down.
    assert await wait_gone(pids.pop(), within=GRACE + SLACK) is not None


async def test_what_cannot_cross_the_process_boundary_fails_clearly(
    nats_server: NatsServer,
) -> None:
    owner = a_job()
    unpicklable = RunRequest(
        run_id=unique("run-"), task="iso.local_model", job=owner, retry=RetryPolicy(max_attempts=3)
    )
    refused = RunRequest(
        run_id=unique("run-"),
        task="iso.refuse",
        job=owner,
        retry=RetryPolicy(max_attempts=3, non_retryable_errors=("Refused",)),
    )
    async with (
        connected(nats_server) as client,
        fresh_queue(client) as queue,
        running_worker(app, nats_server, queue=queue, kill_grace=GRACE),
    ):
        for request in (unpicklable, refused):
            await client.publish(queue.name, encode(request), msg_id=request.run_id)
        first = await wait_results(
            client, final, job=owner.name, run_id=unpicklable.run_id, within=60
        )
        second = await wait_results(client, final, job=owner.name, run_id=refused.run_id, within=60)
    # The return value cannot be sent back: a clear error, and never retried.
    assert [r.state for r in first] == [RunState.RUNNING, RunState.FAILED]
    error = first[-1].error
    assert error is not None
    assert error.type == "ResultNotPicklable"
    assert "iso.local_model" in error.message
    assert "pickle" in error.message
    # An exception that does not pickle comes back with its class name and message, so
    # retryPolicy.nonRetryableErrors still matches it.
    assert [r.state for r in second] == [RunState.RUNNING, RunState.FAILED]
    error = second[-1].error
    assert error is not None
    assert (error.type, error.message, error.retryable) == ("Refused", "no, thank you", False)
