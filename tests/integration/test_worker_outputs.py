"""A worker runs tasks end to end: outputs in S3 at the reported URIs, results, concurrency."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from typing import Any

import pytest
from minio import Minio
from pydantic import BaseModel

from kadence import App, Context
from kadence.protocol import JobRef, ObjectRef, RunRequest, RunState, encode
from kadence.storage import S3Storage
from kadence_devstack.nats import NatsServer
from kadence_devstack.s3 import S3Server
from tests.integration.test_worker_support import (
    connected,
    final,
    fresh_queue,
    running_worker,
    stream_messages,
    unique,
    wait_results,
)

pytestmark = pytest.mark.integration


class ReportParams(BaseModel):
    day: str
    regions: list[str]


app = App("outputs")


@app.task("reports.build")
async def build(params: ReportParams, ctx: Context) -> dict[str, Any]:
    lines = ["region,day,revenue"] + [
        f"{r},{params.day},{i * 100}" for i, r in enumerate(params.regions)
    ]
    await ctx.output.aput("report.csv", "\n".join(lines) + "\n")
    await ctx.output.aput("charts/summary.json", json.dumps({"regions": len(params.regions)}))
    return {"rows": len(params.regions), "day": params.day}


@app.task("files.wordcount")
def wordcount(ctx: Context) -> dict[str, int]:
    words = 0
    with ctx.read_input() as stream:
        for chunk in stream:
            words += len(chunk.split())
    return {"words": words}


@app.task("demo.bytes")
def raw(payload: str) -> bytes:
    return payload.encode()


active = 0
peak = 0


@app.task("demo.busy")
async def busy(seconds: float) -> None:
    global active, peak
    active += 1
    peak = max(peak, active)
    try:
        await asyncio.sleep(seconds)
    finally:
        active -= 1


def storage_for(s3: S3Server) -> S3Storage:
    return S3Storage(
        endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False
    )


def minio_for(s3: S3Server) -> Minio:
    return Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False)


async def test_outputs_exist_at_the_reported_uris(
    nats_server: NatsServer, s3_server: S3Server
) -> None:
    bucket = unique("out-")
    job = JobRef(namespace="default", name=unique("nightly-"), uid="uid-1")
    async with connected(nats_server) as client, fresh_queue(client) as queue:
        async with running_worker(
            app, nats_server, queue=queue, storage=storage_for(s3_server), output_bucket=bucket
        ):
            request = RunRequest(
                run_id=unique("run-"),
                task="reports.build",
                payload={"day": "2024-05-01", "regions": ["eu", "us", "apac"]},
                job=job,
            )
            await client.publish(queue.name, encode(request), msg_id=request.run_id)
            results = await wait_results(client, final, job=job.name, run_id=request.run_id)
        assert [r.state for r in results] == [RunState.RUNNING, RunState.SUCCEEDED]
        done = results[-1]
        assert done.attempt == 1
        assert done.started_at is not None
        assert done.finished_at is not None
        # Each attempt writes under a folder of its own in the run's prefix.
        prefix = f"s3://{bucket}/default/{job.name}/{request.run_id}/attempt-1/"
        assert [o.uri for o in done.outputs] == [
            prefix + "report.csv",
            prefix + "charts/summary.json",
            prefix + "result.json",
        ]
        s3 = minio_for(s3_server)
        for output in done.outputs:
            key = output.uri.removeprefix(f"s3://{bucket}/")
            stat = s3.stat_object(bucket, key)
            assert stat.size == output.size > 0
            assert stat.etag == output.etag
        body = s3.get_object(bucket, f"default/{job.name}/{request.run_id}/attempt-1/result.json")
        try:
            assert json.loads(body.read()) == {"rows": 3, "day": "2024-05-01"}
        finally:
            body.close()
            body.release_conn()
        assert await stream_messages(client, queue) == 0  # acked: gone from the work queue


async def test_adhoc_enqueue_reads_input_and_stores_bytes(
    nats_server: NatsServer, s3_server: S3Server
) -> None:
    bucket = unique("out-")
    s3 = minio_for(s3_server)
    s3.make_bucket(bucket)
    text = b"the quick brown fox\njumps over the lazy dog\n" * 1000
    s3.put_object(bucket, "inputs/book.txt", io.BytesIO(text), len(text))
    async with connected(nats_server) as client, fresh_queue(client) as queue:
        async with running_worker(
            app, nats_server, queue=queue, storage=storage_for(s3_server), output_bucket=bucket
        ):
            count = await client.enqueue(
                "files.wordcount",
                queue=queue.name,
                input=ObjectRef(bucket=bucket, key="inputs/book.txt"),
            )
            blob = await client.enqueue("demo.bytes", "binary!", queue=queue.name)
            counted = await client.wait_result(count.run_id, wait=20)
            stored = await client.wait_result(blob.run_id, wait=20)
        assert counted.state is RunState.SUCCEEDED
        assert counted.job is None
        assert counted.outputs[0].uri == (
            f"s3://{bucket}/default/_adhoc/{count.run_id}/attempt-1/result.json"
        )
        assert stored.outputs[0].uri.endswith(f"/_adhoc/{blob.run_id}/attempt-1/result.bin")
        response = s3.get_object(bucket, f"default/_adhoc/{blob.run_id}/attempt-1/result.bin")
        try:
            assert response.read() == b"binary!"
        finally:
            response.close()
            response.release_conn()
        response = s3.get_object(bucket, f"default/_adhoc/{count.run_id}/attempt-1/result.json")
        try:
            assert json.loads(response.read()) == {"words": 9000}
        finally:
            response.close()
            response.release_conn()


async def test_concurrency_limit_and_batched_fetch(nats_server: NatsServer) -> None:
    global peak
    peak = 0
    async with connected(nats_server) as client, fresh_queue(client, partitions=3) as queue:
        runs = [
            await client.enqueue("demo.busy", 0.5, queue=queue.name, key=f"k{i}") for i in range(12)
        ]
        started = time.monotonic()
        pending: list[int] = []

        async def sample_ack_pending() -> None:
            # Messages delivered to the worker and not yet acked, across all partitions.
            while True:
                infos = [
                    await client.js.consumer_info(queue.stream, f"partition-{p}") for p in range(3)
                ]
                pending.append(sum(i.num_ack_pending for i in infos))
                await asyncio.sleep(0.05)

        # settle_limit=0: each run keeps its slot until its report and ack are done, so the
        # messages pending an ack are exactly the slots in use. (By default up to settle_limit
        # finished runs may still be acking without a slot, and the count below would include
        # them.)
        async with running_worker(
            app, nats_server, queue=queue, concurrency=4, settle_limit=0
        ) as worker:
            sampler = asyncio.create_task(sample_ack_pending())
            assert worker.partitions == [0, 1, 2]
            for run in runs:
                result = await client.wait_result(run.run_id, wait=20)
                assert result.state is RunState.SUCCEEDED
            sampler.cancel()
        elapsed = time.monotonic() - started
    assert peak == 4  # never more than `concurrency` at once, and the limit was reached
    # It fetches only as many messages as it has free slots: none waits inside the worker.
    assert max(pending) <= 4, pending
    assert elapsed < 12 * 0.5  # ran in parallel


async def test_running_is_reported_only_for_attempts_past_the_delay(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A short attempt sends only its final report; a long one says Running first.

    Also checks the INFO summary that replaces the line per successful attempt.
    """
    caplog.set_level(logging.INFO, logger="kadence.worker")
    async with connected(nats_server) as client, fresh_queue(client) as queue:
        # A generous delay: the quick run must end well before it even on a loaded machine.
        options = {"running_report_delay": 1.0, "summary_interval": 0.5, "concurrency": 2}
        async with running_worker(app, nats_server, queue=queue, **options):
            quick = await client.enqueue("demo.busy", 0.0, queue=queue.name)
            slow = await client.enqueue("demo.busy", 2.0, queue=queue.name)
            for run in (quick, slow):
                assert (await client.wait_result(run.run_id, wait=20)).state is RunState.SUCCEEDED
            await asyncio.sleep(0.7)  # one summary interval
        results = await client.results(namespace=queue.namespace, idle=0.3)
    by_run = {
        run.run_id: [(r.attempt, r.state) for r in results if r.run_id == run.run_id]
        for run in (quick, slow)
    }
    assert by_run[quick.run_id] == [(1, RunState.SUCCEEDED)]
    assert by_run[slow.run_id] == [(1, RunState.RUNNING), (1, RunState.SUCCEEDED)]
    summaries = [r.getMessage() for r in caplog.records if "finished in the last" in r.getMessage()]
    assert summaries, [r.getMessage() for r in caplog.records]
    # "<n> attempt(s) finished in the last 0.5s (<n> Succeeded); <m> in flight", maybe split
    assert sum(int(line.split()[0]) for line in summaries) == 2, summaries
    assert all("Succeeded)" in line for line in summaries), summaries
    # Successful attempts are not logged one by one at INFO.
    assert not [r for r in caplog.records if r.levelno == logging.INFO and "attempt 1 of" in r.msg]


