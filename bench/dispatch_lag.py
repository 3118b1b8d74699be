"""Benchmark (a): many Jobs with a short interval on one operator replica.

Creates ``--jobs`` Jobs (default 1,000) with ``interval: 1s`` on one Queue, lets them run for
``--warmup`` seconds, then measures over ``--window`` seconds (default 60). ``bench.sink`` (a
separate process) completes every run at once, as very fast workers would, so that Job status
keeps its production size (``--sink-task-ms N``: each run N ms after the sink got it, as if its
task ran so long); ``--no-sink`` leaves every run active (status then grows by one run per slot,
and so does the cost of each status write).

* due → stored lag of every run whose slot falls in the window, from JetStream's own store
  timestamps (exact, every message; recorded by the sink, or read back from the stream with
  ``--no-sink``), and due → publish-acked lag from the operator's histogram
  (``kadence_operator_dispatch_lag_seconds``, bucketed);
* slots in the window that were never published (should be 0);
* the operator's CPU (cores) and RSS from /proc, the CPU of each server, and the whole
  machine's busy, stolen and idle cores;
* status PATCHes per second, from ``kadence_operator_status_patches_total``;
* with ``--per-second``, the acks of each second of the window (the histogram scraped at the
  middle of every second, when the second's burst is in), so that a few late bursts can be told
  from a tail in every burst: ``bench/results/<name>_seconds.csv`` and a summary in the JSON.

    .venv/bin/python -m bench.dispatch_lag --jobs 1000 --window 60
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import (
    REPO,
    RESULTS,
    CpuMeter,
    bucket_quantile,
    create_jobs,
    create_queue,
    delta_buckets,
    histogram,
    load,
    machine,
    metric,
    now,
    percentiles,
    read_runs,
    rss_mib,
    save,
    say,
    share_within,
    stack,
)
from kadence_devstack.procs import ManagedProcess

LAG = "kadence_operator_dispatch_lag_seconds"


#: How each second's fires went out (``kadence_operator_fires_total`` by path).
PATHS = ("staged", "armed", "full")
Second = tuple[int, list[tuple[float, float]], dict[str, float]]


def fires_by_path(text: str) -> dict[str, float]:
    return {p: metric(text, "kadence_operator_fires_total", path=p) for p in PATHS}


def per_second(name: str, seconds: list[Second]) -> dict[str, Any]:
    """Acks of each second (``<name>_seconds.csv``: second, acks, within 50 / 100 ms, fires by
    path) and how the acks over 50 ms are spread over the seconds."""
    rows = []
    for second, buckets, paths in seconds:
        total = buckets[-1][1] if buckets else 0.0
        within = dict(buckets)
        rows.append((second, total, within.get(0.05, 0.0), within.get(0.1, 0.0), paths))
    path = RESULTS / f"{name}_seconds.csv"
    path.write_text(
        "second,acks,within_50ms,within_100ms,"
        + ",".join(f"fires_{p}" for p in PATHS)
        + "\n"
        + "".join(
            f"{s},{t:g},{a:g},{b:g}," + ",".join(f"{f[p]:g}" for p in PATHS) + "\n"
            for s, t, a, b, f in rows
        )
    )
    late = sorted((t - a for _, t, a, _, _ in rows), reverse=True)
    total_late = sum(late)
    return {
        "file": str(path.relative_to(REPO)),
        "seconds": len(rows),
        "acks_over_50ms": total_late,
        "seconds_with_any_over_50ms": sum(1 for n in late if n > 0),
        "seconds_with_over_100_acks_over_50ms": sum(1 for n in late if n > 100),
        "share_of_late_acks_in_worst_5_seconds": round(sum(late[:5]) / total_late, 3)
        if total_late
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds")
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--status-interval", default="5", help="KADENCE_STATUS_INTERVAL")
    parser.add_argument("--spread", default="none", choices=["none", "hash"])
    parser.add_argument("--name", default="dispatch_lag")
    parser.add_argument("--no-sink", dest="sink", action="store_false")
    parser.add_argument(
        "--sink-mode",
        choices=["lean", "acked"],
        default="lean",
        help="bench.sink --mode: lean (default) or acked (a PubAck and a double ack per run)",
    )
    parser.add_argument(
        "--sink-task-ms",
        type=float,
        default=0.0,
        help="bench.sink --task-ms: each run reported this long after the sink got it (lean)",
    )
    parser.add_argument(
        "--per-second",
        action="store_true",
        help="scrape the lag histogram every second (mid-second) and report the acks per second",
    )
    args = parser.parse_args()

    result: dict[str, Any] = {"benchmark": "dispatch_lag", "args": vars(args)}
    result["machine"] = machine()
    result["load_before"] = load()
    with stack("lag") as st:
        op = st.start_operator("op-1", KADENCE_STATUS_INTERVAL=args.status_interval)
        assert op.pid is not None
        create_queue(st, "q", partitions=4)
        record = st.workdir / "sink.csv"
        sink = ManagedProcess(
            name="sink",
            argv=[
                sys.executable,
                "-m",
                "bench.sink",
                "--url",
                st.nats.url,
                "--record",
                str(record),
                "--mode",
                args.sink_mode,
                "--task-ms",
                str(args.sink_task_ms),
            ],
            log_path=st.workdir / "sink.log",
            cwd=REPO,
        )
        st.helpers.append(sink)
        if args.sink:
            sink.launch()
        names = [f"j{i:05d}" for i in range(args.jobs)]
        spec = {
            "queue": "q",
            "task": "bench.noop",
            "payload": {"n": 1},
            "schedule": {"interval": f"{args.interval:g}s", "spread": args.spread},
        }
        took = create_jobs(st, names, spec)
        result["create_seconds"] = round(took, 1)
        say(f"created {args.jobs} Jobs in {took:.1f}s; warming up {args.warmup:.0f}s")
        time.sleep(args.warmup)

        before = st.scrape("op-1")
        pids = {"operator": op.pid, **st.pids()}
        if sink.pid is not None:
            pids["sink"] = sink.pid
        meter = CpuMeter(pids)
        meter.start()
        load_start = load()
        t_start = now()
        rss: list[float] = []
        seconds: list[Second] = []
        previous, previous_fires = histogram(before, LAG), fires_by_path(before)
        deadline = time.monotonic() + args.window
        while time.monotonic() < deadline:
            rss.append(rss_mib(op.pid))
            if args.per_second:
                # Mid-second: the burst of this second's slot has been acked by then.
                time.sleep((0.5 - time.time() % 1.0) % 1.0 or 1.0)
                text = st.scrape("op-1")
                current, fires = histogram(text, LAG), fires_by_path(text)
                paths = {p: fires[p] - previous_fires[p] for p in PATHS}
                seconds.append((int(time.time()), delta_buckets(current, previous), paths))
                previous, previous_fires = current, fires
            else:
                time.sleep(1)
        t_end = now()
        cpu = meter.stop()
        after = st.scrape("op-1")
        load_end = load()
        window = (t_end - t_start).total_seconds()
        op.stop()  # no more runs; read them at leisure
        if args.sink:
            time.sleep(3)
            sink.stop(grace=30)
            rows = [line.split(",") for line in record.read_text().split() if line]
            runs = [
                (r[0], r[1], datetime.fromtimestamp(float(r[2]), UTC), float(r[3])) for r in rows
            ]
        else:
            say("reading the stream")
            runs = [
                (
                    s.request.run_id,
                    s.request.job.name if s.request.job else "",
                    s.request.scheduled_at,
                    s.stored.timestamp(),
                )
                for s in read_runs(st, "q")
                if s.request.scheduled_at is not None
            ]
        in_window = [r for r in runs if t_start <= r[2] < t_end]
        lags = [r[3] - r[2].timestamp() for r in in_window]
        per_job: dict[str, set[Any]] = {}
        for r in in_window:
            per_job.setdefault(r[1], set()).add(r[2])
        ids = [r[0] for r in runs]
        expected = 0
        for name in names:
            slots = sorted(per_job.get(name, set()))
            if slots:
                # Slots of this Job inside the window: from its first to its last, every interval.
                span = (slots[-1] - slots[0]) / timedelta(seconds=args.interval)
                expected += round(span) + 1
        patches = metric(after, "kadence_operator_status_patches_total", kind="jobs") - metric(
            before, "kadence_operator_status_patches_total", kind="jobs"
        )
        conflicts = metric(after, "kadence_operator_status_conflicts_total", kind="jobs") - metric(
            before, "kadence_operator_status_conflicts_total", kind="jobs"
        )
        buckets = delta_buckets(histogram(after, LAG), histogram(before, LAG))
        result |= {
            "window_seconds": round(window, 1),
            "load_during": {"start": load_start, "end": load_end},
            "runs_in_window": len(in_window),
            "jobs_seen_in_window": len(per_job),
            "slots_missing_in_window": expected - len(in_window),
            "run_ids_unique": len(ids) == len(set(ids)),
            "lag_due_to_stored": percentiles(lags),
            "lag_due_to_acked_histogram": {
                "count": buckets[-1][1] if buckets else 0,
                "p50": bucket_quantile(buckets, 0.5),
                "p90": bucket_quantile(buckets, 0.9),
                "p99": bucket_quantile(buckets, 0.99),
                "share_within_50ms": share_within(buckets, 0.05),
                "share_within_100ms": share_within(buckets, 0.1),
                "max_seen_ms": round(
                    metric(after, "kadence_operator_dispatch_lag_max_seconds") * 1000, 1
                ),
            },
            "status_patches_per_second": round(patches / window, 1),
            "status_patch_budget_per_second": round(args.jobs / float(args.status_interval), 1),
            "status_conflicts": conflicts,
            "cpu_cores": cpu,
            "machine_cores": meter.machine,
            "operator_rss_mib": {"max": round(max(rss), 1), "last": round(rss[-1], 1)},
        }
        if args.per_second:
            result["per_second"] = per_second(args.name, seconds)
    result["load_after"] = load()
    save(args.name, result)
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
