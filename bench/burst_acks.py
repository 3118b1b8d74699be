"""One burst of runs into one Queue's stream, one ``PubAck`` per run.

The scheduler publishes a staged burst in one write, each run a publish of its own answered by
its own ``PubAck``. This takes the operator, the API server and
the sink away and times just that, on one nats-server started here: for ``--rounds`` rounds,
``--runs`` requests with their ``Nats-Msg-Id`` are prepared, then written at once, and the
benchmark waits for every reply. It prints the time from the first write to the
last reply read (``replied_at``), to the median one, the messages the connection read and the
process CPU time the burst took (writing and reading), each over the rounds, under
``one_by_one`` as in earlier results (which timed a second way beside it, since removed: issue
26):

    .venv/bin/python -m bench.burst_acks --runs 1000 --rounds 40

With ``--paced SECONDS`` it is the floor of the operator's benchmark (``bench.dispatch_lag``)
instead: a burst at every whole second, prepared before it and written at it, for SECONDS seconds,
and the lag from the second to each reply read -- what any publisher into this stream gets on
this machine, with no Kubernetes, no status and no sink running:

    .venv/bin/python -m bench.burst_acks --paced 60 --warmup 1 --name floor_1

The payload is a run request of the size the scheduler sends (~500 bytes); the stream is a
Queue's (work-queue retention, 32 partitions), made by ``ensure_queue_stream``, on file storage
(a Queue's default) or with ``--storage memory`` in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from bench.common import machine, percentiles, save, say
from kadence import constants
from kadence.requests import Prepared, Requests, replied_at
from kadence.streams import ensure_queue_stream
from kadence_devstack.nats import NatsServer

PARTITIONS = 32
PAYLOAD = json.dumps({"v": 1, "runId": "x" * 64, "pad": "p" * 400}).encode()


#: The one way a burst is published (the key of its figures, as in earlier results).
WAY = "one_by_one"


def prepare(requests: Requests, runs: int, tag: str) -> list[Prepared]:
    """A burst of ``runs`` requests across the stream's partitions."""
    prepared: list[Prepared] = []
    for i in range(runs):
        subject = constants.subject("bench", "q", i % PARTITIONS)
        headers = {"Nats-Msg-Id": f"{tag}-{i}"}
        prepared.append(requests.prepare(subject, PAYLOAD, headers=headers, timeout=10))
    return prepared


async def write(requests: Requests, prepared: list[Prepared]) -> None:
    """Write a prepared burst in one piece, as the scheduler does; then wait for
    every reply."""
    await requests.write(prepared)
    await asyncio.gather(*(p.reply for p in prepared))


async def burst(requests: Requests, nc: NATS, runs: int, tag: str) -> dict[str, float]:
    prepared = prepare(requests, runs, tag)
    read_before = nc.stats["in_msgs"]
    cpu = time.process_time()
    started = time.monotonic()
    await write(requests, prepared)
    cpu = time.process_time() - cpu
    read = sorted(t - started for p in prepared if (t := replied_at(p.reply)) is not None)
    assert len(read) == runs, "a reply without its read time"
    return {
        "last_ms": read[-1] * 1000,
        "median_ms": read[len(read) // 2] * 1000,
        "cpu_ms": cpu * 1000,
        "messages_read": nc.stats["in_msgs"] - read_before,
    }


async def paced_burst(requests: Requests, runs: int, tag: str) -> tuple[float, list[float]]:
    """Prepare a burst, write it at the next whole second (wall clock, as the scheduler's slots
    are) and wait for its replies: that second and each reply's lag after it."""
    prepared = prepare(requests, runs, tag)
    slot = float(int(time.time()) + 1)
    await asyncio.sleep(slot - time.time())
    await write(requests, prepared)
    # replied_at is on the monotonic clock: the slot on it, as far as the two clocks agree now.
    mono_slot = time.monotonic() - (time.time() - slot)
    lags = [t - mono_slot for p in prepared if (t := replied_at(p.reply)) is not None]
    assert len(lags) == runs, "a reply without its read time"
    return slot, lags


async def paced(args: argparse.Namespace, requests: Requests) -> dict[str, Any]:
    lags: list[float] = []
    late = 0
    for block in range(args.warmup + args.paced // 10):
        for n in range(10):
            _, got = await paced_burst(requests, args.runs, f"{WAY}-{block}-{n}")
            if block >= args.warmup:
                lags.extend(got)
                late += max(got) > 0.050
        say(f"{(block + 1) * 10} of {(args.warmup + args.paced // 10) * 10} seconds")
    return {
        WAY: {
            "reply_lag": percentiles(lags),
            "share_within_50ms": round(sum(lag <= 0.050 for lag in lags) / len(lags), 4),
            "seconds": len(lags) // args.runs,
            "seconds_with_replies_over_50ms": late,
        }
    }


async def run(args: argparse.Namespace, server: NatsServer) -> dict[str, Any]:
    nc = NATS()  # the operator's client: nats-py's own (results before issue 26: DirectNATS)
    await nc.connect(server.url)
    try:
        js = nc.jetstream()
        info = await ensure_queue_stream(
            js,
            namespace="bench",
            queue="q",
            partitions=PARTITIONS,
            storage=args.storage,
        )
        requests = Requests(nc)
        await requests.ready()
        if args.paced:
            figures = await paced(args, requests)
            stored = (await js.stream_info(info.config.name or "")).state.messages
            expected = (args.warmup + args.paced // 10) * 10 * args.runs
            assert stored == expected, f"{stored} messages stored, {expected} expected"
            return figures | {"stored": stored}
        rows: list[dict[str, float]] = []
        for n in range(args.warmup + args.rounds):
            row = await burst(requests, nc, args.runs, f"{WAY}-{n}")
            if n >= args.warmup:
                rows.append(row)
            await asyncio.sleep(args.gap)
            if n % 10 == 9:
                say(f"{n + 1} of {args.warmup + args.rounds} rounds")
        stored = (await js.stream_info(info.config.name or "")).state.messages
        expected = (args.warmup + args.rounds) * args.runs
        assert stored == expected, f"{stored} messages stored, {expected} expected"
        return {
            WAY: {
                "last_reply": percentiles([r["last_ms"] / 1000 for r in rows]),
                "median_reply": percentiles([r["median_ms"] / 1000 for r in rows]),
                "cpu_ms_median": round(statistics.median(r["cpu_ms"] for r in rows), 2),
                "messages_read_median": statistics.median(r["messages_read"] for r in rows),
            },
            "stored": stored,
        }
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs per burst")
    parser.add_argument("--rounds", type=int, default=40, help="bursts timed")
    parser.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="rounds not counted (with --paced: blocks of ten seconds)",
    )
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between bursts")
    parser.add_argument(
        "--storage", choices=("file", "memory"), default="file", help="the stream's storage"
    )
    parser.add_argument(
        "--paced",
        type=int,
        default=0,
        metavar="SECONDS",
        help="a burst every second for SECONDS seconds (a multiple of 10), "
        "timed from the second: the floor of bench.dispatch_lag",
    )
    parser.add_argument("--name", default="burst_acks")
    args = parser.parse_args()
    if args.paced % 10:
        parser.error(f"--paced takes a multiple of 10 seconds, not {args.paced}")
    with tempfile.TemporaryDirectory(prefix="kadence-bench-acks-") as workdir:
        server = NatsServer(Path(workdir) / "nats")
        server.start()
        try:
            say(f"nats-server on {server.url}")
            figures = asyncio.run(run(args, server))
        finally:
            server.stop()
    result = {"benchmark": "burst_acks", "args": vars(args), "machine": machine(), **figures}
    save(args.name, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
