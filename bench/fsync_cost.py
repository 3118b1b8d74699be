"""What ``sync_interval: always`` (fsync before every acknowledgement) costs a Queue's stream.

The chart's bundled nats-server fsyncs every write before JetStream acknowledges it (issue 29):
with the server's default (a flush every two minutes) an acknowledged run or result can be lost
when the node's OS or power fails. This times the same work on a server started each way, on
this machine's disk, in alternated pairs (``always`` first in odd pairs, the default first in
even ones), each on a fresh server and stream:

* ``burst``: a burst of ``--runs`` run requests written at once, as the scheduler publishes a
  due second (``bench.burst_acks``'s one-by-one burst), timed to the last ``PubAck`` read;
* ``single``: ``--singles`` publishes one after the other, each awaited, as an SDK client's
  ``submit`` or a worker's result report: the time of one round trip.

It prints and saves each way's medians and the ratio always ÷ default of each pair:

    .venv/bin/python -m bench.fsync_cost --pairs 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from bench.burst_acks import PARTITIONS, PAYLOAD, burst
from bench.common import machine, save, say
from kadence import constants
from kadence.requests import Requests
from kadence.streams import ensure_queue_stream
from kadence_devstack.nats import NatsServer

WAYS = ("always", "default")


async def measure(server: NatsServer, args: argparse.Namespace) -> dict[str, float]:
    nc = NATS()
    await nc.connect(server.url)
    try:
        js = nc.jetstream()
        await ensure_queue_stream(js, namespace="bench", queue="q", partitions=PARTITIONS)
        requests = Requests(nc)
        await requests.ready()
        lasts = []
        for n in range(args.warmup + args.rounds):
            row = await burst(requests, nc, args.runs, f"b-{n}")
            if n >= args.warmup:
                lasts.append(row["last_ms"])
            await asyncio.sleep(args.gap)
        singles = []
        subject = constants.subject("bench", "q", 0)
        for n in range(args.singles):
            started = time.perf_counter()
            await js.publish(subject, PAYLOAD, headers={"Nats-Msg-Id": f"s-{n}"})
            singles.append((time.perf_counter() - started) * 1000)
        return {
            "burst_last_ms": statistics.median(lasts),
            "single_ms": statistics.median(singles),
        }
    finally:
        await nc.close()


def one(way: str, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="kadence-bench-fsync-") as workdir:
        server = NatsServer(
            Path(workdir) / "nats", sync_interval="always" if way == "always" else None
        )
        server.start()
        try:
            return asyncio.run(measure(server, args))
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1000, help="runs per burst")
    parser.add_argument("--rounds", type=int, default=10, help="bursts timed per server")
    parser.add_argument("--warmup", type=int, default=2, help="bursts not counted")
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between bursts")
    parser.add_argument("--singles", type=int, default=300, help="awaited single publishes")
    parser.add_argument("--name", default="fsync_cost")
    args = parser.parse_args()
    pairs: list[dict[str, dict[str, float]]] = []
    for n in range(args.pairs):
        pair: dict[str, dict[str, float]] = {}
        for way in WAYS if n % 2 == 0 else tuple(reversed(WAYS)):
            pair[way] = one(way, args)
            say(f"pair {n + 1}/{args.pairs} {way}: {pair[way]}")
        pairs.append(pair)

    def median_of(way: str, key: str) -> float:
        return round(statistics.median(p[way][key] for p in pairs), 2)

    def ratio(key: str) -> dict[str, float]:
        ratios = sorted(p["always"][key] / p["default"][key] for p in pairs)
        return {
            "median": round(statistics.median(ratios), 2),
            "min": round(ratios[0], 2),
            "max": round(ratios[-1], 2),
        }

    keys = ("burst_last_ms", "single_ms")
    result: dict[str, Any] = {
        "benchmark": "fsync_cost",
        "args": vars(args),
        "machine": machine(),
        "medians": {way: {key: median_of(way, key) for key in keys} for way in WAYS},
        "always_over_default": {key: ratio(key) for key in keys},
        "pairs": pairs,
    }
    for key in keys:
        say(
            f"{key}: always {result['medians']['always'][key]} ms, default "
            f"{result['medians']['default'][key]} ms, ratio {result['always_over_default'][key]}"
        )
    save(args.name, result)


if __name__ == "__main__":
    main()
