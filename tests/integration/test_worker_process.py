"""Worker processes that crash, freeze or are told to stop: redelivery, heartbeats, shutdown."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from minio import Minio

from kadence import constants
from kadence.protocol import JobRef, RunRequest, RunState, encode
from kadence_devstack.nats import NatsServer
from kadence_devstack.procs import free_port
from kadence_devstack.s3 import S3Server
from kadence_operator.results.fold import fold_result
from tests.integration.test_worker_support import (
    QueueUnderTest,
    WorkerProcess,
    connected,
    final,
    fresh_queue,
    s3_env,
    stream_messages,
    unique,
    wait_results,
    worker_processes,
)

pytestmark = pytest.mark.integration

# The App the worker subprocesses serve. `demo.slow` leaves a trace of every start and every
# completion in files, so the test can count side effects, not just reports.
APP = """
import asyncio
from pathlib import Path

import kadence

app = kadence.App("process-tests")


@app.task("demo.slow")
async def slow(payload: dict, ctx: kadence.Context) -> str:
    folder = Path(payload["dir"])
    with (folder / "started.txt").open("a") as f:
        f.write(f"{ctx.worker} {ctx.attempt}\\n")
    await asyncio.sleep(payload["seconds"])
    with (folder / "done.txt").open("a") as f:
        f.write(f"{ctx.worker} {ctx.attempt}\\n")
    return "done"


@app.task("demo.late_writer")
async def late_writer(seconds: float, ctx: kadence.Context) -> dict:
    await asyncio.sleep(seconds)
    await ctx.output.aput("report.txt", f"written by {ctx.worker}, attempt {ctx.attempt}\\n")
    return {"worker": ctx.worker, "attempt": ctx.attempt}
