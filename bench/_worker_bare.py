"""The baseline of the worker benchmark: a bare nats-py fetch + ack loop, in its own process.

Binds to an existing durable pull consumer and, until ``--count`` messages are done, fetches up
to ``--batch`` at a time and acknowledges each: ``--ack plain`` is ``ack`` (fire and forget, what
a bare consumer does), ``sync`` is ``ack_sync`` (the double ack the Kadence worker uses, awaited
concurrently per batch), and ``report`` first publishes a small result with ``js.publish`` to
``--report-subject`` (a JetStream-acknowledged publish with a ``Nats-Msg-Id``) and then
``ack_sync``s: the steps the issue asks of a worker for every run, in plain nats-py, without
decoding the request or running anything.
Prints one JSON line: ``{"count", "start", "end", "seconds", "cpu"}`` (``start``/``end`` are
``time.time()``; the clock starts after connecting and binding, just before the first fetch, and
stops after a flush, once the server has all the acks; ``cpu`` is this process's CPU seconds
over that time).

    .venv/bin/python -m bench._worker_bare --url nats://127.0.0.1:4222 --stream S \
        --consumer partition-0 --count 20000 --batch 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import nats
from nats.aio.msg import Msg


async def drain(
    url: str, stream: str, consumer: str, count: int, batch: int, ack: str, report_subject: str
) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()

        async def report_then_ack(msg: Msg, n: int) -> None:
            result = {"runId": f"bare-{n}", "state": "Succeeded", "worker": "bare"}
            await js.publish(
                report_subject, json.dumps(result).encode(), headers={"Nats-Msg-Id": f"bare-{n}"}
            )
            await msg.ack_sync()

        sub = await js.pull_subscribe_bind(consumer=consumer, stream=stream)
        done = 0
        start = time.time()
        cpu = time.process_time()
        while done < count:
            try:
                msgs: list[Msg] = await sub.fetch(min(batch, count - done), timeout=5.0)
            except TimeoutError:
                raise SystemExit(f"no message for 5 s after {done} of {count}") from None
            if ack == "report":
                await asyncio.gather(*(report_then_ack(m, done + i) for i, m in enumerate(msgs)))
            elif ack == "sync":
                await asyncio.gather(*(m.ack_sync() for m in msgs))
            else:
                for msg in msgs:
                    await msg.ack()
            done += len(msgs)
        await nc.flush()
        end = time.time()
        cpu = time.process_time() - cpu
        print(
            json.dumps(
                {"count": done, "start": start, "end": end, "seconds": end - start, "cpu": cpu}
            )
        )
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--consumer", default="partition-0")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--ack", choices=["plain", "sync", "report"], default="plain")
    parser.add_argument("--report-subject", default="kadence-results.bench.bare")
    args = parser.parse_args()
    asyncio.run(
        drain(
            args.url,
            args.stream,
            args.consumer,
            args.count,
            args.batch,
            args.ack,
            args.report_subject,
        )
    )


if __name__ == "__main__":
    main()