async def test_a_deleted_partition_consumer_stops_only_its_loop(nats_server: NatsServer) -> None:
    """The pull loop of a consumer that is deleted ends; the other partitions keep serving."""
    from kadence.partitioning import partition_for

    async with (
        connected(nats_server) as client,
        fresh_queue(client, partitions=2) as queue,
        running_worker(app, nats_server, queue=queue, concurrency=2) as worker,
    ):
        assert worker.partitions == [0, 1]
        await client.js.delete_consumer(queue.stream, "partition-1")
        for _ in range(100):  # bounded: the loop notices within one pull (fetch_timeout 1 s)
            if worker.partitions == [0]:
                break
            await asyncio.sleep(0.1)
        assert worker.partitions == [0]
        key = next(f"k{i}" for i in range(100) if partition_for(f"k{i}", 2) == 0)
        run = await client.enqueue("demo.busy", 0.0, queue=queue.name, key=key)
        assert (await client.wait_result(run.run_id, wait=20)).state is RunState.SUCCEEDED


async def test_a_consumer_limiting_pull_batches_is_pulled_within_its_limit(
    nats_server: NatsServer,
) -> None:
    """A partition consumer with MaxRequestBatch below the worker's free slots still serves."""
    async with (
        connected(nats_server) as client,
        fresh_queue(client) as queue,
    ):
        # nats-py's ConsumerConfig has no MaxRequestBatch: update the consumer through the API.
        info = await client.js.consumer_info(queue.stream, "partition-0")
        config = {**info.config.as_dict(), "max_batch": 2}
        api = f"$JS.API.CONSUMER.CREATE.{queue.stream}.partition-0"
        body = {"stream_name": queue.stream, "config": config, "action": "update"}
        reply = json.loads((await client.nc.request(api, json.dumps(body).encode())).data)
        assert reply.get("config", {}).get("max_batch") == 2, reply
        runs = [await client.enqueue("demo.busy", 0.0, queue=queue.name) for _ in range(6)]
        async with running_worker(app, nats_server, queue=queue, concurrency=8):
            for run in runs:
                result = await client.wait_result(run.run_id, wait=20)
                assert result.state is RunState.SUCCEEDED