"""

ACK_WAIT = 2.0


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def slow_run(job: JobRef, *, folder: Path, seconds: float) -> RunRequest:
    return RunRequest(
        run_id=unique("run-"),
        task="demo.slow",
        job=job,
        payload={"dir": str(folder), "seconds": seconds},
        ack_wait_seconds=ACK_WAIT,
    )


def a_job() -> JobRef:
    return JobRef(namespace="default", name=unique("job-"), uid=unique("uid-"))


async def start_worker(
    procs: list[WorkerProcess],
    tmp_path: Path,
    queue: QueueUnderTest,
    nats_server: NatsServer,
    name: str,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> WorkerProcess:
    """A ``kadence worker`` process serving :data:`APP`, stopped with ``procs``; started."""
    worker = WorkerProcess(
        tmp_path,
        app_source=APP,
        queue=queue,
        nats=nats_server,
        name=name,
        args=args or [],
        env=env,
    )
    procs.append(worker)
    await worker.start()
    return worker


async def test_kill_9_mid_task_is_redelivered_and_completes_exactly_once(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    job = a_job()
    async with connected(nats_server) as client, fresh_queue(client, ack_wait=ACK_WAIT) as queue:
        with worker_processes() as procs:
            first = await start_worker(procs, tmp_path, queue, nats_server, "crashy")
            request = slow_run(job, folder=tmp_path, seconds=3)
            await client.publish(queue.name, encode(request), msg_id=request.run_id)
            await wait_results(client, lambda rs: len(rs) >= 1, job=job.name, run_id=request.run_id)
            first.process.kill()  # SIGKILL: no shutdown, no nak, no report
            killed = time.time()

            await start_worker(procs, tmp_path, queue, nats_server, "survivor")
            results = await wait_results(client, final, job=job.name, run_id=request.run_id)
            await asyncio.sleep(ACK_WAIT + 1)  # a duplicate run would show up by now
            results = await wait_results(client, final, job=job.name, run_id=request.run_id)

        assert [(r.attempt, r.state, r.worker) for r in results] == [
            (1, RunState.RUNNING, "crashy"),
            (2, RunState.RUNNING, "survivor"),
            (2, RunState.SUCCEEDED, "survivor"),
        ]
        assert lines(tmp_path / "started.txt") == ["crashy 1", "survivor 2"]
        assert lines(tmp_path / "done.txt") == ["survivor 2"]  # the side effect happened once
        assert results[1].started_at is not None
        assert results[1].started_at.timestamp() - killed < ACK_WAIT + 5
        assert await stream_messages(client, queue) == 0


async def test_heartbeats_keep_a_long_task_and_stop_when_the_worker_freezes(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    job = a_job()
    async with connected(nats_server) as client, fresh_queue(client, ack_wait=ACK_WAIT) as queue:
        with worker_processes() as procs:
            worker = await start_worker(
                procs, tmp_path, queue, nats_server, "steady", ["--grace-period", "1"]
            )

            # 1. A task running 3.25 x ackWait is not redelivered: in-progress acks hold it.
            long = slow_run(job, folder=tmp_path, seconds=3.25 * ACK_WAIT)
            await client.publish(queue.name, encode(long), msg_id=long.run_id)
            results = await wait_results(client, final, job=job.name, run_id=long.run_id)
            assert [(r.attempt, r.state) for r in results] == [
                (1, RunState.RUNNING),
                (1, RunState.SUCCEEDED),
            ]
            consumer = await client.js.consumer_info(queue.stream, constants.consumer_name(0))
            assert consumer.num_redelivered == 0
            assert lines(tmp_path / "started.txt") == ["steady 1"]

            # 2. Once heartbeats stop (the process is frozen), JetStream redelivers within ackWait.
            frozen = slow_run(job, folder=tmp_path, seconds=60)
            await client.publish(queue.name, encode(frozen), msg_id=frozen.run_id)
            await wait_results(client, lambda rs: len(rs) >= 1, job=job.name, run_id=frozen.run_id)
            # The worker (concurrency 1) is busy, so it has no pull request open that the
            # redelivery could go to; ours is the only one.
            sub = await client.js.pull_subscribe_bind(
                consumer=constants.consumer_name(0), stream=queue.stream
            )
            worker.process.signal(signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                (msg,) = await sub.fetch(1, timeout=ACK_WAIT + 3)
                waited = time.monotonic() - stopped
                print(f"redelivered {waited:.2f}s after the worker froze (ack wait {ACK_WAIT}s)")
                assert msg.metadata.num_delivered == 2
                assert waited <= ACK_WAIT + 0.5, waited
                await msg.term()
            finally:
                await sub.unsubscribe()
                worker.process.signal(signal.SIGCONT)


async def test_sigterm_finishes_running_tasks_within_the_grace_period(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    job = a_job()
    port = free_port()
    async with connected(nats_server) as client, fresh_queue(client, ack_wait=ACK_WAIT) as queue:
        with worker_processes() as procs:
            args = ["--concurrency", "2", "--grace-period", "3", "--metrics-port", str(port)]
            worker = await start_worker(procs, tmp_path, queue, nats_server, "graceful", args)
            short = slow_run(job, folder=tmp_path, seconds=1.5)
            endless = slow_run(job, folder=tmp_path, seconds=60)
            for request in (short, endless):
                await client.publish(queue.name, encode(request), msg_id=request.run_id)
            await wait_results(
                client,
                lambda rs: len(rs) >= 2 and all(r.state == "Running" for r in rs),
                job=job.name,
            )
            worker.process.signal(signal.SIGTERM)
            sent = time.monotonic()
            # Stopped fetching: a run published now stays in the Queue.
            late = slow_run(job, folder=tmp_path, seconds=0.1)
            await client.publish(queue.name, encode(late), msg_id=late.run_id)
            short_results = await wait_results(client, final, job=job.name, run_id=short.run_id)
            scraped = await asyncio.to_thread(
                lambda: requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            )
            endless_results = await wait_results(
                client,
                lambda rs: any(r.state == "Retrying" for r in rs),
                job=job.name,
                run_id=endless.run_id,
            )
            assert await worker.exited(within=15)
            assert time.monotonic() - sent < 3 + 5

        assert short_results[-1].state is RunState.SUCCEEDED
        cancelled = endless_results[-1]
        assert cancelled.error is not None
        assert (cancelled.error.type, cancelled.error.retryable) == ("WorkerShutdown", True)
        assert cancelled.state is RunState.RETRYING
        assert not cancelled.is_final
        assert 'kadence_task_outcomes_total{state="Succeeded",task="demo.slow"} 1.0' in scraped
        # The cancelled run was put back and the late one never taken: both wait in the Queue.
        assert await stream_messages(client, queue) == 2
        assert [
            r.run_id for r in await client.results(job=job.name) if r.run_id == late.run_id
        ] == []


@pytest.mark.parametrize(
    ("delay", "expected"), [("0", ["Running", "Succeeded"]), ("5", ["Succeeded"])]
)
async def test_running_report_delay_option(
    nats_server: NatsServer, tmp_path: Path, delay: str, expected: list[str]
) -> None:
    """``--running-report-delay``: 0 reports every attempt's start; a run shorter than 5 s not."""
    job = a_job()
    async with connected(nats_server) as client, fresh_queue(client, ack_wait=ACK_WAIT) as queue:
        with worker_processes() as procs:
            args = ["--running-report-delay", delay, "--metrics-port", "0"]
            await start_worker(procs, tmp_path, queue, nats_server, f"delay-{delay}", args)
            run = slow_run(job, folder=tmp_path, seconds=0.3)
            await client.publish(queue.name, encode(run), msg_id=run.run_id)
            results = await wait_results(client, final, job=job.name, run_id=run.run_id)
    assert [r.state.value for r in results if r.run_id == run.run_id] == expected


