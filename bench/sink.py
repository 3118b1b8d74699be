"""A stand-in for a fleet of very fast workers: completes every run at once.

Pulls run requests from every partition consumer of a Queue, reports each run ``Succeeded`` to the
results stream (as a worker would, with ``Nats-Msg-Id`` = the result's dedupe id) and acks it. It
runs no task and writes no output: the benchmarks use it so that runs end and Job status stays
the size it has in production (``historyLimits``), instead of every run staying active.

It plays a whole fleet of workers on the benchmark's own machine, so by default it spends as
little CPU per run as it can (``--mode lean``): the worker's own pull requests
(:class:`kadence.consumer.Pull`), one task that sends each result and then a plain ack, with no
round trip awaited per run (the results stream stores a result published without a reply just
the same; it does not confirm it). ``--mode acked`` (the only mode before 30 Nov 2026) waits for
JetStream's ``PubAck`` of each result before it acks, with nats-py's own ``fetch`` and
``js.publish``, a coroutine per run, on asyncio's own loop.

    .venv/bin/python -m bench.sink --url nats://127.0.0.1:4222 --namespace bench --queue q
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from datetime import UTC, datetime

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from kadence import constants, loops
from kadence.consumer import Pull
from kadence.protocol import RunResult, RunState, decode_run, encode

MODES = ("lean", "acked")


class Sink:
    def __init__(self, nc: NATS, *, record: bool, task_seconds: float = 0.0) -> None:
        self.nc = nc
        self.record = record
        self.task_seconds = task_seconds
        self.rows: list[str] = []
        self.done = 0

    def result(self, msg: Msg) -> tuple[str, bytes, str]:
        """``(subject, data, dedupe id)`` of the ``Succeeded`` result for the run in ``msg``."""
        run = decode_run(msg.data)
        assert run.job is not None
        if self.record and run.scheduled_at is not None:
            stored = msg.metadata.timestamp.timestamp()
            slot = run.scheduled_at.timestamp()
            self.rows.append(f"{run.run_id},{run.job.name},{slot:.6f},{stored:.6f}")
        now = datetime.now(UTC)
        result = RunResult(
            run_id=run.run_id,
            attempt=1,
            job=run.job,
            state=RunState.SUCCEEDED,
            scheduled_at=run.scheduled_at,
            started_at=now,
            finished_at=now,
            worker="bench-sink",
        )
        subject = constants.results_subject(run.job.namespace, run.job.name)
        return subject, encode(result), result.dedupe_id

    async def lean(self, stream: str, partition: int, stop: asyncio.Event) -> None:
        """Pull with the worker's :class:`Pull`; one task publishes results and acks, in order."""
        ready: asyncio.Queue[tuple[float, Msg]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def arrived(msg: Msg) -> None:
            ready.put_nowait((loop.time() + self.task_seconds, msg))

        puller = Pull(
            self.nc,
            stream=stream,
            consumer=constants.consumer_name(partition),
            deliver=arrived,
            extra=arrived,
        )
        await puller.start()

        async def complete() -> None:
            while True:
                done_at, msg = await ready.get()
                if (wait := done_at - loop.time()) > 0:
                    await asyncio.sleep(wait)  # the "task" runs (runs arrive in order)
                subject, data, dedupe_id = self.result(msg)
                await self.nc.publish(subject, data, headers={constants.MSG_ID_HEADER: dedupe_id})
                await self.nc.publish(msg.reply, b"+ACK")
                self.done += 1

        completing = asyncio.create_task(complete())
        try:
            while not stop.is_set():
                try:
                    await puller.pull(256, expires=1.0)
                except (nats.errors.Error, ValueError):
                    await asyncio.sleep(0.5)
        finally:
            completing.cancel()
            await puller.stop()

    async def acked(self, stream: str, partition: int, stop: asyncio.Event) -> None:
        """Wait for each result's ``PubAck``, then ack (nats-py's ``fetch`` and ``js.publish``)."""
        js = self.nc.jetstream()

        async def complete(msg: Msg) -> None:
            subject, data, dedupe_id = self.result(msg)
            await js.publish(subject, data, headers={constants.MSG_ID_HEADER: dedupe_id})
            await msg.ack()
            self.done += 1

        sub = await js.pull_subscribe_bind(constants.consumer_name(partition), stream=stream)
        while not stop.is_set():
            try:
                msgs = await sub.fetch(256, timeout=1)
            except TimeoutError:
                continue
            except Exception:
                await asyncio.sleep(0.5)
                continue
            await asyncio.gather(*(complete(m) for m in msgs))


async def serve(
    url: str,
    namespace: str,
    queue: str,
    partitions: int,
    record: bool,
    mode: str,
    task_seconds: float = 0.0,
) -> list[str]:
    nc = await nats.connect(url, name="kadence-bench-sink")
    sink = Sink(nc, record=record, task_seconds=task_seconds)
    stream = constants.stream_name(namespace, queue)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serve_partition = sink.lean if mode == "lean" else sink.acked
    tasks = [asyncio.create_task(serve_partition(stream, n, stop)) for n in range(partitions)]
    await stop.wait()
    for task in tasks:
        task.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.gather(*tasks)
    print(f"sink completed {sink.done} runs ({mode})", flush=True)
    await nc.close()
    return sink.rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--namespace", default="bench")
    parser.add_argument("--queue", default="q")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--mode", choices=MODES, default="lean")
    parser.add_argument("--record", help="write run_id,job,slot,stored (epoch seconds) here")
    parser.add_argument(
        "--task-ms",
        type=float,
        default=0.0,
        help="lean mode: report each run this long after it arrived, as if its task ran so long",
    )
    args = parser.parse_args()
    if args.task_ms < 0 or (args.task_ms and args.mode != "lean"):
        parser.error("--task-ms must be >= 0 and needs --mode lean")
    rows = loops.run(
        serve(
            args.url,
            args.namespace,
            args.queue,
            args.partitions,
            args.record is not None,
            args.mode,
            args.task_ms / 1000,
        )
    )
    if args.record is not None:
        with open(args.record, "w") as out:
            out.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
