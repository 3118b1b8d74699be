"""Where the Kadence worker's time goes: the real :class:`~kadence.runtime.Worker`, in-process,
instrumented, on a Queue that already holds ``--count`` run requests.

Wraps (for this process only) the JetStream pull requests, the result publish and the double
ack to count pull sizes and time each step, and runs cProfile on the event-loop thread from the
first message until the last run is acked (start-up and imports excluded). Prints a report:
runs/s and CPU per run (the process, and the event loop's thread alone), the pull-size
histogram, the mean latency of each step, and the top functions by own time and by cumulative
time. ``--no-profile`` only times; ``--skip`` leaves
steps out (the Running report, the final report, the double ack) to see what each one costs:
a what-if, for this process only, that breaks the worker's guarantees.

    .venv/bin/python -m bench._worker_probe --url nats://127.0.0.1:4222 --namespace bench \
        --queue tp1 --count 20000 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import logging
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from nats.aio.msg import Msg

from bench._worker_app import app
from kadence import loops
from kadence.client import KadenceClient
from kadence.config import Settings
from kadence.consumer import Pull
from kadence.metrics import WorkerMetrics
from kadence.protocol import RunResult
from kadence.reporting import ResultReporter
from kadence.runtime import Worker
from kadence.settling import Settler

#: Steps a what-if run can leave out (never in a real worker: it breaks the guarantees).
SKIPPABLE = frozenset({"running", "result", "ack-sync"})


class Probe:
    def __init__(self, count: int, *, profile: bool, skip: frozenset[str]) -> None:
        self.count = count
        self.profile = profile
        self.skip = skip
        self.fetch_sizes: collections.Counter[int] = collections.Counter()
        self.report_sizes: collections.Counter[int] = collections.Counter()
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.acked = 0
        self.first: float | None = None
        self.last = 0.0
        self.cpu_first = self.loop_cpu_first = 0.0
        self.cpu_last = self.loop_cpu_last = 0.0
        self.done = asyncio.Event()
        self.profiler = cProfile.Profile()

    def install(self) -> None:
        pull = Pull.pull
        dispatch = Worker._dispatch
        publish_report = KadenceClient.publish_report
        announce_result = KadenceClient.announce_result
        submit = ResultReporter.submit
        queue_ack = Settler._queue_ack
        acked = Settler._acked
        sent: dict[int, float] = {}
        probe = self

        async def counted_pull(puller: Pull, batch: int, *, expires: float) -> int:
            started = time.perf_counter()
            got = await pull(puller, batch, expires=expires)
            if got:
                probe.latency["pull request (with messages)"].append(time.perf_counter() - started)
                probe.fetch_sizes[got] += 1
            return got

        def first_dispatch(worker: Worker, msg: Msg) -> None:
            if probe.first is None:
                probe.first = time.perf_counter()
                probe.cpu_first = time.process_time()
                probe.loop_cpu_first = time.thread_time()
                if probe.profile:
                    probe.profiler.enable()
            dispatch(worker, msg)

        def timed_queue_ack(settler: Settler, settle: Any) -> None:
            if "ack-sync" in probe.skip:
                settler._spawn(settle.message.ack())
                settler._settled(settle)
                probe.count_ack()
                return
            sent[id(settle)] = time.perf_counter()
            queue_ack(settler, settle)

        def counted_acked(
            settler: Settler, settle: Any, reply: Msg | None, error: BaseException | None
        ) -> None:
            probe.latency["double ack (callback)"].append(
                time.perf_counter() - sent.pop(id(settle))
            )
            acked(settler, settle, reply, error)
            if error is None:
                probe.count_ack()

        def timed_submit(
            reporter: ResultReporter, result: RunResult, done: Callable[[Any], None]
        ) -> None:
            if "result" in probe.skip:
                asyncio.get_running_loop().call_soon(done, None)
                return
            started = time.perf_counter()

            def timed_done(error: BaseException | None) -> None:
                probe.latency[f"report {result.state.value} (callback)"].append(
                    time.perf_counter() - started
                )
                done(error)

            submit(reporter, result, timed_done)

        async def timed_publish(
            client: KadenceClient, subject: str, payload: bytes, **kwargs: Any
        ) -> Any:
            started = time.perf_counter()
            ack = await publish_report(client, subject, payload, **kwargs)
            probe.latency["results message"].append(time.perf_counter() - started)
            probe.report_sizes[payload.count(b'"run_id"')] += 1
            return ack

        async def timed_announce(client: KadenceClient, result: RunResult, **kwargs: Any) -> None:
            if "running" in probe.skip:
                return
            started = time.perf_counter()
            await announce_result(client, result, **kwargs)
            probe.latency[f"announce_result {result.state.value}"].append(
                time.perf_counter() - started
            )

        Pull.pull = counted_pull  # type: ignore[method-assign,assignment]
        Worker._dispatch = first_dispatch  # type: ignore[method-assign,assignment]
        KadenceClient.publish_report = timed_publish  # type: ignore[method-assign,assignment]
        KadenceClient.announce_result = timed_announce  # type: ignore[method-assign,assignment]
        ResultReporter.submit = timed_submit  # type: ignore[method-assign,assignment]
        Settler._queue_ack = timed_queue_ack  # type: ignore[method-assign,assignment]
        Settler._acked = counted_acked  # type: ignore[method-assign,assignment]

    def count_ack(self) -> None:
        """One run acked (and confirmed): the last one ends the measurement."""
        self.acked += 1
        if self.acked == self.count:
            self.profiler.disable()
            self.last = time.perf_counter()
            self.cpu_last = time.process_time()
            self.loop_cpu_last = time.thread_time()
            self.done.set()

    def report(self, stream: IO[str]) -> None:
        assert self.first is not None
        seconds = self.last - self.first
        fetches = sum(self.fetch_sizes.values())
        fetched = sum(size * n for size, n in self.fetch_sizes.items())
        how = "under cProfile" if self.profile else "without profiler"
        skipped = f", skipping {','.join(sorted(self.skip))}" if self.skip else ""
        print(
            f"{self.count} runs in {seconds:.2f}s {how}{skipped}: {self.count / seconds:,.0f} "
            f"runs/s, {(self.cpu_last - self.cpu_first) / self.count * 1e6:.0f} µs of CPU per run "
            f"(this process, all threads; the event loop's thread "
            f"{(self.loop_cpu_last - self.loop_cpu_first) / self.count * 1e6:.0f} µs); "
            f"{fetches} pull requests with messages, "
            f"{fetched / fetches:.2f} messages each",
            file=stream,
        )
        print(
            "messages per pull request (size: requests):",
            dict(sorted(self.fetch_sizes.items())),
            file=stream,
        )
        print(
            "results per results message (size: messages):",
            dict(sorted(self.report_sizes.items())),
            file=stream,
        )
        for name, values in sorted(self.latency.items()):
            ordered = sorted(values)
            print(
                f"  {name:28s} n={len(values):6d} mean {statistics.fmean(values) * 1000:7.3f} ms"
                f"  p50 {ordered[len(ordered) // 2] * 1000:7.3f} ms"
                f"  p99 {ordered[int(len(ordered) * 0.99)] * 1000:7.3f} ms",
                file=stream,
            )
        if not self.profile:
            return
        stats = pstats.Stats(self.profiler, stream=stream)
        stats.strip_dirs().sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(30)


async def run(args: argparse.Namespace) -> None:
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    skip = frozenset(s for s in args.skip.split(",") if s)
    if unknown := skip - SKIPPABLE:
        raise SystemExit(f"cannot skip {sorted(unknown)}; choose from {sorted(SKIPPABLE)}")
    probe = Probe(args.count, profile=not args.no_profile, skip=skip)
    probe.install()
    settings = Settings.from_env(namespace=args.namespace, nats_urls=(args.url,))
    client = await KadenceClient.connect(settings)
    worker = Worker(
        app,
        client,
        queue=args.queue,
        concurrency=args.concurrency,
        metrics=WorkerMetrics(),
        name="bench-probe",
        grace_period=10,
    )
    loops.tune_gc()  # as the CLI does
    serving = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(probe.done.wait(), timeout=120 + args.count / 20)
    finally:
        worker.stop()
        await serving
        await client.close()
    probe.report(sys.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--namespace", default="bench")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--no-profile", action="store_true", help="time only, no cProfile")
    parser.add_argument(
        "--skip",
        default="",
        help="what-if, comma-separated: running (no Running report), result (no final report), "
        "ack-sync (plain ack instead of the double ack)",
    )
    loops.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