async def test_a_resumed_stale_attempt_never_overwrites_the_reported_outputs(
    nats_server: NatsServer, s3_server: S3Server, tmp_path: Path
) -> None:
    """A worker frozen past the ack wait resumes after the redelivered attempt succeeded and
    writes the same output names: the objects the run reports (the attempt the operator's fold
    keeps) are still the ones the successful attempt wrote, and the late attempt's are its own."""
    job = a_job()
    bucket = unique("late-")
    env = {**s3_env(s3_server), "KADENCE_OUTPUT_BUCKET": bucket}
    args = ["--running-report-delay", "0", "--grace-period", "1"]
    request = RunRequest(
        run_id=unique("run-"),
        task="demo.late_writer",
        job=job,
        payload=3.0,
        ack_wait_seconds=ACK_WAIT,
    )
    async with connected(nats_server) as client, fresh_queue(client, ack_wait=ACK_WAIT) as queue:
        with worker_processes() as procs:
            stale = await start_worker(procs, tmp_path, queue, nats_server, "stale", args, env)
            await client.publish(queue.name, encode(request), msg_id=request.run_id)
            await wait_results(client, lambda rs: len(rs) >= 1, job=job.name, run_id=request.run_id)
            # Frozen past the ack wait mid-task (concurrency 1, so it has no pull request open
            # that the redelivery could go to).
            stale.process.signal(signal.SIGSTOP)
            try:
                await start_worker(procs, tmp_path, queue, nats_server, "winner", args, env)
                await wait_results(
                    client,
                    lambda rs: any(r.state is RunState.SUCCEEDED for r in rs),
                    job=job.name,
                    run_id=request.run_id,
                )
            finally:
                stale.process.signal(signal.SIGCONT)
            # The stale attempt's handler wakes up, writes its outputs and reports too.
            results = await wait_results(
                client,
                lambda rs: any(r.worker == "stale" and r.is_final for r in rs),
                job=job.name,
                run_id=request.run_id,
            )

    succeeded = [r for r in results if r.state is RunState.SUCCEEDED]
    assert (succeeded[0].worker, succeeded[0].attempt) == ("winner", 2)
    status: dict[str, Any] = {}
    for result in results:  # as the operator folds them, in stream order
        status = fold_result(
            status, result, limits=(10, 10), generation=1, now=datetime.now(UTC)
        ).status
    (run,) = status["runs"]
    assert run["state"] == "Succeeded"
    reported = {o["uri"]: o for o in run["output"]}
    assert {uri.rsplit("/", 1)[1] for uri in reported} == {"report.txt", "result.json"}

    s3 = Minio(
        s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
    )

    def stored(uri: str) -> tuple[str, bytes]:
        key = uri.removeprefix(f"s3://{bucket}/")
        response = s3.get_object(bucket, key)
        try:
            return response.headers.get("ETag", "").strip('"'), response.read()
        finally:
            response.close()
            response.release_conn()

    for uri, output in reported.items():
        etag, body = stored(uri)
        assert etag == output["etag"], f"{uri} was overwritten after it was reported"
        if uri.endswith("report.txt"):
            assert body == b"written by winner, attempt 2\n"
    # Every attempt's objects are where it said it wrote them, untouched by the other attempt.
    for result in succeeded:
        for output in result.outputs:
            assert stored(output.uri)[0] == output.etag, output.uri
