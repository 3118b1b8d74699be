"""A stand-in for a fleet of very fast workers: completes every run at once.

Pulls run requests from every partition consumer of a Queue, reports each run ``Succeeded`` to the
results stream (as a worker would, with ``Nats-Msg-Id`` = the result's dedupe id) and acks it. It
runs no task and writes no output: the benchmarks use it so that runs end and Job status stays
the size it has in production (``historyLimits``), instead of every run staying active.

    .venv/bin/python -m bench.sink --url nats://127.0.0.1:4222 --namespace bench --queue q
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from datetime import UTC, datetime

import nats
from nats.aio.msg import Msg

from kadence import constants
from kadence.protocol import RunResult, RunState, decode_run, encode


async def serve(url: str, namespace: str, queue: str, partitions: int, record: bool) -> list[str]:
    nc = await nats.connect(url, name="kadence-bench-sink")
    js = nc.jetstream()
    stream = constants.stream_name(namespace, queue)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    done = 0
    rows: list[str] = []

    async def complete(msg: Msg) -> None:
        nonlocal done
        run = decode_run(msg.data)
        now = datetime.now(UTC)
        if record and run.scheduled_at is not None and run.job is not None:
            stored = msg.metadata.timestamp.timestamp()
            slot = run.scheduled_at.timestamp()
            rows.append(f"{run.run_id},{run.job.name},{slot:.6f},{stored:.6f}")
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
        assert run.job is not None
        await js.publish(
            constants.results_subject(run.job.namespace, run.job.name),
            encode(result),
            headers={constants.MSG_ID_HEADER: result.dedupe_id},
        )
        await msg.ack()
        done += 1

    async def partition(n: int) -> None:
        sub = await js.pull_subscribe_bind(constants.consumer_name(n), stream=stream)
        while not stop.is_set():
            try:
                msgs = await sub.fetch(256, timeout=1)
            except TimeoutError:
                continue
            except Exception:
                await asyncio.sleep(0.5)
                continue
            await asyncio.gather(*(complete(m) for m in msgs))

    tasks = [asyncio.create_task(partition(n)) for n in range(partitions)]
    await stop.wait()
    for task in tasks:
        task.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.gather(*tasks)
    print(f"sink completed {done} runs", flush=True)
    await nc.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--namespace", default="bench")
    parser.add_argument("--queue", default="q")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--record", help="write run_id,job,slot,stored (epoch seconds) here")
    args = parser.parse_args()
    rows = asyncio.run(
        serve(args.url, args.namespace, args.queue, args.partitions, args.record is not None)
    )
    if args.record is not None:
        with open(args.record, "w") as out:
            out.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
